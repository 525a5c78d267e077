"""Write a synthetic dataset to disk.

python -m model.synthetic --out data/synth --n 100 --seed 0 --tasks ocr,poster,webpage,scene --level 0
python -m model.synthetic --out data/eval --n 200 --seed 1 --tasks ocr --level 0,1 --split test
python -m model.synthetic --examples assets/examples  # the app's example images: levels 0-2, held-out words
"""

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from .dataset import example_samples, write_dataset
from .tasks import TASKS
from .vocab import SPLITS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m model.synthetic", description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output folder (gets images/ and data.json)")
    target.add_argument("--examples", metavar="DIR", help="write DIR/TASK/TASK-{1,2,3}.png (levels 0, 1, 2) instead")
    parser.add_argument("--n", type=int, default=100, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated task keys from {','.join(TASKS)}")
    parser.add_argument("--weights", default=None, help="comma-separated relative task frequencies")
    parser.add_argument("--level", default="0", help="curriculum level, or comma-separated levels to mix")
    parser.add_argument("--split", default="all", choices=SPLITS, help="word-list split (test = held-out words)")
    parser.add_argument("--spread", type=float, default=1.0, help="room text is placed in: 0 one place, 1 anywhere")
    return parser.parse_args(argv)


def write_examples(folder: str | Path, spread: float = 1.0) -> list[Path]:
    """One image per task at each of levels 0, 1 and 2, with held-out words: the app's example images (with text
    placed within the room the default model was trained on, see `--placement-spread`)."""
    paths = []
    for name, sample in example_samples(spread):
        paths.append(Path(folder) / name)
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(paths[-1])
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Generate the dataset and print where it went."""
    args = parse_args(argv)
    if args.examples:
        print(f"wrote {len(write_examples(args.examples, args.spread))} example images to {args.examples}")
        return
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    levels = [int(v) for v in args.level.split(",")]
    start = time.perf_counter()
    path = write_dataset(
        args.out,
        tasks,
        args.n,
        args.seed,
        levels[0] if len(levels) == 1 else levels,
        weights=weights,
        split=args.split,
        spread=args.spread,
    )
    print(f"wrote {args.n} samples to {path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

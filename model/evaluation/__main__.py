"""Evaluate a checkpoint on held-out synthetic samples and print a table.

    python -m model.evaluation --checkpoint assets/eve-tiny --task ocr --n 200
    python -m model.evaluation --checkpoint runs/x --task all --n 200 --level 0,1,2 --out eval.json
    python -m model.evaluation --checkpoint runs/x --task ocr --level 0,1,2 --ocr-fonts wide-test   # held-out families

Writes the scores, with a few example answers, as JSON when --out is given.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ..loading import load_pretrained
from ..synthetic import TASKS
from .runner import EVAL_SEED, evaluate_task, format_table


def parse_level(text: str):
    levels = [int(x) for x in text.split(",")]
    return levels[0] if len(levels) == 1 else levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)}, or 'all'")
    parser.add_argument("--n", type=int, default=200, help="samples per task")
    parser.add_argument("--level", type=parse_level, default=0, help="curriculum level, or a comma list to mix")
    parser.add_argument("--spread", type=float, default=1.0, help="room text is placed in: 0 one place, 1 anywhere")
    parser.add_argument(
        "--layout",
        choices=("train", "test"),
        help="posters, webpages and scenes in the generator's training or held-out layouts (default: the level's own)",
    )
    parser.add_argument("--texture", action="store_true", help="draw a faint texture under the text and shapes")
    parser.add_argument(
        "--ocr-jitter", type=int, default=0, help="move OCR grid text off the patch grid by up to this many pixels"
    )
    parser.add_argument(
        "--ocr-fonts",
        choices=("train", "test", "wide-train", "wide-test"),
        help="draw OCR text visitor style in this font split (wide: the free families of `make fonts`)",
    )
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    tasks = list(TASKS) if args.task == "all" else [args.task]
    model, processor = load_pretrained(args.checkpoint)
    started = time.perf_counter()
    results = [
        evaluate_task(
            model,
            processor,
            task,
            args.n,
            args.level,
            args.seed,
            args.batch_size,
            args.max_new_tokens,
            spread=args.spread,
            ocr_jitter=args.ocr_jitter,
            ocr_fonts=args.ocr_fonts,
            texture=args.texture,
            layout=args.layout,
        )
        for task in tasks
    ]
    print(format_table(results))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

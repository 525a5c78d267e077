"""How well a model reads OCR text by its pixel offset from the patch grid (issue 31's diagnostic).

    python -m recipes.default_model.ocr_by_offset --model assets/eve-tiny
    python -m recipes.default_model.ocr_by_offset --work runs/eve-offgrid --checkpoint runs/eve-offgrid/stages/stage-3-offgrid/checkpoint-900

Held-out words at levels 0-2, moved up to `--jitter` pixels each way from the grid, bucketed by the larger of |dx| and
|dy| (measured against the same sample drawn on the grid). A run that ramps its training jitter should read the offsets
it has been trained on about as well as the grid; the buckets beyond show what is left to learn.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from model.evaluation.runner import EVAL_SEED, evaluate_samples
from model.loading import load_pretrained
from model.synthetic import generate_sample

from .track import load_checkpoint

BUCKETS = ((0, "0"), (2, "1-2"), (4, "3-4"), (6, "5-6"), (8, "7-8"), (16, "9-16"))


def ink_origin(image) -> tuple[int, int]:
    """Top-left corner of the pixels that differ from the image's top-left pixel (its background)."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    ink = np.abs(pixels - pixels[0, 0]).sum(axis=2) > 60
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    return int(cols[0]), int(rows[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a loadable model folder")
    parser.add_argument("--work", type=Path, help="a default-model run folder (with --checkpoint)")
    parser.add_argument("--checkpoint", type=Path, help="a training checkpoint of that run")
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--jitter", type=int, default=8)
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.work and args.checkpoint):
        parser.error("give --model, or --work and --checkpoint")
    torch.set_num_threads(1)
    model, processor = load_pretrained(args.model) if args.model else load_checkpoint(args.work, args.checkpoint)
    buckets: dict[str, list] = {}
    for i in range(args.n):
        seed, level = f"{EVAL_SEED + 31}:off:{i}", i % 3
        grid = generate_sample("ocr", random.Random(seed), level, split="test")
        moved = generate_sample("ocr", random.Random(seed), level, split="test", ocr_jitter=args.jitter)
        (x0, y0), (x1, y1) = ink_origin(grid.image), ink_origin(moved.image)
        offset = max(abs(x1 - x0), abs(y1 - y0))
        buckets.setdefault(next(name for bound, name in BUCKETS if offset <= bound), []).append(moved)
    result = {}
    for _, name in BUCKETS:
        if name in buckets:
            metrics, _ = evaluate_samples(model.eval(), processor, "ocr", buckets[name])
            result[name] = {
                "n": len(buckets[name]),
                "exact": round(metrics["exact"], 3),
                "cer": round(metrics["cer"], 3),
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

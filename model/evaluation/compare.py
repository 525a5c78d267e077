"""Did fine-tuning help? The base and the tuned model answer the same held-out rows; both are scored.

    python -m model.evaluation.compare --base assets/eve-tiny --tuned runs/job-3/out --data data.json \\
        --eval-split 0.1 --seed 42 --out runs/job-3

Held-out rows are the job's evaluation split (the same seeded split training used), or, when it has none, a seeded
sample of its training rows (then the scores say how well the job learnt its data, not how it generalises; the
results say which). Each row's first question is asked as the chat asks it (the chat template, images resized by the
inference rule), greedily, and the answer is scored against the row's first answer: exact match, character error
rate and token F1 on normalised text. Writes `results.json` (means for base and tuned) and `predictions.jsonl` (one
line per row: question, image, expected, base and tuned answers with their scores) into `--out`.
"""

import argparse
import gc
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..loading import load_pretrained
from ..shared import IMAGE_PLACEHOLDER, IMAGE_TOKEN, leave_out_bitsandbytes
from ..train.data import SkipSample, load_records, split_records, to_messages
from .metrics import mean_scores, score_answer
from .runner import answer_messages

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
DEFAULT_ROWS = 16
EVAL_SAMPLES = 64  # model.train's --eval-samples default: the most rows its evaluation split holds


@dataclass
class HeldOutRow:
    id: str
    question: list[dict]  # processor messages: the row's first user turn
    images: list[Path]
    expected: str


def held_out_rows(
    data: Sequence[str | Path],
    image_folder: str | Path | None,
    eval_split: float,
    seed: int,
    n: int = DEFAULT_ROWS,
    eval_samples: int = EVAL_SAMPLES,
) -> tuple[list[HeldOutRow], str]:
    """(rows, "eval split" or "training rows"): the job's held-out split, else a seeded sample of its training rows;
    at most `n` either way. Rows without a first question and answer are left out."""
    records = load_records(list(data), image_folder)
    train, held_out = split_records(records, eval_split, eval_samples, seed)
    source = "eval split" if held_out else "training rows"
    pool = held_out or random.Random(seed).sample(train, len(train))
    rows: list[HeldOutRow] = []
    for index, record in enumerate(pool):
        if len(rows) == n:
            break
        sample = record.load()
        images = record.image_paths(sample)
        conversations = sample.get("conversations") or []
        try:
            messages = to_messages(conversations[:2], len(images))
        except SkipSample:
            continue
        if len(messages) < 2:
            continue
        rows.append(HeldOutRow(str(sample.get("id", index)), messages[:1], images, messages[1]["content"]))
    return rows, source


def answer_rows(
    checkpoint: str, rows: list[HeldOutRow], batch_size: int, max_new_tokens: int, device: str = "cpu"
) -> list[str]:
    """One model's greedy answers to the rows (the model is loaded for this and freed after)."""
    model, processor = load_pretrained(checkpoint, device=device)
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        images = [[Image.open(path).convert("RGB") for path in row.images] for row in batch]
        answers += answer_messages(model, processor, [row.question for row in batch], images, max_new_tokens)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the second model gets the memory the first one held
    return answers


def compare(
    base: str,
    tuned: str,
    rows: list[HeldOutRow],
    source: str,
    out: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    device: str = "cpu",
) -> dict:
    """Answers the rows with both models, writes results.json and predictions.jsonl into `out`; returns the results."""
    started = time.perf_counter()
    answers = {
        name: answer_rows(path, rows, batch_size, max_new_tokens, device)
        for name, path in (("base", base), ("tuned", tuned))
    }
    scores = {name: [score_answer(a, row.expected) for a, row in zip(found, rows)] for name, found in answers.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            {
                "id": row.id,
                "question": row.question[0]["content"].replace(IMAGE_TOKEN, IMAGE_PLACEHOLDER),  # as in the data
                "images": [str(path) for path in row.images],
                "expected": row.expected,
                "base": answers["base"][i],
                "tuned": answers["tuned"][i],
                "base_scores": scores["base"][i],
                "tuned_scores": scores["tuned"][i],
            }
        )
    predictions = out / PREDICTIONS_FILE
    predictions.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    results = {
        "base_model": str(base),
        "tuned_model": str(tuned),
        "held_out": source,
        "rows": len(rows),
        "metrics": {name: mean_scores(found) for name, found in scores.items()},
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the checkpoint the job started from")
    parser.add_argument("--tuned", required=True, help="the job's output (a checkpoint, or an adapter folder)")
    parser.add_argument("--data", required=True, action="append", help="the job's LLaVA JSON file(s)")
    parser.add_argument("--image-folder", help="folder image paths are relative to (default: the JSON's folder)")
    parser.add_argument("--eval-split", type=float, default=0.0, help="the job's --eval-split")
    parser.add_argument("--seed", type=int, default=42, help="the job's --seed (it decides the split)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="most rows to answer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", required=True, help="folder for results.json and predictions.jsonl")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when there is a GPU)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows, source = held_out_rows(args.data, args.image_folder, args.eval_split, args.seed, args.rows)
    if not rows:
        parser.error("the data has no row with a question and an answer to compare on")
    logger.info("Answering %d rows (%s) with %s and with %s", len(rows), source, args.base, args.tuned)
    results = compare(args.base, args.tuned, rows, source, args.out, args.batch_size, args.max_new_tokens, device)
    for name in ("base", "tuned"):
        m = results["metrics"][name]
        logger.info("%s: exact %.3f, CER %.3f, token F1 %.3f", name, m["exact"], m["cer"], m["token_f1"])
    return 0


if __name__ == "__main__":
    leave_out_bitsandbytes()  # both models load in full precision: peft would import it for nothing
    sys.exit(main())

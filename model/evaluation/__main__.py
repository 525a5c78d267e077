"""Evaluate a checkpoint on held-out synthetic samples: greedy answers, parsed and scored per task.

    python -m model.evaluation --checkpoint assets/eve-tiny --task ocr --n 200
    python -m model.evaluation --checkpoint runs/x --task all --n 200 --level 2 --out eval.json

Held-out means a different seed than training and the `test` split of the word list (words never used in training
samples). Prints one table row per task and writes the scores, with a few example answers, as JSON.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..loading import load_pretrained
from ..synthetic import TASKS, iter_samples
from .metrics import MAIN_METRIC, aggregate, score_sample

EVAL_SEED = 20_250_212  # training streams use other seeds


def answer_batch(model, processor, samples: list, max_new_tokens: int) -> list[str]:
    """Greedy answers to each sample's first question, generated as one left-padded batch."""
    prompts = [processor.build_prompt([{"role": "user", "content": s.conversations[0]["value"]}]) for s in samples]
    inputs = processor(text=prompts, images=[[s.image] for s in samples])
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0,
                             top_p=None, top_k=None, temperature=None)
    return processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:])


def evaluate_task(model, processor, task: str, n: int, level, seed: int = EVAL_SEED, batch_size: int = 16,
                  max_new_tokens: int = 96) -> dict:
    """Scores of `n` held-out samples of one task: the aggregate, and the first few answers for inspection."""
    stream = iter_samples([task], seed=seed, level=level, split="test")
    scores, examples = [], []
    for start in range(0, n, batch_size):
        samples = [next(stream) for _ in range(min(batch_size, n - start))]
        for sample, answer in zip(samples, answer_batch(model, processor, samples, max_new_tokens)):
            scores.append(score_sample(task, answer, sample.target))
            if len(examples) < 5:
                examples.append({"expected": sample.answer, "answer": answer})
    return {"task": task, "level": level, "metrics": aggregate(task, scores), "examples": examples}


def format_table(results: list[dict]) -> str:
    lines = [f"{'task':8s} {'n':>4s}  {'main':>12s}  other metrics"]
    for result in results:
        metrics, task = result["metrics"], result["task"]
        main = MAIN_METRIC[task]
        others = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k not in (main, "n"))
        lines.append(f"{task:8s} {metrics['n']:4d}  {main} {metrics[main]:.3f}  {others}")
    return "\n".join(lines)


def parse_level(text: str):
    levels = [int(x) for x in text.split(",")]
    return levels[0] if len(levels) == 1 else levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)}, or 'all'")
    parser.add_argument("--n", type=int, default=200, help="samples per task")
    parser.add_argument("--level", type=parse_level, default=0, help="curriculum level, or a comma list to mix")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    tasks = list(TASKS) if args.task == "all" else [args.task]
    model, processor = load_pretrained(args.checkpoint)
    started = time.perf_counter()
    results = [evaluate_task(model, processor, task, args.n, args.level, args.seed, args.batch_size,
                             args.max_new_tokens) for task in tasks]
    print(format_table(results))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

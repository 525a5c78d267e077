"""Streaming speed of the default small model on a typical OCR image: time to first token and tokens per second.

Targets (issues 3 and 13): first token in under 0.3 s, at least 100 tokens/s on 2 CPU threads. Measured through the
app's own streaming engine (generate in a worker thread, TextIteratorStreamer), greedy, a fixed number of new tokens,
on one held-out image of each task; printed as ratios to the targets (latency / 0.3 s must stay below 1, speed / 100
tokens/s above 1), so runs on other machines compare at a glance.

Usage: python bench/bench_default_model.py [--model assets/eve-tiny --tokens 64 --repeats 5 --threads 2]
"""

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.serving.types import ChatRequest, Finished, GenerationSettings, Turn
from eve_app.settings import DEFAULT_MODEL
from model.synthetic import TASKS, generate_sample
from model.synthetic.answers import canonical_instruction

TTFT_TARGET_S = 0.3
SPEED_TARGET = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (end of answer ignored)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    engine = TransformersEngine.load(args.model)
    # A fixed answer length: the end-of-turn token is suppressed so every run decodes the same number of tokens.
    engine.model.generation_config.eos_token_id = None
    folder = Path(tempfile.mkdtemp())
    print(f"{args.model}: {args.tokens} new tokens, {torch.get_num_threads()} threads, median of {args.repeats}")
    worst_ttft, worst_speed = 0.0, float("inf")
    for task in TASKS:
        image = folder / f"{task}.png"
        generate_sample(task, random.Random("bench"), level=1, split="test").image.save(image)
        request = [Turn("user", canonical_instruction(task), [str(image)])]
        records = []
        for _ in range(args.repeats + 1):  # the first run warms up
            events = list(engine.stream(ChatRequest(request, GenerationSettings(max_new_tokens=args.tokens))))
            records.append(next(e.record for e in events if isinstance(e, Finished)))
        records = records[1:]
        ttft = statistics.median(r.time_to_first_token for r in records)
        speed = statistics.median(r.tokens_per_second for r in records)
        worst_ttft, worst_speed = max(worst_ttft, ttft), min(worst_speed, speed)
        print(
            f"{task:8s} {records[0].prompt_tokens} prompt tokens: first token {ttft * 1000:.0f} ms "
            f"(ratio to 300 ms {ttft / TTFT_TARGET_S:.2f}), {speed:.0f} tokens/s (ratio to 100 {speed / SPEED_TARGET:.2f})"
        )
    print(
        f"worst: first-token ratio {worst_ttft / TTFT_TARGET_S:.2f} (must be < 1), "
        f"speed ratio {worst_speed / SPEED_TARGET:.2f} (must be >= 1)"
    )


if __name__ == "__main__":
    main()

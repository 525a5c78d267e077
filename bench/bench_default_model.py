"""Streaming speed of the default small model on a typical OCR image: time to first token and tokens per second.

Targets (issue 3): first token in under 0.3 s, at least 100 tokens/s on a 2-core CPU. Measured through the app's
own streaming engine (generate in a worker thread, TextIteratorStreamer), greedy, a fixed number of new tokens.

Usage: python bench/bench_default_model.py [--model assets/eve-tiny --tokens 64 --repeats 5]
"""

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eve_app.engine import ChatRequest, Engine, Finished, GenerationSettings, Turn
from eve_app.settings import DEFAULT_MODEL
from model.synthetic import generate_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (end of answer ignored)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    engine = Engine.load(args.model)
    image = Path(tempfile.mkdtemp()) / "ocr.png"
    generate_sample("ocr", random.Random("bench"), level=1, split="test").image.save(image)
    # A fixed answer length: the end-of-turn token is suppressed so every run decodes the same number of tokens.
    engine.model.generation_config.eos_token_id = None
    request = [Turn("user", "Read the text in the image.", [str(image)])]
    records = []
    for _ in range(args.repeats + 1):  # the first run warms up
        events = list(engine.stream(ChatRequest(request, GenerationSettings(max_new_tokens=args.tokens))))
        records.append(next(e.record for e in events if isinstance(e, Finished)))
    records = records[1:]
    ttft = statistics.median(r.time_to_first_token for r in records)
    speed = statistics.median(r.tokens_per_second for r in records)
    print(
        f"{args.model}: {records[0].prompt_tokens} prompt tokens, {records[0].new_tokens} new tokens, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"time to first token {ttft * 1000:.0f} ms (target < 300 ms), {speed:.0f} tokens/s (target >= 100)")


if __name__ == "__main__":
    main()

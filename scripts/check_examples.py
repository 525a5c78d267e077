"""Ask a model about every example image of the app (`assets/examples`), each as a fresh chat, and score the answers.

Each image is sent alone with its preset's instruction through the app's own engine (as a click on the example does),
greedy, and the answer is scored against the target the image was rendered from (`model.synthetic.example_samples`,
which `python -m model.synthetic --examples` draws the images from, rebuilds it from fixed seeds).

Usage: python scripts/check_examples.py [--model assets/eve-tiny] [--out runs/examples.json]
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.serving.types import ChatRequest, Finished, GenerationSettings, Turn
from model.evaluation import score_sample
from model.evaluation.metrics import MAIN_METRIC
from model.synthetic import example_samples
from model.synthetic.answers import canonical_instruction

EXAMPLES = ROOT / "assets" / "examples"


def check(model: str) -> list[dict]:
    engine = TransformersEngine.load(model)
    rows = []
    for name, sample in example_samples():
        task = sample.task
        request = ChatRequest(
            [Turn("user", canonical_instruction(task), [str(EXAMPLES / name)])], GenerationSettings(max_new_tokens=96)
        )
        record = next(e.record for e in engine.stream(request) if isinstance(e, Finished))
        scores = score_sample(task, record.text, sample.target)
        right = scores.get("exact", 0.0) == 1.0
        rows.append(
            {
                "image": name,
                "expected": sample.answer,
                "answer": record.text.strip(),
                "right": right,
                MAIN_METRIC[task]: scores[MAIN_METRIC[task]],
            }
        )
        print(
            f"{'ok ' if right else 'NO '} {name:22s} {record.text.strip()!r}"
            + ("" if right else f"  (expected {sample.answer!r})"),
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "eve-tiny"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = check(args.model)
    print(f"{sum(r['right'] for r in rows)} of {len(rows)} example images answered right")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

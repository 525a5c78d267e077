"""What LoRA costs on the app's vLLM backend: the engine with LoRA off, with LoRA on and no adapter picked, and with
a fine-tune job's adapter picked (the model picker's `reload`), on the same chats.

Run in the vLLM environment: `.venv-vllm/bin/python bench/bench_vllm_lora.py`. 8 chats x 3 turns, a new image each
turn, fixed-length answers (bench_vllm.py's `run_chats`), on a random checkpoint shaped like the default model with a
rank-8 adapter on every text projection and vision twin. Each engine runs the chats once to warm up, then --rounds
times; prints aggregate tokens/s and p95 time to first token, and their ratios to LoRA off.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from bench.app_timing import random_images
from bench.bench_vllm import run_chats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()

    from eve_app.serving.vllm_engine import VllmEngine
    from tests.vllm.checkpoints import write_default_shaped, write_lora_adapter

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = write_default_shaped(work / "default-shaped")
        adapter = write_lora_adapter(checkpoint, work / "job-1", seed=1)
        fresh = iter(random_images(work, 24 * (args.rounds + 1) * 3, seed=2000))
        results: dict[str, list[dict]] = {}
        for case in ("LoRA off", "LoRA on, base model", "LoRA on, adapter picked"):
            extra = json.loads(os.environ.get("EVE_VLLM_ENGINE_ARGS", "{}"))
            if case == "LoRA off":
                os.environ["EVE_VLLM_ENGINE_ARGS"] = json.dumps({**extra, "enable_lora": False})
            if case != "LoRA on, adapter picked":
                engine = VllmEngine.load(str(checkpoint), dtype="float32")
                engine.sampling_overrides = {"ignore_eos": True, "stop_token_ids": []}
            if case == "LoRA off":
                os.environ["EVE_VLLM_ENGINE_ARGS"] = json.dumps(extra)
            else:
                engine.reload(str(adapter if "adapter" in case else checkpoint), name="job-1")
            runs = [
                run_chats(engine, [next(fresh) for _ in range(24)], 8, 3, args.tokens) for _ in range(args.rounds + 1)
            ]
            results[case] = runs[1:]
            if case != "LoRA on, base model":
                engine.shutdown()

    print(f"\n## LoRA on the vLLM backend: 8 chats x 3 turns with an image, {args.tokens} new tokens a turn")
    print("| engine | tokens/s per round | TTFT p95 s per round | tokens/s vs LoRA off |\n|---|---|---|---|")
    off = statistics.median(r["tokens_per_s"] for r in results["LoRA off"])
    for case, runs in results.items():
        speed, ttfts = [r["tokens_per_s"] for r in runs], [r["ttft_p95"] for r in runs]
        print(
            f"| {case} | {', '.join(f'{s:.0f}' for s in speed)} | {', '.join(f'{t:.3f}' for t in ttfts)} "
            f"| {statistics.median(speed) / off:.2f} |"
        )


if __name__ == "__main__":
    main()

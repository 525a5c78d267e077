"""The vLLM backend against the transformers backend, side by side in one run (issue 14's targets).

Run in the vLLM environment: `make bench-vllm` (or `.venv-vllm/bin/python bench/bench_vllm.py`). Three parts:

1. `concurrent`: 8 chats at once, 3 turns each, every turn adding an image, on a random checkpoint shaped like the
   default model (tests/vllm/checkpoints.py), through the app's engines (`TransformersEngine`: one generate at a time behind
   its lock; `VllmEngine`: continuous batching). Answers have a fixed length (end of turn ignored) so both backends
   decode the same number of tokens. Each backend first runs once at full size, then they take turns (--rounds),
   every run on images not seen before. Targets: aggregate tokens/s >= 4x, p95 time to first token <= 0.5x.
2. `app`: the app's own request path on `--backend vllm`: `/answer` through Gradio's HTTP API (as in
   bench_app_path.py) and through a stock gradio_client, time to the first streamed chunk minus the engine's own time
   to first token (from the stored generation record). Target <= 50 ms.
   Also the throughput of 4 concurrent clients against 1.
3. `prefix`: a follow-up question about the same image (prefix cache) against the first turn, time to first token,
   on a random official-layout checkpoint at width 512 whose 1600-pixel images cost 2,551 tokens. Target <= 0.3x.

Usage: python bench/bench_vllm.py [--parts concurrent,app,prefix] [--tokens 32]
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from bench.app_timing import random_images, stored_ttfts
from bench.bench_app_path import Marks, answer_over_http
from eve_app.serving.types import ChatRequest, Finished, GenerationSettings, Turn

QUESTIONS = ["What is written here?", "describe the image", "what is the red circle"]


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def run_chats(engine, images: list[str], chats: int, turns: int, tokens: int) -> dict:
    """`chats` conversations at once, each `turns` turns with a new image per turn; returns the figures."""
    settings = GenerationSettings(max_new_tokens=tokens)
    records = []
    lock = threading.Lock()

    def chat(c: int) -> None:
        history: list[Turn] = []
        for t in range(turns):
            history.append(Turn("user", QUESTIONS[t % len(QUESTIONS)], [images[(c * turns + t) % len(images)]]))
            events = list(engine.stream(ChatRequest(list(history), settings)))
            record = next(e.record for e in events if isinstance(e, Finished))
            assert record.status == "done", record.error
            history.append(Turn("assistant", record.text))
            with lock:
                records.append(record)

    start = time.perf_counter()
    threads = [threading.Thread(target=chat, args=(c,)) for c in range(chats)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ttfts = [r.time_to_first_token for r in records]
    return {
        "wall_s": wall,
        "new_tokens": sum(r.new_tokens for r in records),
        "tokens_per_s": sum(r.new_tokens for r in records) / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": _p95(ttfts),
        "prompt_tokens_max": max(r.prompt_tokens for r in records),
    }


def part_concurrent_and_app(args, work: Path) -> None:
    import httpx
    from gradio_client import Client, handle_file

    from app import create_app, launch_options
    from eve_app.serving.transformers_engine import TransformersEngine
    from tests.e2e.helpers import free_port
    from tests.vllm.checkpoints import write_default_shaped

    # The transformers backend on torch's default threads (one per core), as the app runs it: one thread made it
    # 241 tokens/s against 285 on this project's 2 cores.
    checkpoint = write_default_shaped(work / "default-shaped")
    images = random_images(work, 24)
    port = free_port()
    demo, ctx = create_app(
        ["--backend", "vllm", "--model", str(checkpoint), "--port", str(port), "--data-dir", str(work / "data")]
    )
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    vllm_engine = ctx.engine
    vllm_engine.sampling_overrides = {"ignore_eos": True, "stop_token_ids": []}
    hf_engine = TransformersEngine.load(str(checkpoint), dtype="float32")
    hf_engine.model.generation_config.eos_token_id = None  # a fixed answer length, as on vLLM

    if "concurrent" in args.parts:
        # Both backends warm up at full size first (a server runs warm), then take turns; every run asks about
        # images neither backend has seen, so vLLM's prefix and encoder caches help only within a conversation.
        per_run = 24
        fresh = iter(random_images(work, per_run * 2 * (args.rounds + 1), seed=1000))

        def run(engine) -> dict:
            return run_chats(engine, [next(fresh) for _ in range(per_run)], 8, 3, args.tokens)

        run(hf_engine), run(vllm_engine)
        rounds = [(run(hf_engine), run(vllm_engine)) for _ in range(args.rounds)]
        print(
            f"\n## 8 chats x 3 turns with an image, {args.tokens} new tokens a turn "
            f"(prompts up to {rounds[0][1]['prompt_tokens_max']} tokens), {args.rounds} alternating rounds"
        )
        print("| round | backend | wall s | tokens/s | TTFT p50 s | TTFT p95 s |\n|---|---|---|---|---|---|")
        for i, pair in enumerate(rounds, 1):
            for name, f in zip(("transformers", "vllm"), pair):
                print(
                    f"| {i} | {name} | {f['wall_s']:.2f} | {f['tokens_per_s']:.0f} | {f['ttft_p50']:.3f} "
                    f"| {f['ttft_p95']:.3f} |"
                )
        speed = [v["tokens_per_s"] / h["tokens_per_s"] for h, v in rounds]
        ttft = [v["ttft_p95"] / h["ttft_p95"] for h, v in rounds]
        print(
            f"tokens/s ratio vllm/transformers per round: {', '.join(f'{r:.2f}' for r in speed)}; median "
            f"{statistics.median(speed):.2f} (target >= 4). p95 TTFT ratio: median {statistics.median(ttft):.2f} "
            f"(target <= 0.5)"
        )

    if "app" in args.parts:
        vllm_engine.sampling_overrides = {}
        preset = ctx.presets[0].name
        url = f"http://127.0.0.1:{port}/"
        http, marks = httpx.Client(base_url=url + "gradio_api", timeout=60), Marks()

        def answer_http(image: str) -> float:
            call = marks.new()
            call["submit"] = time.perf_counter()
            answer_over_http(http, image, [preset, "", 16], marks)
            return call["first"] - call["submit"]

        def answer(image: str, c: Client) -> float:
            start = time.perf_counter()
            job = c.submit(handle_file(image), preset, "", 16, api_name="/answer")
            first = None
            for _ in job:
                first = first or time.perf_counter() - start
            return first

        client = Client(url, verbose=False)
        print("\n## The app's request path on --backend vllm (/answer, 10 sequential calls per client)")
        clients = (("Gradio's HTTP API", answer_http), ("stock gradio_client", lambda i: answer(i, client)))
        for k, (name, ask) in enumerate(clients):
            ask(images[0])  # warm-up
            firsts = [ask(image) for image in images[1 + 11 * k : 11 + 11 * k]]  # images the cache has not seen
            engine_ttfts = stored_ttfts(ctx.conversations.store)[-10:]
            overhead = [f - e for f, e in zip(firsts, engine_ttfts)]
            print(
                f"{name}: first chunk p50 {statistics.median(firsts) * 1000:.0f} ms; engine TTFT p50 "
                f"{statistics.median(engine_ttfts) * 1000:.0f} ms; app overhead p50 "
                f"{statistics.median(overhead) * 1000:.0f} ms, max {max(overhead) * 1000:.0f} ms (target <= 50 ms)"
            )
        for clients in (1, 4):
            done = []
            start = time.perf_counter()

            def loop(i: int, done: list[float]) -> None:
                c = Client(f"http://127.0.0.1:{port}/", verbose=False)
                for j in range(5):
                    done.append(answer(images[(i * 5 + j) % len(images)], c))

            threads = [threading.Thread(target=loop, args=(i, done)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            print(
                f"{clients} client(s) x 5 calls: {len(done) / wall:.2f} answers/s, first chunk p50 "
                f"{statistics.median(done) * 1000:.0f} ms"
            )
    demo.close()
    vllm_engine.shutdown()


def part_prefix(args, work: Path) -> None:
    from eve_app.serving.vllm_engine import VllmEngine
    from tests.vllm.checkpoints import write_official

    checkpoint = write_official(
        work / "wide",
        sizes={
            "hidden_size": 512,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "mm_hidden_size": 256,
            "patch_stride": 16,
        },  # 32-pixel patches, as in the 7B
        image_max_size=1600,
    )
    engine = VllmEngine.load(str(checkpoint), dtype="float32")
    engine.sampling_overrides = {"ignore_eos": True, "stop_token_ids": []}
    images = random_images(work, 4, size=(640, 480))
    settings = GenerationSettings(max_new_tokens=16)
    rows = []
    for image in images:
        first = ChatRequest([Turn("user", "What is written here?", [image])], settings)
        record1 = next(e.record for e in engine.stream(first) if isinstance(e, Finished))
        assert record1.status == "done", record1.error
        follow = ChatRequest(
            [
                Turn("user", "What is written here?", [image]),
                Turn("assistant", record1.text),
                Turn("user", "and what colour is the sign?"),
            ],
            settings,
        )
        record2 = next(e.record for e in engine.stream(follow) if isinstance(e, Finished))
        assert record2.status == "done", record2.error
        rows.append(
            (record1.prompt_tokens, record1.time_to_first_token, record2.prompt_tokens, record2.time_to_first_token)
        )
    rows = rows[1:]  # the first image warms up
    print("\n## Follow-up about the same image (prefix cache), width 512, 4 layers, 640x480 -> 1856x1408 image")
    print("| first turn tokens | TTFT s | follow-up tokens | TTFT s | ratio |\n|---|---|---|---|---|")
    for p1, t1, p2, t2 in rows:
        print(f"| {p1} | {t1:.3f} | {p2} | {t2:.3f} | {t2 / t1:.2f} |")
    ratio = statistics.median(t2 / t1 for _, t1, _, t2 in rows)
    print(f"median follow-up / first-turn TTFT: {ratio:.2f} (target <= 0.3)")
    engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="concurrent,app,prefix")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer in the concurrent part")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed runs of each backend")
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    if args.parts & {"concurrent", "app"}:
        part_concurrent_and_app(args, work)
    if "prefix" in args.parts:
        part_prefix(args, work)


if __name__ == "__main__":
    main()

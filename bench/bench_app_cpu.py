"""The app's own CPU cost per answer and per streamed piece on the vLLM backend, and what that means for a GPU.

On `--backend vllm` the engine core runs in a process of its own; the app's process keeps the HTTP server, Gradio's
queue, the handlers, the database and vLLM's front end (prompt and image processing, detokenising). This starts two
apps on the shipped model, one streaming a piece per token (`--stream-interval 0`) and one at the default bounded rate,
sends each the same kind of `/answer` calls over Gradio's HTTP API in alternating runs (one client, so the engine adds
no queueing), and reads the app process's CPU time (`/proc`, all its threads; the engine core's process apart; less what the app spends idle in the same time):

    app CPU per answer = per answer + pieces x per piece

The two apps stream the same answers in different numbers of pieces, which gives both costs. Then: how many cores the
app needs to stream `--tokens-per-second` to `--chats` chats (the README's plan for one H100: about 3,000 tokens/s to
32 chats) with answers of `--answer-tokens`, one piece per token against the bounded rate.

    python bench/bench_app_cpu.py [--rounds 4] [--requests 20]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.load_test import VLLM_PYTHON, make_images, process_cpu, run_load
from eve_app.serving.pacing import STREAM_INTERVAL
from tests.e2e.helpers import free_port, start_server

IDLE_SECONDS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(VLLM_PYTHON), help="the vLLM environment's interpreter")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20, help="sequential /answer calls a run")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--interval", type=float, default=STREAM_INTERVAL, help="the bounded rate's interval (s)")
    parser.add_argument("--tokens-per-second", type=float, default=3000.0)
    parser.add_argument("--chats", type=int, default=32)
    parser.add_argument("--answer-tokens", type=int, default=256, help="tokens of a typical answer in the projection")
    args = parser.parse_args()

    intervals = {"per token": 0.0, f"{args.interval * 1000:g} ms": args.interval}
    with tempfile.TemporaryDirectory(prefix="eve-app-cpu-") as tmp:
        work = Path(tmp)
        apps = {}
        try:
            for label, interval in intervals.items():
                port = free_port()
                argv = ["--backend", "vllm", "--data-dir", str(work / f"data-{interval}")]
                argv += ["--stream-interval", str(interval)]
                env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}  # the app's default unless set
                print(f"starting the app streaming {label} ...", flush=True)
                process = start_server(argv, port, timeout=600, env=env, python=args.python, output=work / "log.txt")
                apps[label] = (f"http://127.0.0.1:{port}/", process)
            seen: set[str] = set()
            for url, _ in apps.values():  # warm-up: the first calls compile and cache
                run_load(url, "http", make_images(work, 4, offset=10_000 + len(seen), seen=seen), 1, 16, 600)
            # What an idle app spends (its threads' polling and timers), taken off each run's CPU time by its wall time.
            idle = {label: process_cpu(process.pid)["app"] for label, (_, process) in apps.items()}
            time.sleep(IDLE_SECONDS)
            idle = {label: (process_cpu(p.pid)["app"] - idle[label]) / IDLE_SECONDS for label, (_, p) in apps.items()}
            print("idle apps: " + ", ".join(f"{label} {1000 * cores:.1f} ms/s" for label, cores in idle.items()))
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label in apps}
            for round_ in range(args.rounds):
                for label, (url, process) in apps.items():
                    images = make_images(work, args.requests, offset=len(seen), seen=seen)
                    before = process_cpu(process.pid)["app"]
                    results, wall = run_load(url, "http", images, 1, args.max_new_tokens, 600)
                    spent = process_cpu(process.pid)["app"] - before - idle[label] * wall
                    answered = [r for r in results if r.error is None]
                    if len(answered) != len(images):
                        print(f"  {label}: {len(images) - len(answered)} calls failed: {results[0].error}")
                        return 1
                    pieces = statistics.mean(r.pieces for r in answered)
                    cpu = 1000 * spent / len(answered)
                    samples[label].append((cpu, pieces))
                    print(
                        f"[round {round_ + 1}] streaming {label}: {cpu:.1f} ms app CPU an answer, {pieces:.1f} pieces "
                        f"an answer, {len(answered) / wall:.2f} answers/s; load average {os.getloadavg()[0]:.2f}"
                    )
        finally:
            for _, process in apps.values():
                process.terminate()
                process.wait(60)
    (fine, paced) = (samples[label] for label in apps)
    per_piece = statistics.median(
        (a_cpu - b_cpu) / (a_pieces - b_pieces) for (a_cpu, a_pieces), (b_cpu, b_pieces) in zip(fine, paced)
    )
    per_answer = statistics.median(cpu - pieces * per_piece for cpu, pieces in fine + paced)
    print(
        f"\napp CPU: {per_answer:.1f} ms per answer (upload, queue, checks, database, vLLM's input processing) and "
        f"{per_piece:.2f} ms per streamed piece (medians over {args.rounds} rounds)"
    )
    answers = args.tokens_per_second / args.answer_tokens
    per_chat = args.tokens_per_second / args.chats
    for label, interval in intervals.items():
        pieces = args.tokens_per_second if interval == 0 else args.chats * min(per_chat, 1 / interval)
        cores = (answers * per_answer + pieces * per_piece) / 1000
        print(
            f"{args.tokens_per_second:g} tokens/s to {args.chats} chats ({per_chat:.0f} tokens/s each, answers of "
            f"{args.answer_tokens} tokens), streaming {label}: {pieces:.0f} pieces/s + {answers:.1f} answers/s = "
            f"{cores:.2f} cores of the app's process ({'fits' if cores <= 1 else 'does NOT fit'} in one)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The app's own request path on the transformers backend: what `/answer` adds to the engine's time to first token.

Starts the real app in this process (the shipped model unless --model, a fresh temporary data folder), warms it up, then
sends N sequential `/answer` calls through one of three clients, each with a new image, and times each from `submit` to
the first streamed chunk. The engine's own time to first token comes from the stored generation records; the app's
overhead is the difference (issue 14: <= 50 ms). The clients: `gradio` (a stock gradio_client `Client(url)`),
`gradio-ssl` (the same with one SSL context to reuse, see docs/app.md, Scripting API) and `http` (Gradio's HTTP API as curl
uses it: upload, POST /call/answer, read its event stream, over one kept-alive connection), which adds nothing of its
own to the path. Every stage of a call is timed too (the app's objects are wrapped in this process; nothing in the app
changes), so the table shows where the overhead goes:

    upload          client: the POST of the image to /gradio_api/upload
    join            client: the POST to /queue/join (or /call/answer), until its reply
    queue           the server: from the join reply until the handler checks the image
    check_message   the image checks (size, format, header, full decode)
    save_question   reading the file, hashing and storing it, saving the question (one transaction)
    begin_answer    saving the empty "streaming" answer
    to_engine       from there until the engine's stream starts
    engine_ttft     the engine's own time to first token (stored record)
    to_first_text   the engine's first token until its first text piece
    to_client       that piece through the handler, Gradio's queue and SSE to the client's reader thread
    client_pickup   gradio_client's reader thread until the job iterator hands the chunk out

    OMP_NUM_THREADS=1 python bench/bench_app_path.py [--client gradio|gradio-ssl|http] [--calls 20] [--model DIR]
"""

import argparse
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import certifi
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench.app_timing import answer_over_http, random_images, stored_ttfts
from eve_app.serving.types import TextDelta

TARGET_MS = 50
# (stage, the mark that ends it): each stage starts at the previous mark the call has (a path without one of the
# steps, e.g. when the question and the answer are saved in one transaction, shows it as 0).
STAGES = [
    ("upload", "upload_end"),
    ("join", "join_end"),
    ("queue", "check_start"),
    ("check_message", "check_end"),
    ("save_question", "save_end"),
    ("begin_answer", "begun"),
    ("to_engine", "engine_start"),
    ("engine_ttft", None),
    ("to_first_text", "first_text"),
    ("to_client", "arrived"),
    ("client_pickup", "first"),
]


class Marks:
    """Timestamps (perf_counter) of the call in flight; calls are sequential, so one dict at a time."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def new(self) -> dict[str, float]:
        self.calls.append({})
        return self.calls[-1]

    def mark(self, name: str) -> None:
        if self.calls:
            self.calls[-1].setdefault(name, time.perf_counter())


def around(marks: Marks, fn: Callable, before: str, after: str) -> Callable:
    def timed(*args, **kwargs):
        marks.mark(before)
        try:
            return fn(*args, **kwargs)
        finally:
            marks.mark(after)

    return timed


def instrument_server(ctx, marks: Marks) -> None:
    """Wrap the objects the `/answer` handler calls (instance attributes; the app's code is untouched)."""
    service = ctx.conversations
    service.images.check_message = around(marks, service.images.check_message, "check_start", "check_end")
    storage = service.store
    storage.save_question = around(marks, storage.save_question, "save_start", "save_end")  # and its answer
    storage.begin_answer = around(marks, storage.begin_answer, "begin_start", "begun")
    engine_stream = service.engine.stream

    def stream(request):
        marks.mark("engine_start")
        for event in engine_stream(request):
            if isinstance(event, TextDelta):
                marks.mark("first_text")
            yield event

    service.engine.stream = stream


class _TimedDeque(deque):
    """gradio_client's per-event message queue, noting when the first streamed output reached the reader thread."""

    marks: Marks

    def append(self, message) -> None:
        if isinstance(message, dict) and message.get("msg") == "process_generating":
            self.marks.mark("arrived")
        super().append(message)


class _TimedQueues(dict):
    def __init__(self, marks: Marks):
        super().__init__()
        self.marks = marks

    def _timed(self, value):
        if isinstance(value, deque) and not isinstance(value, _TimedDeque):
            timed = _TimedDeque(value)
            timed.marks = self.marks
            return timed
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, self._timed(value))

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


def instrument_http(demo, marks: Marks) -> None:
    """Time the server's handling of the upload and join requests (from the request to the last byte of the reply),
    by wrapping the ASGI app uvicorn hands each new connection."""
    config = demo.server.config
    inner = config.loaded_app

    async def timed(scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        joins = path.endswith(("/queue/join", "/call/answer"))
        name = "upload" if path.endswith("/upload") else "join" if joins else None
        if name is None:
            return await inner(scope, receive, send)
        marks.mark(f"{name}_server_start")

        async def timed_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                marks.mark(f"{name}_server_end")

        return await inner(scope, receive, timed_send)

    config.loaded_app = timed


def instrument_client(client, marks: Marks) -> None:
    from gradio_client.client import Endpoint

    client.pending_messages_per_event = _TimedQueues(marks)
    client.send_data = around(marks, client.send_data, "join_start", "join_end")
    upload = Endpoint._upload_file

    def timed_upload(self, f, data_index):
        try:
            return upload(self, f, data_index)
        finally:
            marks.mark("upload_end")

    Endpoint._upload_file = timed_upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="timed /answer calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--model", help="checkpoint (default: the shipped assets/eve-tiny)")
    parser.add_argument("--tokens", type=int, default=16, help="max_new_tokens of each call")
    parser.add_argument("--size", default="160x120", help="image size WxH (random pixels, PNG)")
    parser.add_argument("--client", choices=["gradio", "gradio-ssl", "http"], default="gradio")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from app import create_app, launch_options
    from tests.e2e.helpers import free_port

    work = Path(tempfile.mkdtemp(prefix="bench-app-path-"))
    width, height = (int(x) for x in args.size.split("x"))
    images = random_images(work, args.warmup + args.calls, size=(width, height))
    port = free_port()
    argv = ["--port", str(port), "--data-dir", str(work / "data")] + (["--model", args.model] if args.model else [])
    demo, ctx = create_app(argv)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    try:
        marks = Marks()
        instrument_server(ctx, marks)
        instrument_http(demo, marks)
        preset = ctx.presets[0].name
        if args.client == "http":
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}/gradio_api", timeout=60)

            def answer(image: str) -> None:
                marks.new()["submit"] = time.perf_counter()
                answer_over_http(http, image, [preset, "", args.tokens], marks.mark)

        else:
            verify = ssl.create_default_context(cafile=certifi.where()) if args.client == "gradio-ssl" else True
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=verify)  # type: ignore[arg-type]
            instrument_client(client, marks)

            def answer(image: str) -> None:
                marks.new()["submit"] = time.perf_counter()
                job = client.submit(handle_file(image), preset, "", args.tokens, api_name="/answer")
                for _ in job:
                    marks.mark("first")

        for image in images[: args.warmup]:
            answer(image)
        del marks.calls[:]
        for image in images[args.warmup :]:
            answer(image)
        calls = marks.calls
        ttfts = stored_ttfts(ctx.conversations.store)[-len(calls) :]
        report(calls, ttfts, ctx.engine.describe(), preset, args)
    finally:
        demo.close()
        ctx.conversations.store.database.close()


def report(calls: list[dict[str, float]], ttfts: list[float], engine: str, preset: str, args) -> None:
    firsts = [c["first"] - c["submit"] for c in calls]
    overhead = [f - t for f, t in zip(firsts, ttfts)]
    rows: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for call, ttft in zip(calls, ttfts):
        previous = call["submit"]
        for name, end in STAGES:
            if end is None:  # the engine's own time to first token, from its stored record
                rows[name].append(ttft)
                previous += ttft
            elif end in call:
                rows[name].append(call[end] - previous)
                previous = call[end]
            else:
                rows[name].append(0.0)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.1f} {max(values) * 1000:7.1f}"

    print(
        f"\n## /answer on {engine}, client {args.client}: {len(calls)} sequential calls ({preset}, {args.tokens} "
        f"tokens, {args.size} PNG)"
    )
    print(f"{'stage':<16} {'p50 ms':>7} {'max ms':>7}")
    servers = {
        name: [c[f"{name}_server_end"] - c[f"{name}_server_start"] for c in calls if f"{name}_server_end" in c]
        for name in ("upload", "join")
    }
    for name, values in rows.items():
        print(f"{name:<16} {ms(values)}")
        if servers.get(name):
            print(f"{'  of it server':<16} {ms(servers[name])}")
    print(f"{'first chunk':<16} {ms(firsts)}")
    verdict = "met" if statistics.median(overhead) * 1000 <= TARGET_MS else "NOT met"
    print(
        f"\nfirst chunk at the client p50 {statistics.median(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms; "
        f"engine TTFT p50 {statistics.median(ttfts) * 1000:.0f} ms, max {max(ttfts) * 1000:.0f} ms; app overhead "
        f"p50 {statistics.median(overhead) * 1000:.0f} ms, max {max(overhead) * 1000:.0f} ms "
        f"(target <= {TARGET_MS} ms: {verdict})"
    )


if __name__ == "__main__":
    main()

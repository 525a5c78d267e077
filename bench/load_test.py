"""Load test of the `/answer` endpoint: concurrent gradio_client clients, then a check that every answer was logged.

Each client (a thread with its own `gradio_client.Client`) sends its requests one after the other, each with a
different synthetic image (OCR, poster, webpage and scene tasks in turn). The script checks that every request
finished, that each one left a conversation in the database (the question with its image, the same answer text,
a generation record), and prints throughput and latency. Generation runs one request at a time (the "gpu"
concurrency group), so latency includes the wait in the queue.

    # start the app in this process on a free 127.0.0.1 port, with a fresh temporary data directory
    OMP_NUM_THREADS=1 python bench/load_test.py --model /tmp/probe/run --max-new-tokens 16
    # a running app on this machine; its data directory (or --db-url) lets the script check the database
    python bench/load_test.py --url http://127.0.0.1:7860/ --data-dir data

Exit status 0 when every request was answered and logged, 1 otherwise.
"""

import argparse
import hashlib
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eve_app.storage import ConversationStore, Database
from model.synthetic import TASK_KEYS, generate_sample

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
MAX_CLIENTS, MAX_REQUESTS = 32, 20  # keeps a run bounded: at most 640 requests


@dataclass
class Result:
    client: int
    image: Path
    task: str
    answer: str | None = None
    latency: float | None = None  # seconds from submit to the final answer, queue wait included
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app on 127.0.0.1 (default: start one in this process)")
    parser.add_argument("--model", help="checkpoint for the in-process app (default: the project's small model)")
    parser.add_argument(
        "--data-dir", type=Path, help="the app's data directory (default for the in-process app: a temporary folder)"
    )
    parser.add_argument("--db-url", help="the app's database URL, when it is not the SQLite file in --data-dir")
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients (1..{MAX_CLIENTS})")
    parser.add_argument("--requests", type=int, default=5, help=f"requests per client (1..{MAX_REQUESTS})")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    if args.url and urlparse(args.url).hostname not in LOCAL_HOSTS:
        parser.error("--url must point at this machine (127.0.0.1 or localhost)")
    return args


def make_images(folder: Path, count: int) -> list[tuple[Path, str]]:
    """`count` different synthetic images, cycling through the tasks; (path, preset name) each."""
    names = list(TASK_KEYS)
    images = []
    for i in range(count):
        task = names[i % len(names)]
        path = folder / f"load-{i:03d}-{TASK_KEYS[task]}.png"
        generate_sample(task, random.Random(f"load-test-{i}"), split="test").image.save(path)
        images.append((path, task))
    assert len({_sha256(p) for p, _ in images}) == count, "two synthetic images came out identical"
    return images


def _sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def start_app(model: str | None, data_dir: Path):
    """Launches the app in this process on a free 127.0.0.1 port; returns (url, demo, storage)."""
    from app import create_app, launch_options

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["--data-dir", str(data_dir), "--port", str(port)] + (["--model", model] if model else [])
    demo, ctx = create_app(argv)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    return f"http://127.0.0.1:{port}/", demo, ctx.conversations.store


def run_client(
    url: str, client: int, work: list[tuple[Path, str]], max_new_tokens: int, deadline: float, results: list[Result]
) -> None:
    """One client: its requests in turn, each waited for until the run's deadline."""
    from gradio_client import Client, handle_file

    try:
        api = Client(url, verbose=False)
    except Exception as error:  # noqa: BLE001 - a client that cannot connect fails its requests, not the run
        results.extend(Result(client, path, task, error=f"connect: {error}") for path, task in work)
        return
    for path, task in work:
        result = Result(client, path, task)
        start = time.perf_counter()
        job = api.submit(handle_file(str(path)), task, "", max_new_tokens, api_name="/answer")
        try:
            result.answer = job.result(timeout=max(1.0, deadline - time.monotonic()))
            result.latency = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - recorded and reported; the other requests go on
            result.error = f"{type(error).__name__}: {error}"
            job.cancel()
        results.append(result)


def run_load(
    url: str, images: list[tuple[Path, str]], clients: int, max_new_tokens: int, timeout: float
) -> tuple[list[Result], float]:
    """All clients at once; returns the results and the wall time in seconds."""
    per_client = len(images) // clients
    deadline = time.monotonic() + timeout
    results: list[Result] = []
    threads = [
        threading.Thread(
            target=run_client,
            daemon=True,
            args=(url, c, images[c * per_client : (c + 1) * per_client], max_new_tokens, deadline, results),
        )
        for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 5)
    return results, time.perf_counter() - start


def check_database(
    storage: ConversationStore, before: set[int], results: list[Result]
) -> tuple[list[str], list[float]]:
    """Problems found matching each answered request to its logged conversation; and the logged generation times."""
    problems, durations = [], []
    new = [c["id"] for c in storage.list_conversations(limit=10_000) if c["id"] not in before]
    logged: dict[str, list[dict]] = {}
    for conversation_id in new:
        messages = storage.get_conversation(conversation_id)["messages"]
        users = [m for m in messages if m["role"] == "user"]
        if users and users[0]["images"]:
            logged.setdefault(_sha256(users[0]["images"][0]), []).append(messages)
    for result in results:
        found = logged.get(_sha256(result.image), [])
        if len(found) != 1:
            problems.append(f"{result.image.name}: {len(found)} logged conversations, expected 1")
            continue
        roles = [m["role"] for m in found[0]]
        if roles != ["user", "assistant"]:
            problems.append(f"{result.image.name}: logged roles {roles}")
            continue
        answer = found[0][1]
        generation = answer["generation"] or {}
        if answer["status"] != "done" or not generation.get("new_tokens"):
            problems.append(f"{result.image.name}: answer {answer['status']}, generation record {generation}")
        elif answer["text"] != result.answer:
            problems.append(f"{result.image.name}: logged text differs from the returned answer")
        else:
            durations.append(generation["duration"])
    return problems, durations


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(results: list[Result], expected: int, wall: float) -> bool:
    answered = [r for r in results if r.error is None and isinstance(r.answer, str)]
    failed = [r for r in results if r not in answered]
    print(
        f"requests: {expected} sent, {len(answered)} answered, {len(failed)} failed, "
        f"{expected - len(results)} unfinished"
    )
    for r in failed[:10]:
        print(f"  client {r.client} {r.image.name}: {r.error or 'no answer'}")
    if answered:
        latencies = [r.latency for r in answered]
        print(f"wall time {wall:.1f} s, throughput {len(answered) / wall:.2f} answers/s")
        print(
            f"latency (submit to final answer, queue included): p50 {percentile(latencies, 50):.2f} s, "
            f"p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s"
        )
    return len(answered) == expected


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    total = args.clients * args.requests
    with tempfile.TemporaryDirectory(prefix="eve-load-") as tmp:
        tmp = Path(tmp)
        images = make_images(tmp, total)
        demo = None
        if args.url:
            url = args.url
            storage = (
                ConversationStore(Database(args.db_url, data_dir=args.data_dir))
                if args.data_dir or args.db_url
                else None
            )
        else:
            url, demo, storage = start_app(args.model, args.data_dir or tmp / "app-data")
        try:
            before = {c["id"] for c in storage.list_conversations(limit=10_000)} if storage else set()
            print(
                f"{args.clients} clients x {args.requests} /answer requests, max {args.max_new_tokens} new tokens, "
                f"against {url}"
            )
            results, wall = run_load(url, images, args.clients, args.max_new_tokens, args.timeout)
            ok = report(results, total, wall)
            if storage is None:
                print("database: not checked (pass the app's --data-dir or --db-url)")
                return 0 if ok else 1
            problems, durations = check_database(storage, before, [r for r in results if r.error is None])
            print(
                f"database: {len(durations)} of {total} answers logged with their question, image and "
                f"generation record"
                + (f"; server-side generation p50 {statistics.median(durations):.2f} s" if durations else "")
            )
            for problem in problems[:10]:
                print(f"  {problem}")
            return 0 if ok and not problems and len(durations) == total else 1
        finally:
            if demo is not None:
                demo.close()


if __name__ == "__main__":
    sys.exit(main())

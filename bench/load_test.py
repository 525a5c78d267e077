"""Load test of the `/answer` endpoint: concurrent clients, then a check that every answer was logged.

Each client (a thread) sends its requests one after the other, each with a different synthetic image (OCR, poster,
webpage and scene tasks in turn), through Gradio's HTTP API (upload, POST /call/answer, read the event stream, what
curl does) on the standard library's `http.client` (`--client http`, the default: the clients share the app's cores,
and this one costs 1.5 ms of CPU a call against httpx's 4.2), on httpx (`--client httpx`), or through a stock
`gradio_client.Client` (`--client gradio`, whose own per-request costs are the client's, not the app's). The
script checks that every request finished, that each one left a conversation in
the database (the question with its image, the same answer text, a generation record), and prints throughput and
latency (queue wait included).

`--compare 1,8` runs each client count in turn against the same app, `--rounds` times, with the same number of
requests in every run (one client sends them all, eight send an eighth each), and prints the ratio of answers per
second of the last count to the first, per round and the median. `--backend vllm` starts the app in a process of its
own on the vLLM environment's Python (`--python`), as `make run-vllm` does, and reports the app process's CPU time
per answer of the app process and of vLLM's engine core (its child process).

    # start the app in this process on a free 127.0.0.1 port, with a fresh temporary data directory
    OMP_NUM_THREADS=1 python bench/load_test.py --model /tmp/probe/run --max-new-tokens 16
    # many visitors on vLLM: 1 client against 8, three rounds, the app in a process of its own
    python bench/load_test.py --backend vllm --compare 1,8 --rounds 3
    # a running app on this machine; its data directory (or --db-url) lets the script check the database
    python bench/load_test.py --url http://127.0.0.1:7860/ --data-dir data

Exit status 0 when every request was answered and logged, 1 otherwise.
"""

import argparse
import hashlib
import os
import random
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
from model.shared import PROJECT_ROOT
from model.synthetic import TASK_KEYS, generate_sample

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
MAX_CLIENTS, MAX_REQUESTS = 32, 640  # keeps a run bounded: at most 640 requests a run
VLLM_PYTHON = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"


@dataclass
class Result:
    client: int
    image: Path
    task: str
    answer: str | None = None
    latency: float | None = None  # seconds from submit to the final answer, queue wait included
    error: str | None = None
    pieces: int = 0  # streamed pieces ("generating" events) the client received


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app on 127.0.0.1 (default: start one)")
    parser.add_argument("--model", help="checkpoint for the started app (default: the project's small model)")
    parser.add_argument("--backend", choices=["transformers", "vllm"], help="the started app's --backend")
    parser.add_argument(
        "--python",
        help="start the app in a process of its own on this interpreter (default with --backend vllm: .venv-vllm's)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the app's data directory (default for a started app: a temporary folder)"
    )
    parser.add_argument("--pid", type=int, help="with --url: the app's process id, to report its CPU time per answer")
    parser.add_argument("--db-url", help="the app's database URL, when it is not the SQLite file in --data-dir")
    parser.add_argument(
        "--client", choices=["http", "httpx", "gradio"], default="http", help="how each client calls /answer"
    )
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients (1..{MAX_CLIENTS})")
    parser.add_argument(
        "--requests", type=int, default=5, help="requests per client (with --compare: per client of the largest count)"
    )
    parser.add_argument("--compare", help="client counts to compare against the same app, e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare: how many times to run each count")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each run")
    args = parser.parse_args(argv)
    args.counts = [int(n) for n in args.compare.split(",")] if args.compare else [args.clients]
    args.per_run = max(args.counts) * args.requests
    if not all(1 <= n <= MAX_CLIENTS for n in args.counts) or not 1 <= args.per_run <= MAX_REQUESTS:
        parser.error(f"client counts must be 1..{MAX_CLIENTS} and at most {MAX_REQUESTS} requests a run")
    if any(args.per_run % n for n in args.counts):
        parser.error("each client count must divide the requests of a run (largest count x --requests)")
    if args.url and urlparse(args.url).hostname not in LOCAL_HOSTS:
        parser.error("--url must point at this machine (127.0.0.1 or localhost)")
    if args.backend == "vllm" and not args.python:
        args.python = str(VLLM_PYTHON)
    return args


def make_images(folder: Path, count: int, offset: int = 0, seen: set[str] | None = None) -> list[tuple[Path, str]]:
    """`count` different synthetic images, cycling through the tasks; (path, preset name) each. `seen`: hashes of
    images made before (an image equal to one of them is drawn again), updated with these."""
    names = list(TASK_KEYS)
    seen = set() if seen is None else seen
    images = []
    for i in range(offset, offset + count):
        task = names[i % len(names)]
        path = folder / f"load-{i:06d}-{TASK_KEYS[task]}.png"
        for attempt in range(100):  # a simple scene can come out the same for two seeds
            generate_sample(task, random.Random(f"load-test-{i}-{attempt}"), split="test").image.save(path)
            if _sha256(path) not in seen:
                break
        seen.add(_sha256(path))
        images.append((path, task))
    return images


def _sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def start_app(model: str | None, data_dir: Path, backend: str | None):
    """Launches the app in this process on a free 127.0.0.1 port; returns (url, demo, storage)."""
    from app import create_app, launch_options
    from tests.e2e.helpers import free_port

    port = free_port()
    argv = ["--data-dir", str(data_dir), "--port", str(port)] + (["--model", model] if model else [])
    demo, ctx = create_app(argv + (["--backend", backend] if backend else []))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    return f"http://127.0.0.1:{port}/", demo, ctx.conversations.store


def start_app_process(python: str, model: str | None, data_dir: Path, backend: str | None, log: Path):
    """`python app.py` in a process of its own (as `make run-vllm` starts it); returns (url, process)."""
    from tests.e2e.helpers import free_port, start_server

    port = free_port()
    argv = ["--data-dir", str(data_dir)] + (["--model", model] if model else [])
    argv += ["--backend", backend] if backend else []
    # The app's own thread settings, as `make run-vllm` has them (start_server pins one thread for the tests' sake).
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    process = start_server(argv, port, timeout=600, env=env, python=python, output=log)
    return f"http://127.0.0.1:{port}/", process


def process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system, all threads) of process `pid` ("app") and of each child process by name (vLLM's
    engine core runs in one of its own)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> tuple[str, float]:
        text = Path(f"/proc/{p}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return text[text.index("(") + 1 : text.rindex(")")], (int(fields[11]) + int(fields[12])) / ticks

    totals = {"app": stat(pid)[1]}
    children = " ".join(Path(t / "children").read_text() for t in Path(f"/proc/{pid}/task").iterdir())
    for child in children.split():
        try:
            name, seconds = stat(int(child))
        except (OSError, ValueError):  # ended meanwhile
            continue
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def client_calls(url: str, client: str):
    """A function that makes one /answer call for one client: (image, task, max new tokens, result) -> None; it fills
    in the result's answer and streamed pieces."""
    if client == "http":
        import http.client

        from bench.app_timing import answer_over_stdlib

        parsed = urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=600)

        def call(path: Path, task: str, tokens: int, result: Result) -> None:
            def count(mark: str) -> None:
                result.pieces += mark == "first"

            result.answer = answer_over_stdlib(connection, str(path), [task, "", tokens], count)

        return call
    if client == "httpx":
        import httpx

        from bench.app_timing import answer_over_http

        session = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=600)

        def call_httpx(path: Path, task: str, tokens: int, result: Result) -> None:
            def count(mark: str) -> None:
                result.pieces += mark == "first"

            result.answer = answer_over_http(session, str(path), [task, "", tokens], count)

        return call_httpx
    from gradio_client import Client, handle_file

    api = Client(url, verbose=False)

    def call_gradio(path: Path, task: str, tokens: int, result: Result) -> None:
        job = api.submit(handle_file(str(path)), task, "", tokens, api_name="/answer")
        result.answer = job.result()
        result.pieces = max(0, len(job.outputs()) - 1)

    return call_gradio


def run_client(
    url: str,
    kind: str,
    client: int,
    work: list[tuple[Path, str]],
    max_new_tokens: int,
    deadline: float,
    results: list[Result],
) -> None:
    """One client: its requests in turn; an error is recorded and the next request goes on."""
    try:
        call = client_calls(url, kind)
    except Exception as error:  # noqa: BLE001 - a client that cannot connect fails its requests, not the run
        results.extend(Result(client, path, task, error=f"connect: {error}") for path, task in work)
        return
    for path, task in work:
        result = Result(client, path, task)
        if time.monotonic() > deadline:
            result.error = "deadline passed before it was sent"
            results.append(result)
            continue
        start = time.perf_counter()
        try:
            call(path, task, max_new_tokens, result)
            result.latency = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - recorded and reported; the other requests go on
            result.error = f"{type(error).__name__}: {error}"
        results.append(result)


def run_load(
    url: str, kind: str, images: list[tuple[Path, str]], clients: int, max_new_tokens: int, timeout: float
) -> tuple[list[Result], float]:
    """All clients at once; returns the results and the wall time in seconds."""
    per_client = len(images) // clients
    deadline = time.monotonic() + timeout
    results: list[Result] = []
    threads = [
        threading.Thread(
            target=run_client,
            daemon=True,
            args=(url, kind, c, images[c * per_client : (c + 1) * per_client], max_new_tokens, deadline, results),
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


def report(results: list[Result], expected: int, wall: float, label: str = "") -> float | None:
    """Prints the run's figures; returns its answers per second when every request was answered, else None."""
    answered = [r for r in results if r.error is None and isinstance(r.answer, str)]
    failed = [r for r in results if r not in answered]
    print(
        f"{label}requests: {expected} sent, {len(answered)} answered, {len(failed)} failed, "
        f"{expected - len(results)} unfinished"
    )
    for r in failed[:10]:
        print(f"  client {r.client} {r.image.name}: {r.error or 'no answer'}")
    if not answered:
        return None
    latencies = [r.latency for r in answered if r.latency is not None]
    rate = len(answered) / wall
    pieces = sum(r.pieces for r in answered) / len(answered)
    print(
        f"{label}wall time {wall:.2f} s, throughput {rate:.2f} answers/s, {pieces:.1f} streamed pieces an answer; "
        "latency (queue included) "
        f"p50 {percentile(latencies, 50):.3f} s, p95 {percentile(latencies, 95):.3f} s, max {max(latencies):.3f} s"
    )
    return rate if len(answered) == expected else None


def cpu_report(label: str, before: dict[str, float], after: dict[str, float], answers: int, wall: float) -> None:
    """CPU time per answer of the app process, its children (the engine core) and the clients (this process), and how
    many cores each kept busy."""
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    parts = ", ".join(
        f"{name} {1000 * v / answers:.1f} ms ({v / wall:.2f} cores)" for name, v in spent.items() if v > 0
    )
    print(f"{label}CPU per answer: {parts}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [(n, r) for r in range(args.rounds if args.compare else 1) for n in args.counts]
    with tempfile.TemporaryDirectory(prefix="eve-load-") as tmp:
        tmp = Path(tmp)
        data_dir = args.data_dir or tmp / "app-data"
        demo = process = None
        pid = args.pid
        storage: ConversationStore | None = None
        if args.url:
            url = args.url
            storage = (
                ConversationStore(Database(args.db_url, data_dir=args.data_dir))
                if args.data_dir or args.db_url
                else None
            )
        elif args.python:
            print(f"starting the app ({args.backend or 'transformers'}) on {args.python} ...", flush=True)
            url, process = start_app_process(args.python, args.model, data_dir, args.backend, tmp / "app.log")
            storage = ConversationStore(Database(None, data_dir=data_dir))
            pid = process.pid
        else:
            url, demo, storage = start_app(args.model, data_dir, args.backend)
        try:
            before = {c["id"] for c in storage.list_conversations(limit=10_000)} if storage else set()
            print(
                f"/answer over {args.client}, {args.per_run} requests a run, max {args.max_new_tokens} new tokens, "
                f"against {url}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
            )
            # A first run of the largest count, not timed: the engine compiles and caches what the others then use.
            seen: set[str] = set()
            warm = make_images(tmp, max(args.counts), offset=100_000, seen=seen)
            run_load(url, args.client, warm, max(args.counts), args.max_new_tokens, args.timeout)
            all_results: list[Result] = []
            rates: dict[int, list[float]] = {n: [] for n in args.counts}
            ok = True
            for index, (clients, round_) in enumerate(runs):
                images = make_images(tmp, args.per_run, offset=index * args.per_run, seen=seen)
                label = f"[round {round_ + 1}, {clients} client{'s' if clients > 1 else ''}] "
                cpu_before = process_cpu(pid) if pid else {}
                client_before = process_cpu(os.getpid())["app"]
                results, wall = run_load(url, args.client, images, clients, args.max_new_tokens, args.timeout)
                rate = report(results, args.per_run, wall, label)
                if pid:
                    cpu_after = process_cpu(pid)
                    cpu_after["clients"] = process_cpu(os.getpid())["app"]
                    cpu_report(label, {**cpu_before, "clients": client_before}, cpu_after, len(results) or 1, wall)
                ok = ok and rate is not None
                if rate is not None:
                    rates[clients].append(rate)
                all_results.extend(results)
            if args.compare and all(rates.values()):
                first, last = args.counts[0], args.counts[-1]
                ratios = [b / a for a, b in zip(rates[first], rates[last])]
                print(
                    f"\n{last} clients vs {first}: answers/s ratio per round "
                    f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x "
                    f"({statistics.median(rates[last]):.2f} vs {statistics.median(rates[first]):.2f} answers/s)"
                )
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            total = len(runs) * args.per_run
            if storage is None:
                print("database: not checked (pass the app's --data-dir or --db-url)")
                return 0 if ok else 1
            answered = [r for r in all_results if r.error is None]
            problems, durations = check_database(storage, before, answered)
            # The warm-up's conversations are new too; they are matched by image, so they do not count here.
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
            if process is not None:
                process.terminate()
                process.wait(60)


if __name__ == "__main__":
    sys.exit(main())

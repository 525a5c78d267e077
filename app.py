"""Starts the EVEv2 demo: parse settings, load the model, open the log, build the UI, launch.

python app.py                                   # the project's small model, CPU, http://127.0.0.1:7860
python app.py --model BAAI/EVE-7B-HD-v2.0 --device cuda --quantization 4bit
"""

import gc
import importlib.util
import logging
import os
import sys

import gradio as gr
from starlette.middleware import Middleware

from eve_app.context import AppContext, make_context
from eve_app.jobs import JobRunner
from eve_app.limits.chat import cap_allocator_arenas
from eve_app.limits.raw_requests import EventGuard, UploadQuota
from eve_app.serving import load_engine
from eve_app.settings import MIB, SECRET_FILE, parse_settings
from eve_app.storage import ConversationStore, Database, JobStore
from eve_app.ui import CSS, HIDE_SHARE, build_app
from eve_app.ui.sessions import lean_sessions

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue recomputes a summary of its last 10,000 events (a pandas table, behind /monitoring/summary) after
# every event by default: 1.5 ms an event on a fresh app, 10 ms once 10,000 events are kept. Every 1,000 events is
# fresh enough for a dashboard (docs/benchmarks.md, many visitors).
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")


def skip_missing_matplotlib() -> None:
    """Gradio tries `import matplotlib` before and after every event (to switch its backend); without matplotlib
    installed (neither environment has it) each try searches the whole import path again, about 0.7 ms of the
    event's CPU. A `None` in `sys.modules` makes the import fail at once, as Python documents; `find_spec` then
    answers None, so nothing else is misled."""
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def create_app(argv: list[str] | None = None) -> tuple[gr.Blocks, AppContext]:
    settings = parse_settings(argv)
    skip_missing_matplotlib()
    cap_allocator_arenas()  # freed image buffers go back to a shared pool instead of one per worker thread
    engine = load_engine(settings)  # --backend transformers (default) | vllm, or --api-base URL
    database = Database(settings.db_url, data_dir=settings.data_dir)
    ConversationStore(database).recover_interrupted()  # answers a crash cut off: "interrupted", partial text kept
    runner = JobRunner(JobStore(database), settings.data_dir)
    runner.recover()  # jobs that ran while the app was down: re-attach the live ones, close the dead ones
    runner.start_monitor()
    ctx = make_context(settings, engine, database, runner)
    ctx.uploads.sweep(runner.upload_dirs_in_use())  # validated uploads left from before, once they are old
    ctx.uploads.start_sweeper(runner.upload_dirs_in_use)
    demo = build_app(ctx)
    lean_sessions(demo)  # a new visitor's session holds a few KB instead of a copy of the whole page's config
    # What start-up built (libraries, model, UI) lives as long as the app. Python's full collection walks every live
    # object and holds the GIL while it does: here 0.2-0.35 s, a stall for every request in flight, every few dozen
    # requests. Frozen, those objects are never walked again (a model swapped out later is still freed: nothing in
    # it is held by a reference cycle, so reference counting frees it).
    gc.collect()
    gc.freeze()
    return demo, ctx


def launch_options(ctx: AppContext) -> dict:
    """What Gradio may serve and accept: of the data folder only the stored chat images (content-addressed), never
    the database, its journal, runs, uploads or the secret; uploads no larger than the largest limit, within each
    visitor's hourly budget and the disk's free space; event requests of bounded size that name only files uploaded
    to the cache. Also sets which proxies uvicorn believes (`trust_proxies`), since `launch` has no parameter for it."""
    settings = ctx.settings
    trust_proxies(settings.trusted_proxies)
    data = settings.data_dir.resolve()
    blocked = [data / name for name in ("eve.db", "eve.db-wal", "eve.db-shm", "runs", "uploads", SECRET_FILE)]
    return {
        "allowed_paths": [str(data / "images")],
        "blocked_paths": [str(path) for path in blocked],
        "max_file_size": settings.max_file_bytes,
        "state_session_capacity": settings.max_sessions,
        "app_kwargs": {
            "middleware": [
                Middleware(UploadQuota, budget=ctx.upload_budget),
                Middleware(
                    EventGuard,
                    max_bytes=int(settings.max_request_mb * MIB),
                    upload_folder=ctx.upload_budget.cache_dir,
                ),
            ]
        },
        # Sharing a message to the Hub's discussions works only on a Space; elsewhere its button only errors.
        "css": CSS if settings.on_spaces else CSS + HIDE_SHARE,
    }


def trust_proxies(proxies: str) -> None:
    """Let uvicorn take the client's address from `X-Forwarded-For` only on requests from `proxies`.

    uvicorn's default trusts the header from loopback peers, so behind a local tunnel, or for anyone on the machine,
    the header (which the caller writes) chose the address that quotas and the admin lock-out count on. Gradio's
    `launch` passes no `forwarded_allow_ips`, and uvicorn reads FORWARDED_ALLOW_IPS when it is not given; an empty
    value trusts no peer.
    """
    os.environ["FORWARDED_ALLOW_IPS"] = proxies.strip()
    if os.environ.get("SPACE_ID") and not proxies.strip():
        logging.getLogger("eve_app").warning(
            "No --trusted-proxies on a Space: every visitor counts as the Space proxy's address (one shared upload "
            "quota and admin lock-out). Set EVE_TRUSTED_PROXIES to the proxy's network; see the README."
        )


if __name__ == "__main__":
    # One line per refused request (eve_app.refused), job and startup messages; tracebacks only for real failures.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    demo, ctx = create_app()
    settings = ctx.settings
    demo.launch(server_name=settings.host, server_port=settings.port, **launch_options(ctx))

"""Shared by the end-to-end tests: which model they run, and a free local port."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from eve_app.settings import DEFAULT_MODEL
from model.shared import PROJECT_ROOT

# The e2e tests run the shipped default model; EVE_TEST_MODEL points them at another checkpoint while developing.
MODEL = os.environ.get("EVE_TEST_MODEL", DEFAULT_MODEL)


def streamed(job: Any, timeout: float = 300.0) -> Iterator[Any]:
    """A gradio_client job's outputs as they arrive. The job's own iterator spins forever once the job has failed (a
    refused upload, say); this one raises the job's error, or TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        done = job.done()  # read before the outputs, so that none arriving in between is missed
        outputs = job.outputs()
        yield from outputs[seen:]
        seen = len(outputs)
        if done:
            error = job.exception()
            if error is not None:
                raise error
            return
        if time.monotonic() > deadline:
            job.cancel()
            raise TimeoutError(f"no end to the job after {timeout:g} s")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    args: list[str],
    port: int,
    timeout: float = 120,
    env: dict[str, str | None] | None = None,
    python: str = sys.executable,
    output: Path | None = None,
) -> subprocess.Popen:
    """`python app.py ARGS --port PORT` in a process of its own (to kill it, or to measure its memory alone), with
    `env` added to the environment (a None value leaves that variable out) and `python` another environment's interpreter if need be (the vLLM backend's);
    `output`: a file that receives its console (stdout and stderr). Returns once it answers HTTP."""
    merged = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    env = {key: value for key, value in merged.items() if value is not None}  # None: leave the variable out
    console = output.open("wb") if output is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [python, "app.py", *args, "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=console,
        stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the app exited while starting")
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not start in {timeout:g} s")


def peak_rss_growth(action, pid: int | str = "self") -> int:
    """Bytes a process's peak resident memory rose above its size before `action` ran (Linux: /proc)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size

    def status(field: str) -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1]) * 1024

    before = status("VmRSS:")
    action()
    return status("VmHWM:") - before

"""A finished job's results: the base and the tuned model answer held-out rows, side by side.

The answering runs as its own process (`python -m model.evaluation.compare`, in a session of its own like a job), so
the web server loads no model for it and a restart does not stop it. It writes `results.json` and `predictions.jsonl`
into the job's run folder; `results.log` holds its output, and `results.pid` says that it runs. No torch here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from .command import JobConfig
from .process import is_job_alive, reap
from .progress import stage_outputs, tail

RESULTS_FILE = "results.json"  # written by model.evaluation.compare (same names)
PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_LOG = "results.log"
RESULTS_PID = "results.pid"
ROWS = 16  # held-out rows answered by each model
COMPARE_MODULE = "model.evaluation.compare"


def results_command(config: JobConfig, run_dir: Path) -> list[str]:
    """The comparison of the job's base with its final model on the job's held-out rows (or training rows)."""
    tuned = stage_outputs(config)[-1][1]
    argv = [sys.executable, "-m", COMPARE_MODULE, "--base", config.base, "--tuned", str(tuned)]
    argv += ["--data", config.data, "--eval-split", str(config.eval_split), "--seed", str(config.seed)]
    if config.image_folder:
        argv += ["--image-folder", config.image_folder]
    argv += ["--device", "cuda" if config.gpus else "cpu"]  # where the job trained
    return [*argv, "--rows", str(ROWS), "--out", str(run_dir)]


def start_results(config: JobConfig, run_dir: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Starts the comparison in the background (previous results are replaced when it ends)."""
    with (run_dir / RESULTS_LOG).open("wb") as log:
        proc = subprocess.Popen(
            results_command(config, run_dir),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (run_dir / RESULTS_PID).write_text(f"{proc.pid}\n")
    return proc


def results_running(run_dir: Path) -> bool:
    """Whether a comparison of this job is answering right now (also one started before an app restart)."""
    try:
        pid = int((run_dir / RESULTS_PID).read_text())
    except (OSError, ValueError):
        return False
    reap(pid)  # ours and ended: collect it, so that it is not taken for alive
    if is_job_alive(pid, COMPARE_MODULE):
        return True
    (run_dir / RESULTS_PID).unlink(missing_ok=True)
    return False


def read_results(run_dir: Path) -> dict:
    """{"state": "none" | "running" | "done" | "failed", "results", "rows", "error"} of a job's comparison."""
    state: dict = {"state": "none", "results": None, "rows": [], "error": None}
    if results_running(run_dir):
        state["state"] = "running"
    try:
        state["results"] = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
        lines = (run_dir / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
        state["rows"] = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError):
        state["results"], state["rows"] = None, []
    if state["state"] == "none":
        if state["results"] is not None:
            state["state"] = "done"
        elif (run_dir / RESULTS_LOG).exists():
            state["state"], state["error"] = "failed", tail(run_dir / RESULTS_LOG, 5)
    return state


def results_key(run_dir: Path) -> str:
    """Changes whenever what `read_results` returns may have changed (the page redraws the table only then)."""
    parts = []
    for name in (RESULTS_FILE, RESULTS_LOG, RESULTS_PID):
        try:
            parts.append(str(os.stat(run_dir / name).st_mtime_ns))
        except OSError:
            parts.append("-")
    return f"{run_dir}:{'/'.join(parts)}"

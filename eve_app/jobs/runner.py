"""`JobRunner`: queue, start, watch and abort fine-tuning jobs; their state lives in storage, not in this object.

    runner = JobRunner(JobStore(database), data_dir="data")
    runner.recover()                 # at app start: re-attach to jobs that kept running, close the dead ones
    runner.start_monitor()           # a daemon thread calls poll() every few seconds
    job_id = runner.submit(JobConfig(base="ckpt", data="train.json", max_steps=100))
    runner.progress(job_id)          # step, total, fraction, eta, losses, last checkpoint ...
    runner.abort(job_id)             # SIGTERM (checkpoint) then SIGKILL for the whole process group

A job is the training CLI started with an argument list (no shell) from the project root, in a session of its own,
with its output in `<data_dir>/runs/job-<id>/` (`job.json`, `command.txt`, `train.log`, `out/`). Nothing ties it
to a browser tab or to the web server: closing the page changes nothing, and after a restart `recover()` finds the
job by its pid. No gradio, no torch here: the UI calls these methods from its handlers and timers.
"""

import dataclasses
import logging
import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

from model.shared import PROJECT_ROOT

from ..storage import JobStore
from .command import ConfigError, JobConfig, build_command, config_problems
from .process import is_job_alive, kill_group, reap, request_stop, stop_group
from .progress import checkpoints, error_line, final_event, finished, loss_rows, run_progress, stage_outputs, tail
from .results import read_results, results_running, start_results

logger = logging.getLogger(__name__)

LOG_FILE = "train.log"
ABORT_MARKER = "ABORTED"  # written before signalling, so every reader (even after a restart) knows it was wanted
KILLED_MARKER = "KILLED"  # an abort that had to SIGKILL the job: why
SECRET_VARIABLES = ("EVE_ADMIN_PASSWORD", "EVE_SECRET")  # never handed to a job's processes
RESTARTED = "the app restarted while the job ran and its process is gone"
ERROR_LINES = 30


class JobRunner:
    """Runs at most `max_concurrent` jobs at a time; the others wait in storage with status "queued".

    Args:
        jobs: the job table (`eve_app.storage.JobStore`).
        data_dir: run folders go to `<data_dir>/runs/`.
        project_root: where the command starts (the accelerate config paths are relative to it).
    """

    def __init__(
        self, jobs: JobStore, data_dir: str | Path, max_concurrent: int = 1, project_root: Path = PROJECT_ROOT
    ):
        self.jobs = jobs
        self.runs_dir = Path(data_dir).resolve() / "runs"
        self.max_concurrent = max_concurrent
        self.project_root = Path(project_root)
        self._procs: dict[int, subprocess.Popen] = {}  # jobs this object started; others are watched by pid
        self._stopping: dict[int, tuple[float, set[int]]] = {}  # aborted jobs still exiting: deadline, signalled
        self._comparisons: dict[int, subprocess.Popen] = {}  # results being computed, collected when they end
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_dir(self, job_id: int) -> Path:
        return self.runs_dir / f"job-{job_id}"

    def stopping(self, job: dict) -> bool:
        """A running job that was asked to stop (its trainer is saving a checkpoint and exiting)."""
        return job["status"] == "running" and bool(job["run_dir"]) and Path(job["run_dir"], ABORT_MARKER).exists()

    def config(self, job_id: int) -> JobConfig:
        return JobConfig.from_dict(self.jobs.get_job(job_id)["args"])

    # Submitting and starting

    def submit(self, config: JobConfig, start: bool = True) -> int:
        """Queue a job and start it if its turn has come; its run folder gets `job.json` and `command.txt`.

        Returns the job id.

        Raises:
            ConfigError: the settings cannot run (nothing is recorded then).
        """
        problems = config_problems(config)
        if problems:
            raise ConfigError("; ".join(problems))
        config = _with_absolute_paths(config)
        with self._lock:
            job_id = self.jobs.create_job(dataclasses.asdict(config))
            run_dir = self.run_dir(job_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            config.output_dir = config.output_dir or str(run_dir / "out")
            argv = build_command(config)
            config.save(run_dir / "job.json")
            (run_dir / "command.txt").write_text(f"# run from {self.project_root}\n{shlex.join(argv)}\n")
            self.jobs.update_job(job_id, args=dataclasses.asdict(config), run_dir=str(run_dir))
            if start:
                self.start_next()
        return job_id

    def start_next(self) -> list[int]:
        """Start queued jobs, oldest first, while fewer than `max_concurrent` run; returns the started ids."""
        started = []
        with self._lock:
            running = len(self.jobs.list_jobs("running"))
            for job in reversed(self.jobs.list_jobs("queued")):
                if running >= self.max_concurrent:
                    break
                if self._start(job):
                    started.append(job["id"])
                    running += 1
        return started

    def _start(self, job: dict) -> bool:
        run_dir = Path(job["run_dir"])
        try:
            argv = build_command(JobConfig.from_dict(job["args"]))
            with (run_dir / LOG_FILE).open("ab") as log:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.project_root,
                    env=self._child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (OSError, ConfigError) as error:
            self.jobs.update_job(job["id"], status="failed", error=f"the job could not start: {error}")
            return False
        self._procs[job["id"]] = proc
        self.jobs.update_job(job["id"], status="running", pid=proc.pid)
        logger.info("Job %d started (pid %d): %s", job["id"], proc.pid, shlex.join(argv))
        return True

    def _child_env(self) -> dict[str, str]:
        """The app's environment (OMP_NUM_THREADS, HF_HUB_OFFLINE, CUDA_VISIBLE_DEVICES ... pass through) without its
        secrets, plus the project on the import path and unbuffered output so the log is current."""
        path = os.pathsep.join(filter(None, [str(self.project_root), os.environ.get("PYTHONPATH")]))
        env = {key: value for key, value in os.environ.items() if key not in SECRET_VARIABLES}
        return {**env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def upload_dirs_in_use(self) -> set[Path]:
        """The upload folders that recorded jobs train on (kept when old uploads are swept)."""
        folders = set()
        for job in self.jobs.list_jobs():
            data = (job.get("args") or {}).get("data") if isinstance(job.get("args"), dict) else None
            if data:
                folders.add(Path(data).parent)
        return folders

    # Watching

    def poll(self) -> list[int]:
        """Close jobs whose process ended (done / failed / aborted), then start queued ones; returns closed ids."""
        closed = []
        with self._lock:
            for job in self.jobs.list_jobs("running"):
                self._follow_abort(job)
                if self._check(job):
                    closed.append(job["id"])
            for job_id, proc in list(self._comparisons.items()):
                if proc.poll() is not None:
                    del self._comparisons[job_id]
            self.start_next()
        return closed

    def _follow_abort(self, job: dict) -> None:
        """An abort in progress: signal trainers that appeared since (a pipeline's next stage); past the grace
        period, kill the group and say so."""
        if job["id"] not in self._stopping or not job["pid"]:
            return
        deadline, signalled = self._stopping[job["id"]]
        proc = self._procs.get(job["id"])
        if time.monotonic() < deadline:
            request_stop(job["pid"], signalled)
            return
        kill_group(job["pid"], collect=proc.poll if proc else lambda: reap(job["pid"]))
        self._stopping.pop(job["id"], None)
        stopped = run_progress(JobConfig.from_dict(job["args"]))["event"] == "stopped"
        saved = "after saving its checkpoint" if stopped else "before it saved a checkpoint"
        Path(job["run_dir"], KILLED_MARKER).write_text(
            f"the job did not exit within the grace period and was killed {saved}"
        )

    def recover(self) -> dict[str, list[int]]:
        """At app start: jobs marked running whose process is gone are closed (done if their metrics end with
        "done", else failed); live ones stay running and are watched by pid. Queued jobs wait for `poll()`."""
        report: dict[str, list[int]] = {"running": [], "closed": []}
        with self._lock:
            for job in self.jobs.list_jobs("running"):
                report["closed" if self._check(job) else "running"].append(job["id"])
        return report

    def _check(self, job: dict) -> bool:
        """Close the job if its process group has ended; True when it did.

        A job this object started has a Popen handle and a known exit status. One started before a restart is
        watched by pid: its status is only known if it is still our child, so its metrics decide.
        """
        proc, pid = self._procs.get(job["id"]), job["pid"]
        exit_code = proc.poll() if proc else (reap(pid) if pid else None)
        if pid and ((proc is not None and exit_code is None) or is_job_alive(pid)):
            return False
        if proc is None and pid and exit_code is None:
            exit_code = reap(pid)  # it may have ended between the two checks above
        self._procs.pop(job["id"], None)
        self._stopping.pop(job["id"], None)
        status, error = self._outcome(job, exit_code, unknown_exit=proc is None)
        self.jobs.update_job(job["id"], status=status, error=error, final_metrics=self._final_metrics(job))
        logger.info("Job %d %s", job["id"], status)
        if status == "done":  # every job ends by answering held-out rows with the base and the tuned model
            self.compare(job["id"])
        return True

    def _outcome(self, job: dict, exit_code: int | None, unknown_exit: bool) -> tuple[str, str | None]:
        config, run_dir = JobConfig.from_dict(job["args"]), Path(job["run_dir"])
        if (run_dir / ABORT_MARKER).exists():
            killed = run_dir / KILLED_MARKER
            return "aborted", killed.read_text() if killed.exists() else None
        if finished(config) and (exit_code == 0 or (unknown_exit and exit_code is None)):
            return "done", None
        log = tail(run_dir / LOG_FILE, ERROR_LINES)
        event = final_event(config)
        if event and event["event"] == "stopped" and exit_code in (0, None):
            saved = event.get("checkpoint")
            return "aborted", f"stopped by a signal from outside the app; last checkpoint: {saved}\n{log}".strip()
        cause = error_line(tail(run_dir / LOG_FILE, 400))
        headline = RESTARTED if exit_code is None else f"exit status {exit_code}" + (f": {cause}" if cause else "")
        return "failed", f"{headline}\n--- end of train.log ---\n{log}".strip()

    def _final_metrics(self, job: dict) -> dict:
        config = JobConfig.from_dict(job["args"])
        info = run_progress(config)
        info["model_path"] = str(stage_outputs(config)[-1][1]) if finished(config) else None
        return info

    # Results: the base and the tuned model on held-out rows

    def compare(self, job_id: int) -> bool:
        """Starts answering the job's held-out rows with its base and its final model (in the background); False
        when a comparison of it is already running. Raises ValueError for a job that has not finished."""
        job = self.jobs.get_job(job_id)
        if job["status"] != "done" or not job["run_dir"]:
            raise ValueError(f"job {job_id} has not finished, so it has no tuned model to compare")
        run_dir = Path(job["run_dir"])
        with self._lock:
            if results_running(run_dir):
                return False
            proc = start_results(JobConfig.from_dict(job["args"]), run_dir, self.project_root, self._child_env())
            self._comparisons[job_id] = proc
        logger.info("Job %d: comparing base and tuned answers (pid %d)", job_id, proc.pid)
        return True

    def results(self, job_id: int) -> dict:
        """The job's comparison: state ("none", "running", "done", "failed"), results, rows, error."""
        job = self.jobs.get_job(job_id)
        return read_results(Path(job["run_dir"])) if job["run_dir"] else read_results(self.run_dir(job_id))

    # Aborting

    def abort(self, job_id: int, grace: float = 5.0, wait: bool = True) -> dict:
        """Stop a job: a queued one never starts; a running one gets SIGTERM (it saves a checkpoint after the current
        step), and SIGKILL for its whole process group after `grace` seconds. Returns the updated job.

        `wait=False` (the UI) returns at once with the job still "running" and `stopping` set; `poll()` (the
        monitor thread) closes it as aborted when it exits, or kills it after the grace period.
        """
        with self._lock:
            job = self.jobs.get_job(job_id)
            if job["status"] == "queued":
                return self.jobs.update_job(job_id, status="aborted", error="aborted before it started")
            if job["status"] != "running":
                return job
            Path(job["run_dir"], ABORT_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
            if not wait and job["pid"]:
                signalled: set[int] = set()
                request_stop(job["pid"], signalled)
                self._stopping[job_id] = (time.monotonic() + grace, signalled)
                return {**job, "stopping": True}
            proc, pid = self._procs.pop(job_id, None), job["pid"]
            stopped = stop_group(pid, grace, collect=proc.poll if proc else lambda: reap(pid)) if pid else True
            info = self._final_metrics(job)
            error = None
            if not stopped:
                saved = "after saving its checkpoint" if info["event"] == "stopped" else "before it saved a checkpoint"
                error = f"the job did not exit within {grace:g} s and was killed {saved}"
            return self.jobs.update_job(job_id, status="aborted", final_metrics=info, error=error)

    # Reading (no locks needed: files and storage only)

    def progress(self, job_id: int) -> dict:
        """What the progress bar needs: step, total, fraction, eta_s, loss, eval_loss, status, checkpoint (the last
        complete one), checkpoints, model_path (when done), error, and a one-line `label`."""
        job = self.jobs.get_job(job_id)
        config = JobConfig.from_dict(job["args"])
        info = run_progress(config)
        done = job["status"] == "done"
        info.update(
            job_id=job_id,
            status=job["status"],
            error=job["error"],
            run_dir=job["run_dir"],
            model_path=str(stage_outputs(config)[-1][1]) if done else None,
            checkpoints=[str(p) for _, folder in stage_outputs(config) for p in checkpoints(folder)],
        )
        info["label"] = _label(info)
        return info

    def log_tail(self, job_id: int, lines: int = 50) -> str:
        """The end of the job's log (stdout and stderr of every process)."""
        return tail(self.run_dir(job_id) / LOG_FILE, lines)

    def loss_series(self, job_id: int) -> list[dict]:
        """Rows `{"step", "value", "series": "train" | "eval", "stage"}`, ready for `pandas.DataFrame(rows)`."""
        return loss_rows(self.config(job_id))

    # Background polling

    def start_monitor(self, interval: float = 2.0) -> None:
        """Poll in a daemon thread, so jobs are closed and queued ones started whether or not a page is open."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(interval,), name="eve-job-runner", daemon=True)
        self._thread.start()

    def stop_monitor(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # a database hiccup must not end the watching for good
                logger.exception("Polling fine-tuning jobs failed")


def _with_absolute_paths(config: JobConfig) -> JobConfig:
    """Local paths made absolute, because the job starts in the project root, not in the app's folder."""
    config = dataclasses.replace(config)
    for name in ("base", "data", "image_folder", "resume", "output_dir"):
        value = getattr(config, name)
        if value and (name == "output_dir" or Path(value).exists()):
            setattr(config, name, str(Path(value).resolve()))
    return config


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _label(info: dict) -> str:
    """E.g. "running, stage 3 (1/1): step 40/100, 01:10 elapsed, 01:45 left, loss 1.234"."""
    text = f"{info['status']}, stage {info['stage']} ({info['stage_index'] + 1}/{info['stages']})"
    if info["total"]:
        text += f": step {info['step']}/{info['total']}, {_format_seconds(info['elapsed_s'])} elapsed"
        text += f", {_format_seconds(info['eta_s'])} left" if info["status"] == "running" else ""
    if info["loss"] is not None:
        text += f", loss {info['loss']:.4f}"
    if info["eval_loss"] is not None:
        text += f", eval loss {info['eval_loss']:.4f}"
    return text

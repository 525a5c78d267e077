"""The job runner with real training processes on the tiny checkpoint: done, abort, queue, and app restarts.

Every job is `accelerate launch ... -m model.train` on a 4-sample dataset, so each test takes seconds (most of it
is Python and torch starting up). Run with OMP_NUM_THREADS=1 on small machines.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from eve_app.jobs import ConfigError, JobConfig, JobRunner
from eve_app.jobs.process import group_members, runs_module, stop_group, trainer_pids
from eve_app.jobs.runner import RESTARTED
from eve_app.storage import Database, JobStore

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-group checks read /proc")
TIMEOUT = 90


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(4):
        Image.new("RGB", (40 + 8 * i, 32), (60 * i, 20, 0)).save(folder / "images" / f"{i}.png")
        rows.append(
            {
                "id": str(i),
                "image": f"images/{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nwhat is written here?"},
                    {"from": "gpt", "value": "the red sign reads hello"},
                ],
            }
        )
    (folder / "data.json").write_text(json.dumps(rows))
    return folder / "data.json"


@pytest.fixture
def storage(tmp_path):
    store = JobStore(Database(data_dir=tmp_path / "app"))
    yield store
    store.database.close()


@pytest.fixture
def runner(storage, tmp_path):
    runner = JobRunner(storage, tmp_path / "app")
    yield runner
    for job in storage.list_jobs("running"):  # never leave a training process behind
        runner.abort(job["id"], grace=1)


def job_config(tiny_checkpoint: Path, dataset: Path, steps: int, **fields) -> JobConfig:
    return JobConfig(base=str(tiny_checkpoint), data=str(dataset), stage="3", max_steps=steps, batch_size=1, **fields)


def wait_for(condition, runner: JobRunner, timeout: float = TIMEOUT, poll: bool = True):
    """Poll the runner (as the monitor thread would) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll:
            runner.poll()
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s")


def assert_group_gone(pgid: int) -> None:
    """No live process is left in the job's group (a zombie waiting to be reaped is not a process that runs)."""
    assert group_members(pgid) == {}, f"process group {pgid} still has processes: {group_members(pgid)}"


@pytest.fixture
def cpu_burner():
    """Both cores busy for the test's duration, as on a loaded server: aborts must keep their promise anyway."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


@pytest.mark.slow  # runs a training job
def test_tiny_fine_tune_runs_to_done(runner, storage, tiny_checkpoint, dataset):
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 3))
    run_dir = runner.run_dir(job_id)
    assert JobConfig.load(run_dir / "job.json").output_dir == str(run_dir / "out")
    assert "-m model.train" in (run_dir / "command.txt").read_text()
    assert storage.get_job(job_id)["status"] == "running"
    runner.start_monitor(interval=0.2)  # the app's background thread closes the job; no page polls here
    try:
        wait_for(lambda: storage.get_job(job_id)["status"] != "running", runner, poll=False)
    finally:
        runner.stop_monitor()
    job = storage.get_job(job_id)
    assert job["status"] == "done", job["error"]
    progress = runner.progress(job_id)
    assert (progress["step"], progress["total"], progress["fraction"], progress["eta_s"]) == (3, 3, 1.0, 0.0)
    assert progress["loss"] > 0 and Path(progress["model_path"], "config.json").is_file()
    assert job["final_metrics"]["model_path"] == progress["model_path"]
    series = runner.loss_series(job_id)
    assert [(r["step"], r["series"]) for r in series] == [(1, "train"), (2, "train"), (3, "train")]
    assert "Done: 3 steps" in runner.log_tail(job_id, lines=20)
    assert_group_gone(job["pid"])


@pytest.mark.slow  # runs a training job
def test_abort_stops_the_whole_group_and_keeps_the_checkpoint(runner, storage, tiny_checkpoint, dataset, cpu_burner):
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 100_000, save_every=1))
    wait_for(lambda: runner.progress(job_id)["checkpoint"], runner)
    pgid = storage.get_job(job_id)["pid"]
    assert trainer_pids(pgid)  # the training process runs under accelerate's launcher, in the job's group
    job = runner.abort(job_id, grace=60.0)  # returns once the group has ended (on its own, or killed after 60 s)
    assert_group_gone(pgid)
    assert job["status"] == "aborted" and storage.get_job(job_id)["status"] == "aborted"
    assert job["error"] is None, job["error"]  # a clean stop is reported as one, not as a forced kill
    progress = runner.progress(job_id)
    assert progress["event"] == "stopped"  # SIGTERM reached the trainer, which stopped cleanly
    assert Path(progress["checkpoint"], "trainer_state.json").is_file()
    assert progress["checkpoint"] in progress["checkpoints"]
    assert job["final_metrics"]["checkpoint"] == progress["checkpoint"]
    runner.poll()  # a later poll leaves the aborted job alone
    assert storage.get_job(job_id)["status"] == "aborted"


@pytest.mark.slow  # runs a training job
def test_second_job_waits_for_the_first(runner, storage, tiny_checkpoint, dataset):
    first = runner.submit(job_config(tiny_checkpoint, dataset, 2))
    second = runner.submit(job_config(tiny_checkpoint, dataset, 100_000))
    assert storage.get_job(first)["status"] == "running"
    assert storage.get_job(second)["status"] == "queued"
    assert runner.progress(second)["step"] == 0
    wait_for(lambda: storage.get_job(first)["status"] == "done", runner)
    assert storage.get_job(second)["status"] == "running"  # the same poll started it
    assert storage.get_job(second)["started_at"] >= storage.get_job(first)["finished_at"]
    assert runner.abort(second, grace=2)["status"] == "aborted"


def test_queued_job_can_be_aborted_before_it_starts(runner, storage, tiny_checkpoint, dataset):
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 2), start=False)
    assert runner.abort(job_id)["status"] == "aborted"
    runner.start_next()
    assert storage.get_job(job_id)["pid"] is None and not (runner.run_dir(job_id) / "train.log").exists()


@pytest.mark.slow  # runs a training job
def test_running_job_survives_an_app_restart(storage, tmp_path, tiny_checkpoint, dataset, cpu_burner):
    old = JobRunner(storage, tmp_path / "app")
    job_id = old.submit(job_config(tiny_checkpoint, dataset, 100_000, save_every=0))
    pgid = storage.get_job(job_id)["pid"]
    del old  # the web server goes away; the job, in its own session, does not

    runner = JobRunner(storage, tmp_path / "app")
    assert runner.recover() == {"running": [job_id], "closed": []}
    wait_for(lambda: runner.progress(job_id)["points"] >= 1, runner)
    assert storage.get_job(job_id)["status"] == "running"
    job = runner.abort(job_id, grace=60.0)
    assert_group_gone(pgid)
    assert job["status"] == "aborted" and storage.get_job(job_id)["status"] == "aborted"


def test_recover_closes_jobs_whose_process_is_gone(runner, storage, tiny_checkpoint, dataset):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    lost = runner.submit(job_config(tiny_checkpoint, dataset, 5), start=False)
    finished = runner.submit(job_config(tiny_checkpoint, dataset, 5), start=False)
    reused = runner.submit(job_config(tiny_checkpoint, dataset, 5), start=False)
    out = Path(runner.config(finished).output_dir)
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "total_steps": 5, "loss": 1.0})
        + "\n"
        + json.dumps({"event": "done", "step": 5, "total_steps": 5})
        + "\n"
    )
    storage.update_job(lost, status="running", pid=dead_pid)
    storage.update_job(finished, status="running", pid=dead_pid)
    storage.update_job(reused, status="running", pid=os.getpid())  # a live pid that is not a training job
    assert runner.recover() == {"running": [], "closed": [reused, finished, lost]}
    assert storage.get_job(lost)["status"] == "failed" and RESTARTED in storage.get_job(lost)["error"]
    assert storage.get_job(reused)["status"] == "failed"
    assert storage.get_job(finished)["status"] == "done"
    assert runner.progress(finished)["model_path"] == str(out)


@pytest.mark.slow  # runs a training job
def test_failed_job_reports_the_log_tail(runner, storage, tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")  # the trainer refuses a dataset without training samples
    job_id = runner.submit(JobConfig(base=str(tiny_checkpoint), data=str(bad), max_steps=2))
    wait_for(lambda: storage.get_job(job_id)["status"] != "running", runner)
    job = storage.get_job(job_id)
    assert job["status"] == "failed"
    # The first line names the trainer's own error, not the launcher's echo of it.
    cause = "ValueError: --eval-split leaves no training data (0 samples)"
    assert job["error"].splitlines()[0] == f"exit status 1: {cause}"
    assert "end of train.log" in job["error"]


def test_invalid_settings_create_no_job(runner, storage, tiny_checkpoint, dataset):
    with pytest.raises(ConfigError, match="needs GPUs"):
        runner.submit(job_config(tiny_checkpoint, dataset, 2, strategy="fsdp"))
    assert storage.list_jobs() == []


def test_pipeline_progress_spans_the_stages(runner, tiny_checkpoint, dataset):
    """A pipeline writes one metrics file per stage; progress and the loss plot read them as one job."""
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 4, stages=["2.1", "3"]), start=False)
    out = Path(runner.config(job_id).output_dir)
    lines = [{"step": s, "total_steps": 4, "loss": 2.0 / s, "remaining_s": 4 - s} for s in (1, 2, 3, 4)]
    lines[-1]["eval_loss"] = 0.9
    (out / "stage-2.1").mkdir(parents=True)
    (out / "stage-2.1" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*lines, {"event": "done", "step": 4, "total_steps": 4}])
    )
    progress = runner.progress(job_id)
    assert (progress["stage"], progress["stage_index"], progress["step"], progress["fraction"]) == ("3", 1, 0, 0.5)
    (out / "stage-3").mkdir()
    (out / "stage-3" / "metrics.jsonl").write_text(json.dumps(lines[0]) + "\n" + '{"step": 2, "tot')  # mid-write
    progress = runner.progress(job_id)
    assert (progress["stage"], progress["step"], progress["total"], progress["fraction"]) == ("3", 1, 4, 0.625)
    assert progress["label"].startswith("queued, stage 3 (2/2): step 1/4")
    rows = runner.loss_series(job_id)
    assert [(r["step"], r["series"], r["stage"]) for r in rows] == [
        (1, "train", "2.1"),
        (2, "train", "2.1"),
        (3, "train", "2.1"),
        (4, "train", "2.1"),
        (4, "eval", "2.1"),
        (5, "train", "3"),
    ]


def test_trainers_are_told_from_launchers():
    """SIGTERM goes to processes that run the trainer, not to launchers that pass `-m model.train` on."""
    py = sys.executable
    assert runs_module([py, "-m", "model.train", "--base", "x"])
    assert runs_module([py, "-u", "-m", "model.train"])  # torchrun's workers
    assert not runs_module([py, "-m", "accelerate.commands.launch", "--config_file", "c.yaml", "-m", "model.train"])
    assert not runs_module([py, "/venv/bin/accelerate", "launch", "-m", "model.train"])
    assert not runs_module([py, "-m", "model.train.pipeline", "--stages", "3"])


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    """SIGTERM first; a group that ignores it (the leader and the child it started) gets SIGKILL, all of it, and
    `stop_group` says the job had to be killed. The signals are recorded as they are sent, and really sent."""
    ready = tmp_path / "ready"
    ignore = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ready)!r}, 'a').write('.'); "
    )
    child = ignore + "time.sleep(60)"
    leader = ignore + f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", leader], start_new_session=True)
    deadline = time.monotonic() + 30
    while (not ready.exists() or len(ready.read_text()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)  # both ignore SIGTERM from here on
    sent: list[tuple[int, int]] = []
    killpg = os.killpg

    def recorded_killpg(pgid: int, sig: int) -> None:
        sent.append((pgid, sig))
        killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", recorded_killpg)
    assert stop_group(proc.pid, grace=1.0, collect=proc.poll) is False
    assert sent == [(proc.pid, signal.SIGTERM), (proc.pid, signal.SIGKILL)]
    assert_group_gone(proc.pid)  # stop_group returns only once the group is empty
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # runs a training job
def test_an_abort_from_the_page_returns_at_once_and_the_monitor_closes_the_job(
    runner, storage, tiny_checkpoint, dataset
):
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 100_000, save_every=1))
    wait_for(lambda: runner.progress(job_id)["checkpoint"], runner)
    job = runner.abort(job_id, grace=60.0, wait=False)
    assert job["stopping"] and runner.stopping(storage.get_job(job_id))  # the table can say "stopping…" now
    closed = wait_for(lambda: storage.get_job(job_id)["status"] == "aborted", runner)
    assert closed and storage.get_job(job_id)["error"] is None  # the trainer saved and exited: a clean stop
    assert_group_gone(job["pid"])
    assert runner.progress(job_id)["event"] == "stopped"


@pytest.mark.slow  # runs a training job
def test_an_abort_that_outlasts_its_grace_period_kills_the_job_and_says_so(runner, storage, tiny_checkpoint, dataset):
    job_id = runner.submit(job_config(tiny_checkpoint, dataset, 100_000, save_every=1))
    wait_for(lambda: runner.progress(job_id)["checkpoint"], runner)
    pid = storage.get_job(job_id)["pid"]
    for trainer in trainer_pids(pid):
        os.kill(trainer, signal.SIGSTOP)  # a trainer that cannot react to SIGTERM
    runner.abort(job_id, grace=0.5, wait=False)
    wait_for(lambda: storage.get_job(job_id)["status"] == "aborted", runner)
    assert "did not exit within the grace period and was killed" in storage.get_job(job_id)["error"]
    assert_group_gone(pid)

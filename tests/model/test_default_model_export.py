"""The default model's recipe plumbing: labelled stage folders, the card's stage summary, SIGTERM forwarding."""

import json
import os
import signal
import sys
import threading
import time

from model.train.export_default import last_finished_stage, stage_folder, trained_spread, training_summary
from model.train.pipeline import ForwardSignals


def _stage(work, name, finished, run_args, metrics):
    folder = stage_folder(work, name)
    folder.mkdir(parents=True)
    (folder / "run_args.json").write_text(json.dumps(run_args))
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    if finished:
        (folder / "trainer_state.json").write_text(json.dumps({"finished": True}))


def test_summary_reads_each_labelled_stage_and_its_run_args(tmp_path):
    _stage(
        tmp_path,
        "3",
        True,
        {"synthetic": ["ocr", "scene"], "synthetic_level": [0, 1], "lr": 1e-3},
        [{"step": 10, "loss": 2.0, "elapsed_s": 1800.0}, {"step": 20, "loss": 1.5, "eval_loss": 1.6}],
    )
    _stage(
        tmp_path,
        "3:read",
        False,
        {"synthetic": ["ocr"], "synthetic_level": [0], "lr": 5e-4, "placement_spread": [0.0, 1.0]},
        [{"step": 5, "loss": 1.2, "elapsed_s": 1800.0}],
    )
    assert stage_folder(tmp_path, "3:read") == tmp_path / "stages" / "stage-3-read"
    assert last_finished_stage(tmp_path, ["3", "3:read"]) == stage_folder(tmp_path, "3")  # 3:read is unfinished
    rows, hours = training_summary(tmp_path, ["3", "3:read"])
    assert [(r["stage"], r["data"], r["levels"], r["placement"], r["lr"], r["steps"]) for r in rows] == [
        ("3", "ocr,scene", "0,1", "1", 1e-3, 20),  # a run from before --placement-spread: text anywhere
        ("3:read", "ocr", "0", "0→1", 5e-4, 5),
    ]
    assert rows[0]["eval_loss"] == 1.6 and hours == 1.0
    # The export evaluates where the last stage placed text: the end of its ramp, or anywhere without one.
    assert (
        trained_spread(stage_folder(tmp_path, "3:read")) == 1.0 and trained_spread(stage_folder(tmp_path, "3")) == 1.0
    )
    _stage(tmp_path, "3:near", True, {"synthetic": ["ocr"], "placement_spread": [0.0, 0.5]}, [])
    assert trained_spread(stage_folder(tmp_path, "3:near")) == 0.5


CHILD = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path("got-sigterm").touch(), sys.exit(0)))
pathlib.Path("ready").touch()
time.sleep(30)
sys.exit(3)
"""


def test_forward_signals_passes_sigterm_to_the_child_running_in_its_folder(tmp_path):
    def terminate_when_ready():
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    signals = ForwardSignals()
    threading.Thread(target=terminate_when_ready, daemon=True).start()
    assert signals.run([sys.executable, "-c", CHILD], dict(os.environ), cwd=tmp_path) == 0
    assert signals.stopped and (tmp_path / "got-sigterm").exists()

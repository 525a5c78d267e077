"""Read a job's progress from its output folder: `metrics.jsonl`, checkpoints and the final model.

The training CLI writes one JSON line per logging step and a closing event (`done` or `stopped`); a pipeline writes
one such file per stage, in `OUTPUT/stage-NAME/`. The UI reads only these files (and the job's row in storage), so
progress survives a browser reload and an app restart. A line being written while we read is simply skipped.
"""

import json
import re
from pathlib import Path

from .command import JobConfig

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last in a checkpoint: a folder without it is an interrupted save
# An exception line ("ValueError: ...", "torch.OutOfMemoryError: ...") or an argparse error ("prog: error: ...").
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception)|.*: error): ")
# Launchers re-raise the trainer's failure with their own line, which names no cause.
LAUNCHER_ERRORS = ("CalledProcessError", "ChildFailedError")


def read_metrics(path: Path) -> list[dict]:
    """The complete JSON lines of a metrics file (none when it does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the trainer is writing this line right now
        if isinstance(record, dict):
            records.append(record)
    return records


def stage_outputs(config: JobConfig) -> list[tuple[str, Path]]:
    """(stage, output folder) of each run of the job, in order."""
    out = Path(config.output_dir or ".")
    if config.stages:
        return [(name, out / f"stage-{name}") for name in config.stages]
    return [(config.stage, out)]


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints of one run, oldest first."""
    found = [p for p in folder.glob(CHECKPOINT_PREFIX + "*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX) or 0))


def _steps(records: list[dict]) -> list[dict]:
    return [r for r in records if "event" not in r and "step" in r]


def final_event(config: JobConfig) -> dict | None:
    """The closing event of the job's last run that has one (None while nothing has closed)."""
    for _, folder in reversed(stage_outputs(config)):
        events = [r for r in read_metrics(folder / METRICS_FILE) if "event" in r]
        if events:
            return events[-1]
    return None


def finished(config: JobConfig) -> bool:
    """Whether the last stage wrote its `done` event (its final model is saved)."""
    _, folder = stage_outputs(config)[-1]
    events = [r for r in read_metrics(folder / METRICS_FILE) if "event" in r]
    return bool(events) and events[-1]["event"] == "done"


def run_progress(config: JobConfig) -> dict:
    """Step, total, fraction (over all stages), time left, last losses, stage and last checkpoint of a job.

    `eta_s` is the trainer's estimate for the current stage; later stages of a pipeline are not in it (their step
    counts are unknown until they start).
    """
    parts = stage_outputs(config)
    info = {
        "step": 0,
        "total": None,
        "fraction": 0.0,
        "eta_s": None,
        "elapsed_s": None,
        "epoch": None,
        "loss": None,
        "eval_loss": None,
        "lr": None,
        "stage": parts[0][0],
        "stage_index": 0,
        "stages": len(parts),
        "event": None,
        "points": 0,
        "checkpoint": None,
    }
    stage_fraction, index = 0.0, 0
    for index, (name, folder) in enumerate(parts):
        records = read_metrics(folder / METRICS_FILE)
        if not records and index > 0:  # the previous stage is done, this one has not logged yet
            info.update(
                stage=name,
                stage_index=index,
                step=0,
                total=None,
                eta_s=None,
                loss=None,
                eval_loss=None,
                event=None,
                points=0,
            )
            stage_fraction = 0.0
            break
        steps = _steps(records)
        last = steps[-1] if steps else {}
        evals = [r["eval_loss"] for r in steps if r.get("eval_loss") is not None]
        event = next((r for r in reversed(records) if "event" in r), None)
        total = last.get("total_steps") or (event or {}).get("total_steps")
        info.update(
            stage=name,
            stage_index=index,
            step=last.get("step", 0),
            total=total,
            loss=last.get("loss"),
            eta_s=last.get("remaining_s"),
            elapsed_s=last.get("elapsed_s"),
            epoch=last.get("epoch"),
            lr=last.get("lr"),
            eval_loss=evals[-1] if evals else None,
            points=len(steps),
            event=(event or {}).get("event"),
        )
        saved = checkpoints(folder)
        info["checkpoint"] = str(saved[-1]) if saved else (event or {}).get("checkpoint") or info["checkpoint"]
        done = info["event"] == "done"
        stage_fraction = 1.0 if done else (info["step"] / total if total else 0.0)
        if not done:
            break
    info["fraction"] = round(min((index + stage_fraction) / len(parts), 1.0), 4)
    if info["event"] == "done":
        info["eta_s"] = 0.0
    return info


def loss_rows(config: JobConfig) -> list[dict]:
    """Train and eval losses as rows `{"step", "value", "series", "stage"}` for a line plot.

    Steps of a pipeline's later stages continue from the earlier stages' totals, so one plot shows the whole job.
    """
    rows, offset = [], 0
    for name, folder in stage_outputs(config):
        steps = _steps(read_metrics(folder / METRICS_FILE))
        for r in steps:
            if r.get("loss") is not None:
                rows.append({"step": offset + r["step"], "value": r["loss"], "series": "train", "stage": name})
            if r.get("eval_loss") is not None:
                rows.append({"step": offset + r["step"], "value": r["eval_loss"], "series": "eval", "stage": name})
        if not steps:
            break
        offset += steps[-1].get("total_steps") or steps[-1]["step"]
    return rows


def tail(path: Path, lines: int = 50, max_bytes: int = 1 << 20) -> str:
    """The last lines of a log as a terminal would show them (progress bars redraw with carriage returns)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - max_bytes, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    while shown and not shown[-1].strip():
        shown.pop()
    return "\n".join(shown[-lines:])


def error_line(log: str) -> str | None:
    """The line that names why a run failed: the last exception or usage error that is not a launcher's echo."""
    found = [line.strip() for line in log.splitlines() if ERROR_LINE.match(line.strip())]
    causes = [line for line in found if not any(name in line.split(":")[0] for name in LAUNCHER_ERRORS)]
    lines = causes or found
    return lines[-1] if lines else None

"""`output_dir/metrics.jsonl`: one JSON line per logging step, which the fine-tune tab plots and reads progress from.

Step lines: `{"step", "total_steps", "epoch", "loss", "lr", "samples_per_s", "elapsed_s", "remaining_s"}` plus
`"eval_loss"` on steps that evaluated. The last line is an event: `{"event": "done", ...}` when the final model is
saved, `{"event": "stopped", "checkpoint", ...}` when a signal (or `--stop-at-step`) paused the run.
"""

import json
import time
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
STEP_KEYS = ("step", "total_steps", "epoch", "loss", "lr", "samples_per_s", "elapsed_s", "remaining_s")


class MetricsLog:
    """Appends metric lines; only the main process writes (`enabled`)."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.path = Path(output_dir) / METRICS_FILE
        self.enabled = enabled

    def start(self, resume_step: int | None) -> None:
        """A new run starts an empty file; a resumed one keeps the lines up to its checkpoint's step.

        Lines after that step came from training that the checkpoint does not hold, and are replayed.
        """
        if not self.enabled:
            return
        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                record = json.loads(line) if line.strip() else {}
                if "event" not in record and record.get("step", resume_step + 1) <= resume_step:
                    kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Clock:
    """Training time over all sessions of a run, throughput since the last mark, and time left."""

    def __init__(self, elapsed_before: float, start_step: int):
        self.elapsed_before = elapsed_before
        self.session_start = self.last_time = time.perf_counter()
        self.start_step = self.last_step = start_step

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start

    def mark(self, step: int, total_steps: int, samples_per_step: int) -> dict:
        """`samples_per_s` over the steps since the previous mark; `remaining_s` at this session's pace."""
        now = time.perf_counter()
        interval = max(now - self.last_time, 1e-9)
        samples_per_s = (step - self.last_step) * samples_per_step / interval
        per_step = (now - self.session_start) / max(step - self.start_step, 1)
        self.last_time, self.last_step = now, step
        return {
            "samples_per_s": round(samples_per_s, 3),
            "elapsed_s": round(self.elapsed, 2),
            "remaining_s": round(per_step * (total_steps - step), 2),
        }

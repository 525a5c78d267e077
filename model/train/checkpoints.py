"""Resumable checkpoints: `output_dir/checkpoint-STEP/` = accelerate's saved state + `trainer_state.json`.

`accelerator.save_state` stores the model, optimizer, learning-rate schedule and random-number states of every
process; `trainer_state.json` says where the run was (step, epoch, position in the data) and is written last, so a
checkpoint folder without it is an interrupted save and is ignored.
"""

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

from ..shared import FINETUNE_DEFAULTS_FILE

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
# Files beside the weights that a model trained from a checkpoint keeps: the tasks the app offers as presets and the
# fine-tuning defaults (a job started from a job's output trains the way the first one did).
CARRIED_FILES = ("tasks.json", FINETUNE_DEFAULTS_FILE)


def carry_base_files(base_folder: Path, output_dir: Path) -> list[str]:
    """Copies the base's `CARRIED_FILES` into `output_dir` where it has none yet; returns the names copied."""
    copied = []
    for name in CARRIED_FILES:
        if (base_folder / name).is_file() and not (output_dir / name).exists():
            shutil.copyfile(base_folder / name, output_dir / name)
            copied.append(name)
    return copied


@dataclass
class TrainerState:
    """Where a run is. `samples_seen` counts samples over all processes (the synthetic stream resumes there)."""

    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0  # 0 for an endless stream
    samples_seen: int = 0
    elapsed_s: float = 0.0  # training time over all sessions of the run
    stage: str = ""
    eval_loss: float | None = None

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch if self.steps_per_epoch else 0

    @property
    def step_in_epoch(self) -> int:
        return self.step % self.steps_per_epoch if self.steps_per_epoch else self.step

    @property
    def fractional_epoch(self) -> float:
        """Epochs done; for a stream, the fraction of the run done."""
        if self.steps_per_epoch:
            return self.step / self.steps_per_epoch
        return self.step / self.total_steps if self.total_steps else 0.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainerState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (with a trainer_state.json), oldest first."""
    folders = [p for p in Path(output_dir).glob(CHECKPOINT_PREFIX + "*") if (p / STATE_FILE).is_file()]
    return sorted(folders, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: "none" -> None, "auto" -> the last one in output_dir (if any), else a path."""
    if resume == "none":
        return None
    if resume == "auto":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"{resume} is not a checkpoint folder (no {STATE_FILE})")
    return path


def load_trainer_state(checkpoint: Path) -> TrainerState:
    return TrainerState.from_dict(json.loads((checkpoint / STATE_FILE).read_text()))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: TrainerState, keep: int) -> Path:
    """Saves a checkpoint on every process (sharded optimizers need all of them) and rotates old ones."""
    path = output_dir / f"{CHECKPOINT_PREFIX}{state.step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        tmp = path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n")
        tmp.replace(path / STATE_FILE)  # atomic: the checkpoint counts as complete from here on
        rotate_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return path


def rotate_checkpoints(output_dir: Path, keep: int) -> None:
    """Deletes all but the `keep` newest checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def is_finished(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds a run's final model (its trainer_state.json is marked finished)."""
    state_file = Path(output_dir) / STATE_FILE
    return state_file.is_file() and bool(json.loads(state_file.read_text()).get("finished", False))


def remove_checkpoints(output_dir: Path) -> None:
    """A fresh run (`--resume none`) in a used folder drops the old run's checkpoints, which rotation would keep."""
    for old in Path(output_dir).glob(CHECKPOINT_PREFIX + "*"):
        logger.warning("Removing checkpoint %s of an earlier run (--resume none)", old)
        shutil.rmtree(old, ignore_errors=True)

"""Task presets: an instruction, generation defaults and example images for each task the model was trained for.

A checkpoint may ship a `tasks.json` ({"OCR": {"instruction": ...}, ...}); the app shows exactly its presets, so a
different checkpoint brings its own. Checkpoints without one (the official 7B) get the tasks and canonical
instructions of `model.shared`, the ones the synthetic data teaches. "Free chat" is always there.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from model.shared import FREE_CHAT, PROJECT_ROOT, TASK_KEYS, task_instructions

EXAMPLES_DIR = PROJECT_ROOT / "assets" / "examples"  # one folder per task key, "free" for Free chat


@dataclass
class TaskPreset:
    name: str
    instruction: str  # sent when the user gives an image without a question
    max_new_tokens: int = 128
    temperature: float = 0.0  # the tasks have one right answer: greedy
    examples: list[str] = field(default_factory=list)


def _examples(name: str) -> list[str]:
    folder = EXAMPLES_DIR / TASK_KEYS.get(name, "free")
    return sorted(str(p) for p in folder.glob("*.png")) if folder.is_dir() else []


def load_presets(checkpoint: str | Path | None) -> list[TaskPreset]:
    """The checkpoint's presets (from its tasks.json) or the built-in ones, then Free chat."""
    tasks_file = Path(checkpoint) / "tasks.json" if checkpoint else None
    if tasks_file and tasks_file.is_file():
        tasks = {name: entry["instruction"] for name, entry in json.loads(tasks_file.read_text()).items()}
    else:
        tasks = task_instructions()
    presets = [TaskPreset(name, instruction, examples=_examples(name)) for name, instruction in tasks.items()]
    presets.append(TaskPreset(FREE_CHAT, "", max_new_tokens=512, temperature=0.7, examples=_examples(FREE_CHAT)))
    return presets


def preset_by_name(presets: list[TaskPreset], name: str) -> TaskPreset:
    for preset in presets:
        if preset.name == name:
            return preset
    raise ValueError(f"The task must be one of {[p.name for p in presets]}; got {name!r}.")

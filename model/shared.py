"""Facts the library and the app share, defined once here and imported by both.

This module imports only the standard library, and `import model` loads nothing heavy until a model class is used, so
the app's light modules (settings, jobs, validation, storage) read these facts without loading torch or
transformers. `tests/test_shared_facts.py` fails when the image placeholder or the image-token formula is written
anywhere else.

    from model.shared import IMAGE_PLACEHOLDER, num_image_tokens, resized_size
    width, height = resized_size(640, 480, patch_size=32, max_size=1600, mode="train")
    num_image_tokens(height, width, patch_size=32)
"""

import json
import math
import sys
from functools import cache
from pathlib import Path
from typing import Any

# The repository root: accelerate configs, assets and the app live under it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Where an image goes in LLaVA data (official `DEFAULT_IMAGE_TOKEN`). It is not a vocabulary token: the data code
# translates it to `IMAGE_TOKEN` where it reads data (`from_llava`).
IMAGE_PLACEHOLDER = "<image>"
# The processor's image token (its `image_token`, as in Qwen2-VL), which the chat template writes for an image and
# vLLM expands: a special token of this project's tokenizers and an added token of the official Qwen2.5 tokenizer.
IMAGE_TOKEN = "<|image_pad|>"


def from_llava(text: str) -> str:
    """LLaVA-format text (images as `<image>`) as the processor reads it (images as its `IMAGE_TOKEN`)."""
    return text.replace(IMAGE_PLACEHOLDER, IMAGE_TOKEN)


# Official res1600 preprocessing: images rescaled to an area of about 1600**2, in patches of 16 * 2 = 32 pixels.
DEFAULT_IMAGE_MAX_SIZE = 1600
DEFAULT_PATCH_STRIDE = 16
DEFAULT_DENSE_STRIDE = 2
RESIZE_MODES = ("inference", "train")


def num_image_tokens(height: int, width: int, patch_size: int) -> int:
    """Tokens of a preprocessed image of `height` x `width` pixels: one class token, then each row of patches
    followed by a split token, so a model and a dataset check count the same prompt length."""
    h, w = height // patch_size, width // patch_size
    return 1 + h * (w + 1)


def resized_size(width: int, height: int, patch_size: int, max_size: int, mode: str = "inference") -> tuple[int, int]:
    """(new_width, new_height) by the official rules, which the released weights both saw.

    "inference" (official `process_images`) rescales up or down to an area of about `max_size**2` and rounds each
    side UP to a multiple of `patch_size`, so every image costs about the same; "train" (official dataset loader)
    only scales DOWN images larger than that and rounds to the NEAREST multiple, so small images stay cheap.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if mode == "inference":
        factor = max_size / math.sqrt(width * height)
        snap: Any = math.ceil
    elif mode == "train":
        factor = min(max_size / math.sqrt(width * height), 1.0)  # never upscale
        snap = round
    else:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    # Round to 6 decimals first so float noise (50.0000000001 patches) cannot add a whole extra patch.
    new_width, new_height = (
        max(int(snap(round(side * factor / patch_size, 6))), 1) * patch_size for side in (width, height)
    )
    return new_width, new_height


STAGES_FILE = Path(__file__).parent / "train" / "stages.json"


@cache
def stage_presets() -> dict[str, dict[str, Any]]:
    """The training stage presets as written in `model/train/stages.json` (title, purpose, trainable groups, lr,
    template, image size rule, vision twins), in pipeline order. Cached: treat it as read-only."""
    presets: dict[str, dict[str, Any]] = json.loads(STAGES_FILE.read_text())
    return presets


def stage_image_max_size(rule: str | None, image_max_size: int, override: int | None = None) -> int | None:
    """Largest image side (as an area of side**2) a stage trains on: None for a text-only stage (`rule` None),
    else the override, else half of the model's `image_max_size` for "low" and all of it for "high"."""
    if rule is None:
        return None
    if override:
        return override
    return image_max_size // 2 if rule == "low" else image_max_size


# Parameter groups a stage trains and the name substring that selects each (the official `--tune_VE` / `--tune_MOE`
# rule); "llm" is every parameter matched by no other group. The trainer and the torch-free memory plan share it.
GROUP_SUBSTRINGS = {"vision_tower": "vision_tower", "moe": "moe"}


def parameter_group(name: str) -> str:
    """The group ("vision_tower", "moe" or "llm") a parameter belongs to, by the official substring rule."""
    for group, substring in GROUP_SUBSTRINGS.items():
        if substring in name:
            return group
    return "llm"


# Defaults of a training run that the training CLI (`model.train.args.TrainArgs`) and the app's fine-tune form
# (`eve_app.jobs.command.JobConfig`) share; written once here because the app must not import torch.
TRAIN_DEFAULTS: dict[str, Any] = {
    "stage": "3",
    "epochs": 1.0,
    "batch_size": 1,
    "grad_accum": 1,
    "seed": 42,
    "eval_split": 0.0,
    "eval_every": 0,
    "save_every": 500,
}


# The tasks the synthetic data teaches and the app offers: display name (as the app shows it) -> task key.
TASK_KEYS: dict[str, str] = {"OCR": "ocr", "Poster": "poster", "Webpage": "webpage", "Scene description": "scene"}
# The preset without a task: the user's own question, sampled answers.
FREE_CHAT = "Free chat"
TASK_VOCAB_FILE = Path(__file__).parent / "synthetic" / "vocab.json"


@cache
def task_instructions() -> dict[str, str]:
    """Display name -> the canonical instruction of each task, the one the app sends and training uses half the
    time (kept with the paraphrases in `model/synthetic/vocab.json`)."""
    instructions = json.loads(TASK_VOCAB_FILE.read_text(encoding="utf-8"))["instructions"]
    return {name: instructions[key]["canonical"] for name, key in TASK_KEYS.items()}


# A checkpoint's own fine-tuning defaults (model.train TrainArgs fields), used where a job leaves an option empty:
# what works for a 4 M-parameter model (a high learning rate, answers spelled one character per token) is not what
# works for the 7B, whose stage presets are the official ones.
FINETUNE_DEFAULTS_FILE = "finetune_defaults.json"
# A LoRA adapter saved by peft: the file that makes a job folder "base + adapter" rather than a full checkpoint.
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# How a job trains the groups its stage unfreezes: every weight, LoRA adapters, or LoRA on a 4-bit (nf4) base.
TRAIN_METHODS = ("full", "lora", "qlora")


def finetune_defaults(folder: str | Path) -> dict[str, Any]:
    """The fine-tuning defaults a checkpoint folder carries (`finetune_defaults.json`), or {} when it has none."""
    path = Path(folder) / FINETUNE_DEFAULTS_FILE
    if not path.is_file():
        return {}
    values = json.loads(path.read_text())
    if not isinstance(values, dict):
        raise TypeError(f"{path} must hold a JSON object of training options")
    return values


def leave_out_bitsandbytes() -> None:
    """Makes `import bitsandbytes` fail in this process (call it before transformers or peft are imported), for a
    process that quantizes nothing.

    peft imports bitsandbytes whenever it is installed (`peft.helpers`), and transformers imports peft with its
    scheduler helpers; on a CPU with AVX512-BF16, importing bitsandbytes looks up a Hub kernel
    ("kernels-community/quantization-bitsandbytes"), which fails offline and prints a warning at the top of every
    job log. peft and transformers take a failed import as "bitsandbytes is not installed" (`importlib.util.find_spec`
    answers None for a name set to None in `sys.modules`), which is true of what such a process uses.
    """
    sys.modules.setdefault("bitsandbytes", None)  # type: ignore[arg-type]

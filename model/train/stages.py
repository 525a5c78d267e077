"""Training stage presets of the EVEv2 paper (kept as data in `stages.json`) and what each stage makes trainable.

As in the official training script, trainability is decided by parameter-name substrings: names containing
`vision_tower` form the patch embedding group (official `--tune_VE`), names containing `moe` the vision twins
(`--tune_MOE`), and every other name the language model (`--tune_LLM`: embeddings, text layers, final norm, head).

    stage = get_stage("2.1")
    trainable = set_trainable(model, stage)   # names of the parameters that will be trained
    print(describe_stage(stage))
"""

from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from ..shared import parameter_group, stage_image_max_size, stage_presets

GROUP_LABELS = {
    "vision_tower": "patch embedding (model.vision_tower.*)",
    "moe": "vision twins of every decoder layer (*moe_* q/k/v/o projections, MLP and norms)",
    "llm": "language model (embed_tokens, text decoder layers, model.norm, lm_head)",
}
# Config bookkeeping fields the official training writes for each group.
OFFICIAL_FLAGS = {"vision_tower": "tune_VE", "moe": "tune_MOE", "llm": "tune_LLM"}
# Official vision-twin layout, used when twins are added to a checkpoint that has none.
DEFAULT_MOE_PART = "layernorm-self_attn-mlp"


@dataclass(frozen=True)
class Stage:
    """One training stage preset.

    Attributes:
        name: "warmup", "1", "2.1", "2.2" or "3".
        title: the paper's name for the stage.
        purpose: one sentence on what the stage is for.
        train: trainable groups among "vision_tower", "moe", "llm".
        lr: the official learning rate (the command line overrides it, e.g. for small models trained from scratch).
        template: chat template name ("plain" for pre-training stages, "qwen2" for conversations).
        image_size: "low" (half of config.image_max_size), "high" (config.image_max_size), or None (text only).
        vision_twins: whether the stage needs the decoder's vision twins (added from the text weights if missing).
    """

    name: str
    title: str
    purpose: str
    train: tuple[str, ...]
    lr: float
    template: str
    image_size: str | None
    vision_twins: bool

    @property
    def uses_images(self) -> bool:
        return self.image_size is not None


@cache
def load_stages() -> dict[str, Stage]:
    """All presets by name, in pipeline order."""
    return {
        name: Stage(name=name, **{**fields, "train": tuple(fields["train"])})
        for name, fields in stage_presets().items()
    }


def get_stage(stage: str | Stage) -> Stage:
    """A preset by name (a `Stage` passes through); raises ValueError listing the known names."""
    if isinstance(stage, Stage):
        return stage
    stages = load_stages()
    if stage not in stages:
        raise ValueError(f"Unknown stage {stage!r}; choose one of {list(stages)}")
    return stages[stage]


def set_trainable(model: nn.Module, stage: str | Stage) -> list[str]:
    """Freezes every parameter outside the stage's groups; returns the names of the trainable ones."""
    groups = set(get_stage(stage).train)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in groups)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def official_flags(stage: str | Stage) -> dict[str, bool]:
    """The stage's `tune_VE` / `tune_MOE` / `tune_LLM` values, which the official training records in config.json."""
    groups = set(get_stage(stage).train)
    return {flag: group in groups for group, flag in OFFICIAL_FLAGS.items()}


def image_size_for(stage: str | Stage, image_max_size: int, override: int | None = None) -> int | None:
    """Largest image side (as an area of size**2) for the stage: the override, else the preset's low/high rule."""
    return stage_image_max_size(get_stage(stage).image_size, image_max_size, override)


def describe_stage(stage: str | Stage) -> str:
    """Human-readable summary of a stage: what it trains, what stays frozen, its template, resolution and lr."""
    stage = get_stage(stage)
    trained = [GROUP_LABELS[g] for g in GROUP_LABELS if g in stage.train]
    frozen = [GROUP_LABELS[g] for g in GROUP_LABELS if g not in stage.train]
    if stage.image_size is None:
        images = "text only (images are dropped from the samples)"
    else:
        rule = "half of the model's image_max_size" if stage.image_size == "low" else "the model's image_max_size"
        images = f"{stage.image_size} resolution ({rule})"
    lines = [
        f"{stage.title}. {stage.purpose}",
        "Trains: " + "; ".join(trained) + ".",
        "Frozen: " + ("; ".join(frozen) if frozen else "nothing") + ".",
        f"Template: {stage.template}. Images: {images}. Default learning rate: {stage.lr:g}.",
    ]
    if stage.vision_twins:
        lines.append("Needs vision twins: a checkpoint without them gets twins copied from its text weights.")
    return "\n".join(lines)


@torch.no_grad()
def init_vision_twins(model: nn.Module) -> list[str]:
    """Copies every text weight into its vision twin (`...moe_q_proj.weight <- ...q_proj.weight`, etc.).

    This is the official step between stages 1 and 2.1: the twins start as exact copies, so the model computes the
    same function as before they were added. Returns the names of the twins that were set.
    """
    params = dict(model.named_parameters())
    copied = []
    for name, param in params.items():
        if "moe_" not in name:
            continue
        source = name.replace("moe_", "")
        if source not in params or params[source].shape != param.shape:
            raise ValueError(f"Vision twin {name} has no text weight {source} of the same shape to copy")
        param.copy_(params[source])
        copied.append(name)
    return copied

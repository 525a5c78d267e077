"""How a stage's groups learn: every weight (`full`), LoRA adapters (`lora`), or LoRA on a 4-bit base (`qlora`).

The stage still decides which groups learn (`stages.set_trainable`): under LoRA the text group gets adapters on the
text layers' q/k/v/o and gate/up/down projections, the vision-twin group on their `moe_` copies, and the patch
embedding trains in full (peft `modules_to_save`) only when asked, since vLLM refuses adapters that carry it.

    model = apply_method(model, args, stage)   # a peft model under lora/qlora, `model` itself under full
"""

import logging

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn

from .args import LORA_TARGET_GROUPS, TrainArgs
from .stages import Stage, parameter_group, set_trainable

logger = logging.getLogger(__name__)

PATCH_EMBEDDING = "vision_tower"  # the module name peft keeps a full trainable copy of (modules_to_save)


def lora_target_modules(model: nn.Module, stage: Stage, groups: list[str]) -> list[str]:
    """Names of the linear layers that get adapters: the `groups`' projections inside the stage's text and twin groups.

    Short names (`q_proj`, `moe_q_proj`, ...) when they pick exactly these layers, which keeps adapter_config.json
    readable and is what servers expect; full module names otherwise (a stage that trains the twins but not the text
    layers, whose MLPs share the names `gate_proj`/`up_proj`/`down_proj`).
    """
    projections = {name for group in groups for name in LORA_TARGET_GROUPS[group]}
    projections |= {"moe_" + name for name in projections}
    linear = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    chosen = [
        name
        for name in linear
        if ".layers." in name
        and name.rsplit(".", 1)[-1] in projections
        and parameter_group(name + ".weight") in stage.train
    ]
    short = sorted({name.rsplit(".", 1)[-1] for name in chosen})
    if {n for n in linear if ".layers." in n and n.rsplit(".", 1)[-1] in short} == set(chosen):
        return short
    return chosen


def lora_config(model: nn.Module, args: TrainArgs, stage: Stage) -> LoraConfig:
    """The adapters of the run (its options already filled by `TrainArgs.with_defaults`).

    Raises:
        ValueError: the stage trains nothing LoRA can adapt (stage 1 trains only the patch embedding).
    """
    targets = lora_target_modules(model, stage, args.lora_targets)
    save = [PATCH_EMBEDDING] if args.lora_patch_embedding and PATCH_EMBEDDING in stage.train else None
    if not targets:
        raise ValueError(
            f"Stage {stage.name} trains {list(stage.train)}: no decoder layer for LoRA adapters. "
            "Use --method full (stage 1 trains only the patch embedding)."
        )
    return LoraConfig(
        r=int(args.lora_rank or 8),
        lora_alpha=int(args.lora_alpha or 16),
        lora_dropout=float(args.lora_dropout or 0.0),
        target_modules=targets,
        modules_to_save=save,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_method(model: nn.Module, args: TrainArgs, stage: Stage) -> nn.Module:
    """The model to train: `model` with the stage's groups unfrozen (full), or wrapped with LoRA adapters on them."""
    if args.method == "full":
        set_trainable(model, stage)
        return model
    config = lora_config(model, args, stage)
    if args.method == "qlora":
        # Norms and the head in fp32, inputs that carry gradients; activation checkpointing only where asked.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "%s: adapters of rank %d on %d layers; %d of %d parameters trainable",
        args.method,
        config.r,
        sum(1 for name, _ in peft_model.named_modules() if name.endswith(".lora_A")),
        trainable,
        total,
    )
    return peft_model


def is_adapter_model(model: nn.Module) -> bool:
    """Whether `model` trains adapters (its final save writes adapter_config.json, not a full checkpoint)."""
    return isinstance(model, PeftModel)

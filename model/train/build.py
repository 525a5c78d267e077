"""The model and processor a training stage starts from: a checkpoint (`--base`) or a new model (`--from-scratch`).

Stages 2.1 and later need the decoder's vision twins. A checkpoint without them (the official stage-1 output has
`add_moe` false) is loaded with `add_moe=True`, and the new twins are copied from the text weights, as the official
`repeat_moe` step does. A model built from scratch gets twins only when its first stage needs them, for the same
reason: they are born as copies of the text weights the earlier stages trained.
"""

import json
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer

from ..configuration_eve import EveConfig
from ..image_processing_eve import EveImageProcessor
from ..loading import (
    adapter_base,
    layers_unfit_for_cpu_4bit,
    load_pretrained,
    quantization_config,
    read_eve_config,
    resolve_checkpoint,
)
from ..modeling_eve import EveForCausalLM
from ..processing_eve import EveProcessor, saved_settings
from ..shared import IMAGE_TOKEN
from .stages import DEFAULT_MOE_PART, Stage, init_vision_twins

logger = logging.getLogger(__name__)


@contextmanager
def _quiet_transformers():
    """Hides transformers' missing-keys report while loading a checkpoint whose twins are added on purpose."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def stage_processor(tokenizer, config: EveConfig, stage: Stage, folder: str | Path | None = None) -> EveProcessor:
    """A processor with the stage's chat template (plain for pre-training stages, qwen2 for conversations).

    The closed-vocabulary words answers keep whole (`EveProcessor.whole_words`) come from `folder`'s processor
    settings, when it has them (a tokenizer folder of the default model, or an earlier stage's output).
    """
    settings = saved_settings(folder) if folder else {}
    return EveProcessor(
        tokenizer,
        EveImageProcessor.from_config(config),
        template=stage.template,
        image_token_id=config.image_token_id,
        whole_words=settings.get("whole_words", ()),
    )


def load_base(
    base: str | Path,
    stage: Stage,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    quantization: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[EveForCausalLM, EveProcessor]:
    """A checkpoint as the start of `stage`, with vision twins added (and copied from text weights) if needed.

    A LoRA job's output folder starts a stage as its base with the adapter folded in. `quantization` ("4bit" for
    QLoRA) loads the weights through bitsandbytes on `device`; the twins must then already exist (4-bit weights
    cannot be copied into new layers).
    """
    folder = resolve_checkpoint(base)
    if adapter_base(folder) is not None:
        if quantization:
            raise ValueError(
                f"{base} is a LoRA adapter: merge it first (python -m model.train.merge {base} OUT) to train QLoRA on it"
            )
        merged, _ = load_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation)
        merged.train()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), config=merged.config)  # config: no eve-qwen2 warning
        return merged, stage_processor(tokenizer, merged.config, stage, folder)
    config = read_eve_config(folder)
    add_twins = stage.vision_twins and not config.add_moe
    if add_twins and quantization:
        raise ValueError(
            f"{base} has no vision twins and stage {stage.name} needs them: 4-bit weights cannot be copied into new "
            "twins. Run this stage with --method lora or full first."
        )
    quantized: dict[str, Any] = {}
    if quantization:
        cpu = torch.device(device).type == "cpu"
        keep = layers_unfit_for_cpu_4bit(config) if cpu and quantization == "4bit" else None
        quantized = {
            "quantization_config": quantization_config(quantization, dtype, keep),
            "device_map": {"": str(device)},
        }
    if add_twins:
        config.add_moe = True
        config.moe_part = config.moe_part or DEFAULT_MOE_PART
    elif config.add_moe and not stage.vision_twins:
        logger.warning("Stage %s runs with the checkpoint's vision twins, which stay frozen", stage.name)
    with _quiet_transformers() if add_twins else nullcontext():
        loaded: Any = EveForCausalLM.from_pretrained(  # (model, loading info) with output_loading_info
            str(folder),
            config=config,
            dtype=dtype,
            attn_implementation=attn_implementation,
            output_loading_info=True,
            **quantized,
        )
    model, info = loaded
    unexpected_missing = [key for key in info["missing_keys"] if not (add_twins and "moe_" in key)]
    if unexpected_missing or info["unexpected_keys"]:
        raise ValueError(
            f"{folder} does not match the model: missing {sorted(unexpected_missing)[:5]}, "
            f"unexpected {sorted(info['unexpected_keys'])[:5]}"
        )
    if add_twins:
        copied = init_vision_twins(model)
        logger.info("Added %d vision-twin tensors (%s), copied from the text weights", len(copied), config.moe_part)
    # With the config: AutoTokenizer otherwise reads config.json itself, before `eve-qwen2` is registered with the
    # Auto classes, and warns that it instantiates a model of type `` from it.
    tokenizer = AutoTokenizer.from_pretrained(str(folder), config=config)
    return model, stage_processor(tokenizer, config, stage, folder)


def build_from_scratch(
    config_file: str | Path,
    tokenizer_path: str | Path,
    stage: Stage,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> tuple[EveForCausalLM, EveProcessor]:
    """A randomly initialised model from a config JSON (EveConfig fields) and a tokenizer folder.

    The vocabulary size defaults to the tokenizer's and the pad/end ids are taken from the tokenizer, so a small
    config file only needs the sizes. Vision twins exist iff the stage needs them (then copied from text weights).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    fields = json.loads(Path(config_file).read_text())
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {fields['vocab_size']} is smaller than the tokenizer's {len(tokenizer)} tokens")
    fields["pad_token_id"] = tokenizer.pad_token_id
    fields["eos_token_id"] = tokenizer.eos_token_id
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) if IMAGE_TOKEN in tokenizer.get_vocab() else None
    if image_pad is not None:  # a dedicated placeholder, distinct from padding (servers route tokens by this id)
        fields.setdefault("image_token_id", image_pad)
    fields.setdefault("text_vocab_size", len(tokenizer))
    fields["add_moe"] = stage.vision_twins
    fields.setdefault("moe_part", DEFAULT_MOE_PART)
    config = EveConfig.from_dict(fields)
    model = EveForCausalLM._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    if stage.vision_twins:
        init_vision_twins(model)
    logger.info("Built a new model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    return model, stage_processor(tokenizer, config, stage, tokenizer_path)

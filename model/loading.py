"""One call from a checkpoint (local folder or Hub id) to a ready `(model, processor)` pair.

Reads any checkpoint in the official EVEv2 layout, including `BAAI/EVE-7B-HD-v2.0` as released: no GitHub checkout,
no `preprocessor_config.json` folder, no remote code. Hub ids resolve through the local Hub cache first, so it works
offline (`HF_HUB_OFFLINE=1`) once the files are there.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from transformers import BitsAndBytesConfig, GenerationConfig
from transformers.utils import PROCESSOR_NAME, is_flash_attn_2_available

from .configuration_eve import EveConfig
from .modeling_eve import EveForCausalLM
from .processing_eve import EveProcessor
from .shared import ADAPTER_CONFIG_FILE

QUANTIZATIONS = (None, "8bit", "4bit")


def resolve_checkpoint(path_or_repo_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded or taken from the Hub cache."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(path_or_repo_id).count("/") != 1:
        raise ValueError(
            f"{path_or_repo_id} is neither a checkpoint folder nor a Hub repo id like 'BAAI/EVE-7B-HD-v2.0'"
        )
    try:
        return Path(
            snapshot_download(str(path_or_repo_id), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])
        )
    except Exception as error:  # offline without a cached copy, unknown repo, no network, ...
        raise ValueError(f"Could not find {path_or_repo_id} locally or in the Hub cache: {error}") from error


def adapter_base(folder: Path) -> str | None:
    """The base checkpoint a LoRA adapter folder (a `lora`/`qlora` job's output) was trained on, or None for a folder
    that holds a full checkpoint. A relative base path is taken relative to the adapter folder when it exists there.

    Raises:
        ValueError: adapter_config.json names no base.
    """
    config_file = folder / ADAPTER_CONFIG_FILE
    if (folder / "config.json").is_file() or not config_file.is_file():
        return None
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_file} names no base_model_name_or_path: cannot tell which model it adapts")
    beside = folder / base
    return str(beside) if not Path(base).is_absolute() and beside.is_dir() else str(base)


def read_eve_config(folder: Path) -> EveConfig:
    """The checkpoint's config, with a clear error for a folder that is not an EVEv2 checkpoint."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not an EVEv2 checkpoint: it has no config.json")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != EveConfig.model_type:
        raise ValueError(
            f"{folder} is not an EVEv2 checkpoint: its config.json has model_type {model_type!r}, "
            f"expected {EveConfig.model_type!r}"
        )
    return EveConfig.from_pretrained(str(folder))


def apply_vision_tower_settings(config: EveConfig, folder: Path) -> None:
    """Reads `mm_vision_tower`'s preprocessor_config.json when that folder exists (absolute, or relative to the
    checkpoint or the working directory); otherwise the config's own image settings (official defaults) stay."""
    if not config.mm_vision_tower:
        return
    for base in (folder, Path.cwd()):
        settings_file = base / config.mm_vision_tower / "preprocessor_config.json"
        if settings_file.is_file():
            settings = json.loads(settings_file.read_text())
            keys = {
                "max_size": "image_max_size",
                "patch_stride": "patch_stride",
                "dense_stride": "dense_stride",
                "image_mean": "image_mean",
                "image_std": "image_std",
            }
            for source, target in keys.items():
                if source in settings:
                    setattr(config, target, settings[source])
            return


def default_attn_implementation(device: str) -> str:
    """flash-attn 2 when it is installed and the model is on CUDA, SDPA otherwise."""
    return "flash_attention_2" if device.startswith("cuda") and is_flash_attn_2_available() else "sdpa"


# bitsandbytes' CPU 4-bit kernel (taken on CPUs with AVX512-BF16) packs weights in blocks of 32 output features and
# 64 input features (the NF4 block) and fails on any other shape; such layers, which only small models have, stay
# unquantised on the CPU. Every layer of the 7B model and of the default model fits.
CPU_4BIT_OUT_BLOCK, CPU_4BIT_IN_BLOCK = 32, 64


def layers_unfit_for_cpu_4bit(config: EveConfig) -> list[str]:
    """Names of the linear layers whose shape the CPU 4-bit kernel cannot pack (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = EveForCausalLM(config)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (module.out_features % CPU_4BIT_OUT_BLOCK or module.in_features % CPU_4BIT_IN_BLOCK)
    ]


def quantization_config(
    quantization: str | None, compute_dtype: torch.dtype, keep_unquantized: list[str] | None = None
) -> BitsAndBytesConfig | None:
    """bitsandbytes settings; `keep_unquantized` names extra modules to leave in full precision."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    if quantization is None:
        return None
    # The patch embedding is convolutions (never quantised); the head stays in full precision for stable logits.
    skip = ["lm_head", *(keep_unquantized or [])]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip,
    )


def generation_defaults(processor: EveProcessor, config: EveConfig, vocab_in_use: int) -> dict:
    """Stop tokens, padding and the vocabulary rows the tokenizer never produces (official: resized away)."""
    stops = processor.stop_token_ids
    defaults = {"eos_token_id": stops, "pad_token_id": processor.tokenizer.pad_token_id}
    if vocab_in_use < config.vocab_size:
        defaults["suppress_tokens"] = list(range(vocab_in_use, config.vocab_size))
    return defaults


def load_pretrained(
    path_or_repo_id: str | os.PathLike,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[EveForCausalLM, EveProcessor]:
    """Loads an EVEv2 checkpoint and its processor.

    Args:
        path_or_repo_id: checkpoint folder, a LoRA adapter folder (base + adapter, see `load_with_adapter`), or a Hub
            repo id such as "BAAI/EVE-7B-HD-v2.0".
        device: "cpu", "cuda", "cuda:1", ...
        dtype: defaults to bfloat16 on GPU and float32 on CPU.
        quantization: None, "8bit" or "4bit" (bitsandbytes; works on CPU too).
        attn_implementation: defaults to flash-attn 2 on CUDA when installed, else SDPA.
    """
    folder = resolve_checkpoint(path_or_repo_id)
    base = adapter_base(folder)
    if base is not None:
        return load_with_adapter(folder, base, device, dtype, quantization, attn_implementation)
    config = read_eve_config(folder)
    apply_vision_tower_settings(config, folder)
    device = str(device)
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    cpu_4bit = quantization == "4bit" and device == "cpu"
    keep_unquantized = layers_unfit_for_cpu_4bit(config) if cpu_4bit else None
    model = EveForCausalLM.from_pretrained(
        str(folder),
        config=config,
        dtype=dtype,
        device_map={"": device},
        attn_implementation=attn_implementation or default_attn_implementation(device),
        quantization_config=quantization_config(quantization, dtype, keep_unquantized),
    )
    model.eval()
    processor = EveProcessor.from_pretrained(folder, config)
    if not (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig()
    model.generation_config.update(**generation_defaults(processor, config, len(processor.tokenizer)))
    # Recorded in the config, so that what the library saves tells servers that read no tokenizer (vLLM's model).
    model.config.text_vocab_size = min(len(processor.tokenizer), config.vocab_size)
    return model, processor


def load_with_adapter(
    folder: Path,
    base: str,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[EveForCausalLM, EveProcessor]:
    """The base checkpoint with a peft LoRA adapter folder on it, and the processor the adapter was trained with.

    Unquantised, the adapter is folded into the weights (`merge_and_unload`): a plain `EveForCausalLM` that answers as
    base + adapter at the base's speed. On a quantised base it stays a separate layer (a `PeftModel`, which generates
    the same way), since folding it in would round it to 4 or 8 bits.
    """
    from peft import PeftModel  # only adapter folders need peft

    model, processor = load_pretrained(base, device, dtype, quantization, attn_implementation)
    adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    loaded: Any = adapted if quantization else adapted.merge_and_unload()
    loaded.eval()
    if (folder / PROCESSOR_NAME).is_file():  # the adapter's stage template and settings
        processor = EveProcessor.from_pretrained(folder, model.config)
    return loaded, processor

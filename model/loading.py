"""One call from a checkpoint (local folder or Hub id) to a ready `(model, processor)` pair.

Reads any checkpoint in the official EVEv2 layout, including `BAAI/EVE-7B-HD-v2.0` as released: no GitHub checkout,
no `preprocessor_config.json` folder, no remote code. Hub ids resolve through the local Hub cache first, so it works
offline (`HF_HUB_OFFLINE=1`) once the files are there.
"""

import json
import os
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import BitsAndBytesConfig, GenerationConfig
from transformers.utils import is_flash_attn_2_available

from .configuration_eve import EveConfig
from .modeling_eve import EveForCausalLM
from .processing_eve import EveProcessor

QUANTIZATIONS = (None, "8bit", "4bit")


def resolve_checkpoint(path_or_repo_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded or taken from the Hub cache."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(path_or_repo_id).count("/") != 1:
        raise ValueError(f"{path_or_repo_id} is neither a checkpoint folder nor a Hub repo id like 'BAAI/EVE-7B-HD-v2.0'")
    try:
        return Path(snapshot_download(str(path_or_repo_id), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"]))
    except Exception as error:  # offline without a cached copy, unknown repo, no network, ...
        raise ValueError(f"Could not find {path_or_repo_id} locally or in the Hub cache: {error}") from error


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
            keys = {"max_size": "image_max_size", "patch_stride": "patch_stride", "dense_stride": "dense_stride",
                    "image_mean": "image_mean", "image_std": "image_std"}
            for source, target in keys.items():
                if source in settings:
                    setattr(config, target, settings[source])
            return


def default_attn_implementation(device: str) -> str:
    """flash-attn 2 when it is installed and the model is on CUDA, SDPA otherwise."""
    return "flash_attention_2" if device.startswith("cuda") and is_flash_attn_2_available() else "sdpa"


def quantization_config(quantization: str | None, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    if quantization is None:
        return None
    # The patch embedding is convolutions (never quantised); the head stays in full precision for stable logits.
    skip = ["lm_head"]
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
        path_or_repo_id: checkpoint folder, or a Hub repo id such as "BAAI/EVE-7B-HD-v2.0".
        device: "cpu", "cuda", "cuda:1", ...
        dtype: defaults to bfloat16 on GPU and float32 on CPU.
        quantization: None, "8bit" or "4bit" (bitsandbytes; works on CPU too).
        attn_implementation: defaults to flash-attn 2 on CUDA when installed, else SDPA.
    """
    folder = resolve_checkpoint(path_or_repo_id)
    config = read_eve_config(folder)
    apply_vision_tower_settings(config, folder)
    device = str(device)
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = EveForCausalLM.from_pretrained(
        str(folder),
        config=config,
        dtype=dtype,
        device_map={"": device},
        attn_implementation=attn_implementation or default_attn_implementation(device),
        quantization_config=quantization_config(quantization, dtype),
    )
    model.eval()
    processor = EveProcessor.from_pretrained(folder, config)
    if not (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig()
    model.generation_config.update(**generation_defaults(processor, config, len(processor.tokenizer)))
    return model, processor

"""Configuration of EVEv2 (`model_type "eve-qwen2"`): a Qwen2 config plus the fields the official training writes.

It reads the official `config.json` as it is. The official checkpoint only records `mm_vision_tower`, a folder name
(`openai/eve-anyratio-res1600-patch16`) that exists inside the authors' GitHub checkout and nowhere else; we never
need that folder, because the image-preprocessing settings are fields of this config with the official defaults.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import Qwen2Config

from .image_processing_eve import CLIP_MEAN, CLIP_STD
from .shared import DEFAULT_DENSE_STRIDE, DEFAULT_IMAGE_MAX_SIZE, DEFAULT_PATCH_STRIDE

VISION_PARTS = ("layernorm", "self_attn", "mlp")


@strict
class EveConfig(Qwen2Config):
    r"""
    Defaults equal the released `BAAI/EVE-7B-HD-v2.0` (a Qwen2.5-7B-Instruct decoder with vision twins).

    Example:

    ```python
    >>> from model import EveConfig, EveForCausalLM
    >>> config = EveConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    ...                    num_key_value_heads=2, vocab_size=512, mm_hidden_size=32, image_max_size=64)
    >>> model = EveForCausalLM(config)
    ```
    """

    model_type = "eve-qwen2"
    default_theta = 1_000_000.0

    # Qwen2.5-7B-Instruct sizes.
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    max_position_embeddings: int = 32768
    pad_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645

    # Patch embedding: conv1 width (official `mm_hidden_size`) and the two conv strides (16 x 2 = 32 px patches).
    mm_hidden_size: int = 1024
    patch_stride: int = DEFAULT_PATCH_STRIDE
    dense_stride: int = DEFAULT_DENSE_STRIDE
    # Official bookkeeping; may name a folder that does not exist (never opened unless it does).
    mm_vision_tower: str | None = "openai/eve-anyratio-res1600-patch16"
    # Vision twins ("moe" in the official names): which parts of every decoder layer have a vision copy.
    add_moe: bool = True
    moe_part: str = "layernorm-self_attn-mlp"
    # Image preprocessing (official res1600 preprocessor): images are rescaled to an area of image_max_size**2.
    image_max_size: int = DEFAULT_IMAGE_MAX_SIZE
    image_mean: list[float] | tuple[float, ...] = CLIP_MEAN
    image_std: list[float] | tuple[float, ...] = CLIP_STD
    # Id written at image positions of `input_ids`; the official code writes 0 there too, so repetition
    # penalty over the prompt behaves identically.
    image_token_id: int = 0
    # How many ids the tokenizer produces, where the checkpoint records it (this library's checkpoints do): rows of the
    # embedding past it are padding that no answer may contain. None: read the tokenizer (the library's loader does)
    # or, on vLLM, which builds the model before any tokenizer, use the official release's Qwen2.5 figure.
    text_vocab_size: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        unknown = set(self.moe_part.split("-")) - set(VISION_PARTS) if self.moe_part else set()
        if unknown:
            raise ValueError(
                f"moe_part has unknown parts {sorted(unknown)}; expected a '-'-joined subset of {VISION_PARTS}"
            )
        super().__post_init__(**kwargs)

    def has_vision_twin(self, part: str) -> bool:
        """Whether decoder layers carry a vision copy of `part` ("layernorm", "self_attn" or "mlp")."""
        # Same substring test as the official code, so every official moe_part string means the same here.
        return bool(self.add_moe) and part in (self.moe_part or "")

    @property
    def patch_size(self) -> int:
        """Pixels per side of one image token (official: 32)."""
        return self.patch_stride * self.dense_stride


__all__ = ["EveConfig"]

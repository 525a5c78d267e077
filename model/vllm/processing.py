"""vLLM's multimodal processing for EVEv2: an image becomes its pixels and `1 + h * (w + 1)` placeholder tokens.

vLLM tokenises the prompt text itself, so each image must appear there as one token: `<|image_pad|>` (the chat
template gets it from `EveVllmForCausalLM.get_placeholder_str`). The processor resizes and normalises each image by
the official inference rule (the library's `EveImageProcessor`), and the prompt update replaces that one token by as
many copies as the image has tokens (class token, then each row of patches and its split token). The copies keep
the placeholder id, which is how the model tells image positions from text positions in `forward`.
"""

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase
from vllm.inputs import MultiModalDataDict
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from ..image_processing_eve import EveImageProcessor, ImageInput
from ..shared import IMAGE_TOKEN
from . import placeholder_token_id

# The placeholder token (id 151655 in the official checkpoint's Qwen2.5 tokenizer; the official code itself marks
# images with the sentinel -200, which is not an id a tokenizer can produce, and writes 0 in its place, which
# collides with text).
IMAGE_PLACEHOLDER = IMAGE_TOKEN


def resolve_image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of `<|image_pad|>`; raises when the tokenizer has no such token (nothing else can mark images)."""
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    if token_id is None or token_id == tokenizer.unk_token_id or not isinstance(token_id, int):
        raise ValueError(
            f"The tokenizer has no {IMAGE_PLACEHOLDER} token. vLLM needs one dedicated token id to mark image "
            "positions; checkpoints that write images as id 0 (the pad token), like the first assets/eve-tiny, "
            "cannot be served. Retrain or re-export the tokenizer with the token (model/train/tokenizer.py)."
        )
    return int(token_id)


def max_image_tokens(image_processor: EveImageProcessor, limit: int) -> int:
    """Upper bound on one image's tokens at the model's image size, capped at `limit` (the context length).

    The inference rule keeps the area near max_size**2 and rounds each side up by at most one patch, so a square
    image gives n * (n + 1) + 1 tokens (n = max_size / patch) and an elongated one fewer split tokens; twice the
    square count leaves room for rounding and for a larger per-request `max_size`, within the context.
    """
    n = -(-image_processor.max_size // image_processor.patch_size)
    return min(limit, 2 * (n + 1) * (n + 2))


class EveProcessingInfo(BaseProcessingInfo):
    """Model facts the processor and the dummy inputs need: image settings from config.json, the placeholder id."""

    def get_hf_processor(self, **kwargs: object) -> EveImageProcessor:
        # Official checkpoints have no processor files: the settings are config fields (see EveConfig).
        return EveImageProcessor.from_config(self.get_hf_config())

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        # `max_size` (per-request image size) stays a flat keyword; there are no HF processor scopes to route to.
        return {}

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    @property
    def image_token_id(self) -> int:
        """The tokenizer's `<|image_pad|>`, which must be the id the model reads from its config."""
        token_id = resolve_image_token_id(self.get_tokenizer())
        expected = placeholder_token_id(self.get_hf_config())
        if token_id != expected:
            raise ValueError(
                f"The tokenizer's {IMAGE_PLACEHOLDER} is id {token_id}, but config.json's image_token_id gives "
                f"{expected}: set image_token_id to {token_id}"
            )
        return token_id

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": max_image_tokens(self.get_hf_processor(), seq_len)}


class EveDummyInputsBuilder(BaseDummyInputsBuilder[EveProcessingInfo]):
    """Square images at the model's image size, for vLLM's start-up profiling."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None) -> MultiModalDataDict:
        side = self.info.get_hf_processor().max_size
        overrides = mm_options.get("image") if mm_options else None
        images = self._get_dummy_images(
            width=side, height=side, num_images=mm_counts.get("image", 0), overrides=overrides
        )
        return {"image": images}


class EveMultiModalProcessor(BaseMultiModalProcessor[EveProcessingInfo]):
    """Pixels by the library's image processor; placeholders expanded to each image's token count."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        image_processor = self.info.get_hf_processor()
        max_size = hf_kwargs.get("max_size")
        images = cast(list[ImageInput], hf_data.get("images") or [])
        size = int(cast(int, max_size)) if max_size else None
        pixel_values = [image_processor.preprocess(image, max_size=size) for image in images]
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        # One [3, H, W] tensor per image; sizes differ between images, so they stay a list.
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, Any],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        image_token_id = self.info.image_token_id
        image_processor = self.info.get_hf_processor()

        def image_tokens(item_idx: int) -> list[int]:
            pixels: torch.Tensor = out_mm_kwargs["image"][item_idx]["pixel_values"].data
            return [image_token_id] * image_processor.num_image_tokens(pixels.shape[-2], pixels.shape[-1])

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=image_tokens)]


__all__ = [
    "IMAGE_PLACEHOLDER",
    "EveDummyInputsBuilder",
    "EveMultiModalProcessor",
    "EveProcessingInfo",
    "max_image_tokens",
    "resolve_image_token_id",
]

"""Prompt preparation shared by the vLLM backends: the library's chat format, checked before anything is queued.

The text is the library processor's prompt with each image placeholder written as the image token; the prompt's
length (text tokens plus each image's `1 + h(w + 1)` tokens at the requested image size) is checked against the
context by the backend (`base.fit_to_context`, as the transformers backend does), and images are opened with the
library's checks.
"""

from dataclasses import dataclass

from PIL import Image

from model.processing_eve import EveProcessor
from model.shared import IMAGE_TOKEN, num_image_tokens

from .sent_images import SentImages
from .types import EngineError, GenerationSettings, Turn


@dataclass
class PreparedPrompt:
    messages: list[dict]  # the processor's messages, images as its `<|image_pad|>` token
    text: str  # the full prompt, each image as one IMAGE_TOKEN
    images: list[Image.Image | None]  # None: vLLM holds this image already and it goes by id alone
    image_paths: list[str]
    image_ids: list[str]  # content digests, vLLM's ids for the images
    prompt_tokens: int

    def with_pixels(self, image_processor) -> list[Image.Image]:
        """Every image decoded, for a second attempt: vLLM may no longer hold those that went by id."""
        return [
            image if image is not None else _load(image_processor, path)
            for image, path in zip(self.images, self.image_paths)
        ]


def prepare(
    processor: EveProcessor, turns: list[Turn], settings: GenerationSettings, context: int, sent: SentImages
) -> PreparedPrompt:
    """Builds and checks the prompt; raises EngineError for an unreadable image or an over-long prompt."""
    messages, paths = [], []
    for turn in turns:
        messages.append({"role": turn.role, "content": f"{IMAGE_TOKEN}\n" * len(turn.images) + turn.text})
        paths.extend(turn.images)
    image_processor = processor.image_processor
    images: list[Image.Image | None] = []
    sizes: list[tuple[int, int]] = []
    ids: list[str] = []
    for path in paths:
        try:
            ids.append(sent.digest(path))
        except OSError as error:
            raise EngineError(f"{path} is not a readable image: {error}") from error
        image, size = None, sent.size(ids[-1], settings.image_max_size)
        if size is None:  # not held by vLLM: decode and check it
            image = _load(image_processor, path)
            size = image.size
        images.append(image)
        sizes.append(size)
    text = processor.build_prompt(messages)
    image_tokens = 0
    for size in sizes:
        width, height = image_processor.target_size(*size, max_size=settings.image_max_size)
        image_tokens += num_image_tokens(height, width, image_processor.patch_size)
    pieces = text.split(IMAGE_TOKEN)
    text_tokens = sum(
        len(processor.tokenizer(piece, add_special_tokens=False)["input_ids"]) for piece in pieces if piece
    )
    prompt_tokens = text_tokens + image_tokens  # the caller fits max new tokens to it (base.fit_to_context)
    return PreparedPrompt(messages, text, images, paths, ids, prompt_tokens)


def _load(image_processor, path: str) -> Image.Image:
    """Decodes with the library's checks; an unreadable file is an EngineError with the library's message."""
    try:
        return image_processor.load_image(path)
    except ValueError as error:
        raise EngineError(str(error)) from error


def sampling_fields(settings: GenerationSettings, stop_token_ids: list[int]) -> dict:
    """vLLM sampling fields with the transformers backend's meaning (temperature 0: greedy)."""
    fields = {
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature if settings.temperature > 0 else 0.0,
        "top_p": settings.top_p if settings.temperature > 0 else 1.0,
        "repetition_penalty": settings.repetition_penalty,
        "stop_token_ids": stop_token_ids,
        "skip_special_tokens": True,
    }
    if settings.seed is not None:
        fields["seed"] = settings.seed
    return fields


__all__ = ["PreparedPrompt", "prepare", "sampling_fields"]

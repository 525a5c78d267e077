"""Prompts: the conversation in the library's chat format (every backend), and the vLLM backends' prepared prompt.

`chat_messages` writes each image of a turn as one image placeholder line before its text, the messages the library
processor's chat template renders. The vLLM backends (`prepare`) count the prompt's length without building tensors
(text tokens plus each image's `1 + h(w + 1)` tokens at the requested image size), open images with the library's
checks, and send images vLLM already holds by id; `ChatEngine.stream` checks the length against the context.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from model.shared import IMAGE_TOKEN, num_image_tokens

from .sent_images import SentImages
from .types import EngineError, GenerationSettings, Turn

if TYPE_CHECKING:  # the processor's module imports torch; the `--api-base` client imports this one without it
    from model.processing_eve import EveProcessor


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


def chat_messages(turns: list[Turn]) -> tuple[list[dict], list[str]]:
    """The processor's messages for the conversation (each image as an IMAGE_TOKEN line before its turn's text), and
    the image paths in the order of their placeholders."""
    messages, paths = [], []
    for turn in turns:
        messages.append({"role": turn.role, "content": f"{IMAGE_TOKEN}\n" * len(turn.images) + turn.text})
        paths.extend(turn.images)
    return messages, paths


def prepare(
    processor: "EveProcessor", turns: list[Turn], settings: GenerationSettings, sent: SentImages
) -> PreparedPrompt:
    """Builds the prompt and counts its tokens; raises EngineError for an unreadable image."""
    messages, paths = chat_messages(turns)
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
    return PreparedPrompt(messages, text, images, paths, ids, text_tokens + image_tokens)


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


__all__ = ["PreparedPrompt", "chat_messages", "prepare", "sampling_fields"]

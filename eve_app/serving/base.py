"""The engine every backend is: what the UI, the conversation service and /answer use, and what backends share.

Consumers type `ChatEngine`; the three backends (transformers, vLLM in process, an OpenAI-compatible server) subclass
it. No torch here: the `--api-base` client runs without it.
"""

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .types import ChatRequest, EngineError, Finished, GenerationRecord, TextDelta

MIN_ANSWER_TOKENS = 16  # below this, an answer lowered to fit the context would say too little to be worth it


class ChatEngine(ABC):
    """A loaded model that streams answers; `concurrency_limit` answers at once (the chat's Gradio queue follows)."""

    name: str
    concurrency_limit: int
    checkpoint_dir: Any  # the model folder (tasks.json, model card), or None
    processor: Any  # the library's processor: tokenizer, image processor and chat format

    @abstractmethod
    def stream(self, request: ChatRequest) -> Iterator[TextDelta | Finished]:
        """Yields text pieces as they are generated, then exactly one Finished event."""

    @abstractmethod
    def describe(self) -> str:
        """Model, device and settings, for the status line."""

    @abstractmethod
    def reload(self, path: str, name: str | None = None) -> None:
        """The model picker: serve the checkpoint or adapter in `path` from now on (shown as `name`)."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Tokens of prompt and answer together."""

    @property
    def gpu_count(self) -> int:
        """GPUs of this machine the engine uses (fine-tune jobs need them free)."""
        return 0

    @property
    def notice(self) -> str | None:
        """What the checkpoint's model card says a visitor should know (its `demo_notice` field), if anything."""
        return card_notice(self.checkpoint_dir)

    @property
    def image_max_size(self) -> int:
        return int(self.processor.image_processor.max_size)

    @property
    def patch_size(self) -> int:
        """Pixels a side of one image token."""
        return int(self.processor.image_processor.patch_size)


def fit_to_context(request: ChatRequest, prompt_tokens: int, context: int, record: GenerationRecord) -> None:
    """Lowers the request's max new tokens to what the context leaves after the prompt, and notes it on `record`
    (the status line says so): a third image in a chat should shorten the answer, not be refused. Every backend
    calls this once it knows the prompt's length.

    Raises:
        EngineError: the prompt leaves fewer than MIN_ANSWER_TOKENS tokens.
    """
    room = context - prompt_tokens
    wanted = request.settings.max_new_tokens
    if wanted <= room:
        return
    if room < min(MIN_ANSWER_TOKENS, wanted):
        raise EngineError(
            f"The prompt is too long for the context: {prompt_tokens} tokens (text and images) leave "
            f"{max(room, 0)} of the model's {context} for the answer. "
            "Clear the chat, use fewer images, or lower the image size."
        )
    request.settings = replace(request.settings, max_new_tokens=room)
    record.new_tokens_limit = room


@functools.cache
def card_notice(checkpoint_dir) -> str | None:
    """The `demo_notice` field of a checkpoint's model card (README.md front matter), read once per checkpoint."""
    card = Path(str(checkpoint_dir or "")) / "README.md"
    if not card.is_file() or not card.read_text(encoding="utf-8", errors="replace").startswith("---"):
        return None
    from huggingface_hub import RepoCard

    try:
        return RepoCard.load(card).data.to_dict().get("demo_notice")
    except Exception:  # noqa: BLE001 -- a card with broken front matter simply has no notice
        return None


__all__ = ["MIN_ANSWER_TOKENS", "ChatEngine", "card_notice", "fit_to_context"]

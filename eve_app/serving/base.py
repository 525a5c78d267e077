"""The engine every backend is: what the UI, the conversation service and /answer use, and what backends share.

Consumers type `ChatEngine`; the three backends (transformers, vLLM in process, an OpenAI-compatible server) subclass
it. `stream` is written here once (the record, its timing, the context check, the error messages, exactly one final
event); a backend supplies its prompt (`_prepare`) and its generation (`_generate`, plain text pieces), as
LLaMA-Factory's `BaseEngine` leaves `stream_chat` to its HF and vLLM engines. No torch here: the `--api-base` client
runs without it.
"""

import contextlib
import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from .types import ChatRequest, EngineError, Finished, GenerationRecord, TextDelta

log = logging.getLogger(__name__)

Prompt = TypeVar("Prompt")  # what a backend's `_prepare` builds and its `_generate` sends

MIN_ANSWER_TOKENS = 16  # below this, an answer lowered to fit the context would say too little to be worth it


class ChatEngine(ABC, Generic[Prompt]):
    """A loaded model that streams answers; `concurrency_limit` answers at once (the chat's Gradio queue follows)."""

    name: str
    concurrency_limit: int
    checkpoint_dir: Any  # the model folder (tasks.json, model card), or None
    processor: Any  # the library's processor: tokenizer, image processor and chat format

    def stream(self, request: ChatRequest) -> Iterator[TextDelta | Finished]:
        """Yields text pieces as they are generated, then exactly one Finished event with the record: "done",
        "stopped" (the request's stop event was set) or "error" with a message for the user, never an exception.
        Closing the stream early (a closed tab) sets the stop event, so the backend ends its generation too."""
        start = time.perf_counter()
        record = GenerationRecord(status="done", text="")
        try:
            with self._generation_slot():
                prompt, record.prompt_tokens = self._prepare(request)
                fit_to_context(request, record.prompt_tokens, self.context_length, record)
                for piece in self._generate(request, prompt, record, start):
                    record.text += piece
                    yield TextDelta(piece)
            if request.stop_event.is_set():
                record.status = "stopped"
        except GeneratorExit:
            request.stop_event.set()
            raise
        except EngineError as error:
            record.status, record.error = "error", str(error)
        except Exception as error:  # noqa: BLE001 -- any failure ends the answer with a message, never a hang
            record.status, record.error = "error", self._failure_message(error)
        record.duration = time.perf_counter() - start
        yield Finished(record)

    @abstractmethod
    def _prepare(self, request: ChatRequest) -> tuple[Prompt, int]:
        """The prompt for the request's conversation, and its length in tokens (text and images); raises EngineError
        for an unreadable image."""

    @abstractmethod
    def _generate(self, request: ChatRequest, prompt: Prompt, record: GenerationRecord, start: float) -> Iterator[str]:
        """The answer's text pieces as they are decoded, until the end or the request's stop event. Notes on `record`
        what only the backend knows (new tokens, time to first token since `start`, the prompt's final length)."""

    def _generation_slot(self) -> contextlib.AbstractContextManager:
        """Held from the prompt to the last piece; a backend that runs one answer at a time returns its lock."""
        return contextlib.nullcontext()

    def _failure_message(self, error: Exception) -> str:
        """The user's message for a failure that is not an EngineError; backends name the ones they know."""
        log.exception("%s: generation failed", self.name)
        return f"Generation failed: {type(error).__name__}: {error}"

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

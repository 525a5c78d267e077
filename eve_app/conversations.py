"""`ConversationService`: one turn from the saved question to the saved answer, for the chat tab and `/answer` alike.

It owns the flow both share, so neither repeats it: check the message against the limits, save the question (and,
for a new chat, the conversation, in one transaction), save an empty "streaming" answer, stream the engine's pieces
while saving the partial text every few seconds, and save the final answer with its generation record however the
stream ends (done, stopped, failed, or the caller went away). A crash leaves the streaming answer for
`Storage.recover_interrupted` to mark. Every verb that names a conversation checks that the caller owns it.
"""

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model.shared import num_image_tokens

from .errors import UserError
from .limits import ImageGate
from .serving.base import ChatEngine
from .serving.pacing import STREAM_INTERVAL, paced
from .serving.types import ChatRequest, Finished, GenerationRecord, GenerationSettings, TextDelta
from .storage import Storage

logger = logging.getLogger(__name__)
# Largest image side a request may ask for: an image this size must leave half the context for the conversation.
MAX_IMAGE_SIDE = 4096


@dataclass
class SavedQuestion:
    conversation_id: int
    message_id: int
    images: list[str]  # stored image paths, for the engine
    answer_id: int | None = None  # the empty "streaming" answer, when `ask` began it with the question


def record_fields(record: GenerationRecord, settings: GenerationSettings, model_name: str) -> dict:
    """The generation record as storage keeps it."""
    return {
        "model": model_name,
        "parameters": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            "seed": settings.seed,
            "image_max_size": settings.image_max_size,
        },
        "prompt_tokens": record.prompt_tokens,
        "new_tokens": record.new_tokens,
        "time_to_first_token": record.time_to_first_token,
        "duration": record.duration,
        "status": record.status,
        "error": record.error,
    }


class ConversationService:
    def __init__(
        self,
        storage: Storage,
        engine: ChatEngine,
        images: ImageGate,
        partial_save_seconds: float = 2.0,
        stream_interval: float = STREAM_INTERVAL,
    ):
        self.storage, self.engine, self.images = storage, engine, images
        self.partial_save_seconds = partial_save_seconds
        self.stream_interval = stream_interval  # at most one streamed piece per interval (serving/pacing.py)

    # Limits of a request that depend on the loaded model

    def max_new_tokens_limit(self) -> int:
        return max(self.engine.context_length // 2, 16)

    def image_size_limit(self) -> int:
        """The largest side of a square image whose tokens fit in half the context, and at most MAX_IMAGE_SIDE."""
        patch, half = self.engine.patch_size, self.engine.context_length // 2
        cells = math.isqrt(half)
        while cells > 1 and num_image_tokens(cells * patch, cells * patch, patch) > half:
            cells -= 1
        return min(cells * patch, MAX_IMAGE_SIDE)

    def check_settings(self, settings: GenerationSettings) -> None:
        if not 1 <= settings.max_new_tokens <= self.max_new_tokens_limit():
            raise UserError(
                f"Max new tokens must be between 1 and {self.max_new_tokens_limit()} for this model "
                f"(context {self.engine.context_length} tokens)."
            )
        if settings.image_max_size is not None and not 16 <= settings.image_max_size <= self.image_size_limit():
            raise UserError(f"Image size must be between 16 and {self.image_size_limit()} pixels for this model.")

    # A turn

    def ask(
        self,
        owner: str,
        conversation_id: int | None,
        text: str,
        files: list[str],
        task: str,
        begin_answer: bool = False,
    ) -> SavedQuestion:
        """Check the message and save it; a new conversation (id None) belongs to `owner`. With `begin_answer`, its
        empty "streaming" answer is saved in the same transaction (`SavedQuestion.answer_id`).

        Raises:
            UserError: a limit is broken, an image is refused, or the conversation is not the owner's.
        """
        self.images.check_message(text, files)
        images = [(Path(path).read_bytes(), Path(path).name) for path in files]
        try:
            saved = self.storage.save_question(
                conversation_id, text, task=task, images=images, owner=owner, begin_answer=begin_answer
            )
        except LookupError as error:
            raise UserError("That conversation does not exist (or is not yours).") from error
        except ValueError as error:  # storage's own format check
            raise UserError(str(error)) from error
        return SavedQuestion(saved.conversation_id, saved.message_id, saved.image_paths, saved.answer_id)

    def begin_answer(self, conversation_id: int, task: str) -> int:
        return self.storage.begin_answer(conversation_id, task)

    def refuse_answer(self, conversation_id: int, answer_id: int, error: str, task: str) -> GenerationRecord:
        """Close an answer that could not start (bad settings) with its reason."""
        self.storage.finish_answer(conversation_id, "", "error", task=task, error=error, message_id=answer_id)
        return GenerationRecord(status="error", text="", error=error)

    def stream_answer(
        self, conversation_id: int, answer_id: int, request: ChatRequest, task: str
    ) -> Iterator[TextDelta | Finished]:
        """The engine's events for `request`, at most one text piece per `stream_interval`; the answer `answer_id` is
        saved as it grows and when it ends."""
        text, record, saved_at = "", None, time.monotonic()
        try:
            for event in paced(self.engine.stream(request), self.stream_interval):
                if isinstance(event, Finished):
                    record = event.record
                    continue
                text += event.text
                if time.monotonic() - saved_at >= self.partial_save_seconds:
                    self.storage.save_partial_answer(answer_id, text)
                    saved_at = time.monotonic()
                yield event
        finally:
            # Also when the caller went away mid-answer: the partial answer is kept, marked stopped.
            record = record or GenerationRecord(status="stopped", text=text)
            record.text = record.text.strip()
            if record.error:  # shown to the visitor: no server path in it
                record.error = record.error.replace(str(self.storage.data_dir), "<data>")
            self.storage.finish_answer(
                conversation_id,
                record.text,
                record.status,
                task=task,
                record=record_fields(record, request.settings, self.engine.name),
                message_id=answer_id,
            )
            if record.status == "error":
                logger.warning("Answer %d failed: %s", answer_id, record.error)
        yield Finished(record)

    # Reading and changing stored conversations

    def get(self, owner: str | None, conversation_id: int) -> dict:
        if owner is None:
            raise UserError("That conversation does not exist (or is not yours).")
        try:
            return self.storage.get_conversation(conversation_id, owner=owner)
        except LookupError as error:
            raise UserError(f"There is no conversation {conversation_id} (or it is not yours).") from error

    def search(self, owner: str | None, query: str, limit: int = 200) -> list[dict]:
        if owner is None:
            return []
        return self.storage.list_conversations(search=query or None, limit=limit, owner=owner)

    def hide(self, owner: str | None, message_ids: list[int]) -> None:
        if owner is not None and message_ids:
            self.storage.hide_messages(message_ids, owner=owner)

    def feedback(self, owner: str | None, message_id: int, value: str | None) -> None:
        try:
            self.storage.save_feedback(message_id, value, owner=owner or "")
        except LookupError as error:
            raise UserError("That message does not exist (or is not yours).") from error

    def export(self, owner: str | None, conversation_ids: list[int], out_dir: Path, fmt: str) -> Path:
        """The export folder's file; "llava" writes a training folder (`data.json` + `images/`)."""
        if owner is None:
            raise UserError("Nothing to export.")
        try:
            if fmt == "llava":
                return self.storage.export_llava(conversation_ids, out_dir, owner=owner)
            return self.storage.export(conversation_ids, out_dir, fmt, owner=owner)
        except LookupError as error:
            raise UserError(f"{error} (or it is not yours).".capitalize()) from error

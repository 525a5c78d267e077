"""`ConversationService`: one turn from the saved question to the saved answer, for the chat tab and `/answer` alike.

It owns the turn both share, in one order, so neither handler repeats it: check the raw settings, check the message
against the limits and save the question (for a new chat, with its conversation, in one transaction), save an empty
"streaming" answer, stream the engine's pieces while saving the partial text every few seconds, and save the final
answer with its generation record however the stream ends (done, stopped, failed, refused, or the caller went
away). A crash leaves the streaming answer for `ConversationStore.recover_interrupted` to mark. The chat sends its
question as an event of its own (`ask`), before it waits in the model's queue, and `answer` then answers it; `/answer`
hands its question to `answer`, which saves it with its answer. The turns go into a `ChatSession`, which the chat
tab shows; the handlers only translate the events for Gradio. Every verb that names a conversation checks that the
caller owns it.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import cast

from model.shared import num_image_tokens

from .chat_session import ChatSession, ChatTurn
from .errors import UserError
from .fields import Refusal, optional_whole_number
from .limits.chat import ImageGate
from .presets import FREE_CHAT
from .serving.base import ChatEngine
from .serving.pacing import STREAM_INTERVAL, paced
from .serving.types import ChatRequest, Finished, GenerationRecord, GenerationSettings, TextDelta
from .storage import ConversationStore, SavedTurn

logger = logging.getLogger(__name__)
# Largest image side a request may ask for: an image this size must leave half the context for the conversation.
MAX_IMAGE_SIDE = 4096


@dataclass
class RawSettings:
    """An answer's settings as the Parameters fields (or an API caller) send them: numbers checked by
    `ui.refusals.Blocks` (any field may hold the `Refusal` of a value it refused instead), the optional seed and image
    size as text."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: float = 256
    repetition_penalty: float = 1.0
    seed: str | float | None = None
    image_max_size: str | float | None = None


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
        store: ConversationStore,
        engine: ChatEngine,
        images: ImageGate,
        partial_save_seconds: float = 2.0,
        stream_interval: float = STREAM_INTERVAL,
    ):
        self.store, self.engine, self.images = store, engine, images
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

    def settings(self, raw: RawSettings) -> GenerationSettings:
        """The answer's settings from `raw`, checked against the loaded model.

        Raises:
            UserError: a refused field, or one the model cannot use (a seed that is not a whole number, more new
                tokens or a larger image than its context takes).
        """
        refused = Refusal.first(*astuple(raw))
        if refused is not None:
            raise UserError(refused)
        settings = GenerationSettings(
            max_new_tokens=int(raw.max_new_tokens),
            temperature=float(raw.temperature),
            top_p=float(raw.top_p),
            repetition_penalty=float(raw.repetition_penalty),
            seed=optional_whole_number(raw.seed, "The seed"),
            image_max_size=optional_whole_number(raw.image_max_size, "The image size", positive=True),
        )
        if not 1 <= settings.max_new_tokens <= self.max_new_tokens_limit():
            raise UserError(
                f"Max new tokens must be between 1 and {self.max_new_tokens_limit()} for this model "
                f"(context {self.engine.context_length} tokens)."
            )
        if settings.image_max_size is not None and not 16 <= settings.image_max_size <= self.image_size_limit():
            raise UserError(f"Image size must be between 16 and {self.image_size_limit()} pixels for this model.")
        return settings

    # A turn

    def ask(self, session: ChatSession, text: str, files: list[str], task: str) -> ChatTurn:
        """Check the message and save it as the session's next user turn; a new conversation (the session has none
        yet) belongs to `session.owner`. The chat's question, sent before its answer waits for the model.

        Raises:
            UserError: a limit is broken, an image is refused, or the conversation is not the owner's.
        """
        return self._save_question(session, text, files, task, begin_answer=False)[0]

    def answer(
        self,
        session: ChatSession,
        task: str | Refusal,
        raw: RawSettings,
        stop: threading.Event | None = None,
        question: tuple[str, list[str]] | None = None,
    ) -> Iterator[TextDelta | Finished]:
        """The turn: check `raw`, save `question` (text, uploaded files) with an empty "streaming" answer, or begin
        the answer to the session's last turn (a question `ask` saved), stream it into the session's new answer
        turn, saving its text as it grows, and save how it ended; the last event is one `Finished`.

        A refused task or setting is the answer's error when its question is already on record; a `question` is
        refused before anything is saved.

        Raises:
            UserError: `question` and a refused task or setting, a broken limit, a refused image, or a conversation
                that is not the session owner's (before anything is saved or streamed).
        """
        refused = Refusal.first(task)
        task = FREE_CHAT if isinstance(task, Refusal) else task  # the task a refused answer is saved under
        settings = GenerationSettings()
        try:
            settings = self.settings(raw)
        except UserError as error:
            refused = refused or str(error)
        if refused and question is not None:
            raise UserError(refused)
        if question is not None:
            answer_id = cast(int, self._save_question(session, *question, task, begin_answer=True)[1])
        elif session.conversation_id is None:
            raise UserError("There is no question to answer yet.")
        else:
            answer_id = self.store.begin_answer(session.conversation_id, task)
        request = ChatRequest(session.engine_turns(), settings, stop or threading.Event())
        answer = ChatTurn("assistant", "", message_id=answer_id, status="streaming")
        session.turns.append(answer)
        if refused:
            self.store.finish_answer(answer_id, "", "error", error=refused)
            answer.status, answer.error = "error", refused
            yield Finished(GenerationRecord("error", "", error=refused))
            return
        yield from self._streamed(answer_id, answer, request)

    def _streamed(self, answer_id: int, answer: ChatTurn, request: ChatRequest) -> Iterator[TextDelta | Finished]:
        """The engine's events for `request`, grown into `answer`, whose text is saved every `partial_save_seconds`
        and which is finished however the stream ends."""
        text, record, saved_at = "", None, time.monotonic()
        try:
            for event in paced(self.engine.stream(request), self.stream_interval):
                if isinstance(event, Finished):
                    record = event.record
                    continue
                text += event.text
                answer.text = text
                if time.monotonic() - saved_at >= self.partial_save_seconds:
                    self.store.save_partial_answer(answer_id, text)
                    saved_at = time.monotonic()
                yield event
        finally:
            # Also when the caller went away mid-answer: the partial answer is kept, marked stopped.
            record = record or GenerationRecord(status="stopped", text=text)
            record.text = record.text.strip()
            if record.error:  # shown to the visitor: no server path in it
                record.error = record.error.replace(str(self.store.data_dir), "<data>")
            fields = record_fields(record, request.settings, self.engine.name)
            self.store.finish_answer(answer_id, record.text, record.status, record=fields)
            answer.text, answer.status, answer.error = record.text, record.status, record.error
            if record.status == "error":
                logger.warning("Answer %d failed: %s", answer_id, record.error)
        yield Finished(record)

    def _save_question(
        self, session: ChatSession, text: str, files: list[str], task: str, begin_answer: bool
    ) -> tuple[ChatTurn, int | None]:
        """Save a question (and with `begin_answer` its empty answer) and add it to the session; returns its turn
        and the answer's id."""
        if session.owner is None:
            raise UserError("A conversation needs an owner.")
        self.images.check_message(text, files)
        images = [(Path(path).read_bytes(), Path(path).name) for path in files]
        try:
            saved: SavedTurn = self.store.save_question(
                session.conversation_id,
                text,
                task=task,
                images=images,
                owner=session.owner,
                begin_answer=begin_answer,
            )
        except LookupError as error:
            raise UserError("That conversation does not exist (or is not yours).") from error
        except ValueError as error:  # storage's own format check
            raise UserError(str(error)) from error
        session.conversation_id = saved.conversation_id
        question = ChatTurn("user", text, images=saved.image_paths, message_id=saved.message_id)
        session.turns.append(question)
        return question, saved.answer_id

    # Reading and changing stored conversations

    def open(self, owner: str | None, conversation_id: int) -> ChatSession:
        """A stored conversation as `owner` continues it in the chat."""
        if owner is None:
            raise UserError("That conversation does not exist (or is not yours).")
        try:
            return ChatSession.from_stored(self.store.get_conversation(conversation_id, owner=owner), owner)
        except LookupError as error:
            raise UserError(f"There is no conversation {conversation_id} (or it is not yours).") from error

    def search(self, owner: str | None, query: str, limit: int = 200) -> list[dict]:
        if owner is None:
            return []
        return self.store.list_conversations(search=query or None, limit=limit, owner=owner)

    def drop(self, session: ChatSession, index: int) -> list[ChatTurn]:
        """Remove the session's turns from `index` on (undo, retry, edit) and return them; their messages are hidden
        in storage, not deleted."""
        removed = session.truncate(index)
        message_ids = [turn.message_id for turn in removed if turn.message_id is not None]
        if session.owner is not None and message_ids:
            self.store.hide_messages(message_ids, owner=session.owner)
        return removed

    def feedback(self, owner: str | None, message_id: int, value: str | None) -> None:
        try:
            self.store.save_feedback(message_id, value, owner=owner or "")
        except LookupError as error:
            raise UserError("That message does not exist (or is not yours).") from error

    def export(self, owner: str | None, conversation_ids: list[int], out_dir: Path, fmt: str) -> Path:
        """The export folder's file; "llava" writes a training folder (`data.json` + `images/`)."""
        if owner is None:
            raise UserError("Nothing to export.")
        try:
            if fmt == "llava":
                return self.store.export_llava(conversation_ids, out_dir, owner=owner)
            return self.store.export(conversation_ids, out_dir, fmt, owner=owner)
        except LookupError as error:
            raise UserError(f"{error} (or it is not yours).".capitalize()) from error

"""`ConversationStore`: the verbs that log conversations, their messages and images, feedback and generation records.

Every verb runs in a short session of the shared `Database` (see there for threads and SQLite's write lock).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sqlalchemy import Table, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, selectinload

from . import exports, records
from .database import Database
from .images import ImageInfo, describe, write_once
from .schema import (
    ADMIN_OWNER,
    ANSWER_STATUSES,
    FEEDBACK_VALUES,
    INTERRUPTED,
    STREAMING,
    USER_STATUS,
    Conversation,
    Feedback,
    Generation,
    Image,
    Message,
    MessageImage,
    utcnow,
)


@dataclass(frozen=True)
class SavedTurn:
    """What `save_question` saved: the question's ids, its images' absolute paths in order, and the id of its
    "streaming" answer when it began one."""

    conversation_id: int
    message_id: int
    image_paths: list[str]
    answer_id: int | None = None


class ConversationStore:
    """Conversations, messages, images, feedback and generation records in `database` (images under its
    `data_dir/images/`, by content hash)."""

    def __init__(self, database: Database):
        self.database = database
        self.data_dir = database.data_dir
        self._session = database.session

    # Conversations and messages
    #
    # Verbs that take `owner` act only on that owner's conversations (ADMIN_OWNER: on all); a conversation of
    # someone else is reported exactly like a missing one, so ids reveal nothing. Without `owner` nothing is checked
    # (the app's own bookkeeping, scripts, tests).

    def save_question(
        self,
        conversation_id: int | None,
        text: str,
        task: str | None = None,
        images: Iterable[tuple[bytes, str]] = (),
        owner: str | None = None,
        begin_answer: bool = False,
    ) -> SavedTurn:
        """Save a user turn with its images, given as (file bytes, file name) pairs, and, with `begin_answer`, its
        empty "streaming" answer (see `begin_answer`) in the same transaction: the request path of a turn makes one
        write and no read. Returns the ids and where the question's images are stored.

        `conversation_id` None starts a conversation (of `owner`) in the same transaction, so a refused image never
        leaves an empty conversation behind. Images are validated and written before the transaction, so a bad file
        fails the call without a half-saved message; their files are content-addressed, so a leftover from a failed
        call is simply reused later. Plain inserts rather than ORM objects: this is on the way to every answer's
        first token, and the unit of work's flushes cost several times the SQL they emit.

        Raises:
            LookupError: the conversation does not exist or is not `owner`'s.
            ValueError: an image is not an accepted format.
        """
        described = [(describe(data, name), data) for data, name in images]
        for info, data in described:
            write_once(self.data_dir, info, data)
        now = utcnow()
        with self._session(write=True) as s:
            if conversation_id is None:
                new = {"task": task, "owner": owner or ADMIN_OWNER, "title": records.title_from(text)}
                conversation_id = _insert(s, _INSERT_CONVERSATION, new, created_at=now, updated_at=now, deleted=False)
                position = 0
            else:
                conversation = self._live(s, conversation_id, owner)
                last = s.scalar(select(func.max(Message.position)).where(Message.conversation_id == conversation_id))
                position = 0 if last is None else last + 1
                changed: dict[str, object] = {"updated_at": now}
                if conversation.title is None:
                    changed["title"] = records.title_from(text)
                s.execute(update(Conversation).where(Conversation.id == conversation_id).values(**changed))
            question = {"conversation_id": conversation_id, "task": task, "error": None, "hidden": False}
            message_id = _insert(
                s,
                _INSERT_MESSAGE,
                question,
                role="user",
                text=text,
                status=USER_STATUS,
                position=position,
                created_at=now,
            )
            paths = []
            for index, (info, _) in enumerate(described):
                image_id, path = self._image_id(s, info)
                s.execute(_INSERT_MESSAGE_IMAGE, {"message_id": message_id, "position": index, "image_id": image_id})
                paths.append(str(self.data_dir / path))
            answer_id = None
            if begin_answer:
                answer = {"role": "assistant", "text": "", "status": STREAMING, "position": position + 1}
                answer_id = _insert(s, _INSERT_MESSAGE, question, **answer, created_at=now)
            return SavedTurn(conversation_id, message_id, paths, answer_id)

    def begin_answer(self, conversation_id: int, task: str | None = None) -> int:
        """Save an empty answer with status "streaming" before generating; returns its message id.

        `save_partial_answer` keeps its text current, `finish_answer` closes it; if the app dies
        first, `recover_interrupted` marks it "interrupted" with the text saved so far.
        """
        with self._session(write=True) as s:
            return self._append(s, self._live(s, conversation_id), "assistant", "", task, STREAMING).id

    def save_partial_answer(self, message_id: int, text: str) -> None:
        """The text generated so far of an answer that is still streaming."""
        with self._session(write=True) as s:
            s.execute(update(Message).where(Message.id == message_id, Message.status == STREAMING).values(text=text))

    def finish_answer(
        self, answer_id: int, text: str, status: str, record: dict | None = None, error: str | None = None
    ) -> None:
        """Complete the answer `begin_answer` (or `save_question(begin_answer=True)`) saved, in place: its text
        (complete, stopped with its partial text, or failed) and its generation record at once.

        Args:
            status: "done", "stopped" or "error".
            record: model, parameters (temperature, top_p, ...), prompt_tokens, new_tokens, time_to_first_token,
                duration, status, error; status and error default to the message's.
            error: the message shown for a failed answer; defaults to `record["error"]`.
        """
        if status not in ANSWER_STATUSES:
            raise ValueError(f"answer status must be one of {ANSWER_STATUSES}, got {status!r}")
        error = error if error is not None else (record or {}).get("error")
        generation = records.generation_values(record, status, error) if record is not None else None
        now = utcnow()
        # Plain statements, as in `save_question`: this closes every answer, and the unit of work's loads and flush
        # cost twice the SQL they emit.
        with self._session(write=True) as s:
            row = s.execute(_ANSWER_CONVERSATION, {"answer_id": answer_id}).first()
            if row is None:
                raise LookupError(f"no answer {answer_id}")
            if row.deleted:
                raise LookupError(f"no conversation {row.conversation_id}")
            s.execute(_FINISH_ANSWER, {"answer_id": answer_id, "text": text, "status": status, "error": error})
            s.execute(_TOUCH_CONVERSATION, {"conversation_id": row.conversation_id, "now": now})
            if generation is not None:
                _insert(s, _INSERT_GENERATION, generation, message_id=answer_id, created_at=now)

    def recover_interrupted(self) -> list[int]:
        """At start-up: answers left "streaming" by a crash become "interrupted" (their saved partial text stays),
        and a question whose answer never began (it waited in the queue) gets an empty "interrupted" answer.
        Returns the ids of the conversations touched."""
        with self._session(write=True) as s:
            streaming = list(s.scalars(select(Message).where(Message.status == STREAMING)))
            touched = {m.conversation_id for m in streaming}
            for message in streaming:
                message.status, message.error = INTERRUPTED, "the app stopped before this answer was finished"
            last = (
                select(Message.conversation_id, func.max(Message.position).label("position"))
                .where(Message.hidden.is_(False))
                .group_by(Message.conversation_id)
                .subquery()
            )
            unanswered = s.scalars(
                select(Message)
                .join(
                    last, and_(Message.conversation_id == last.c.conversation_id, Message.position == last.c.position)
                )
                .where(Message.role == "user")
            )
            for question in list(unanswered):
                s.add(
                    Message(
                        conversation_id=question.conversation_id,
                        role="assistant",
                        text="",
                        task=question.task,
                        status=INTERRUPTED,
                        error="the app stopped before this question was answered",
                        position=question.position + 1,
                    )
                )
                touched.add(question.conversation_id)
            return sorted(touched)

    def hide_messages(self, message_ids: Iterable[int], owner: str | None = None) -> None:
        """Hide messages (undo, retry, edit); they stay in the database and in `get_conversation(include_hidden)`."""
        ids = list(message_ids)
        with self._session(write=True) as s:
            query = update(Message).where(Message.id.in_(ids))
            if owner is not None and owner != ADMIN_OWNER:
                owned = select(Conversation.id).where(Conversation.owner == owner)
                query = query.where(Message.conversation_id.in_(owned))
            s.execute(query.values(hidden=True))

    def save_feedback(self, message_id: int, value: str | None, owner: str | None = None) -> None:
        """Record a like or dislike (None clears it); earlier clicks stay in the log, the latest one counts."""
        if value is not None and value not in FEEDBACK_VALUES:
            raise ValueError(f"feedback must be one of {FEEDBACK_VALUES} or None, got {value!r}")
        with self._session(write=True) as s:
            message = s.get(Message, message_id)
            if message is None or not _owns(s.get(Conversation, message.conversation_id), owner):
                raise LookupError(f"no message {message_id}")
            s.add(Feedback(message_id=message_id, value=value))

    def list_conversations(
        self, search: str | None = None, limit: int = 50, offset: int = 0, owner: str | None = None
    ) -> list[dict]:
        """Conversations, newest activity first, optionally those whose title or a visible message contains
        `search` (case-insensitive), and with a visible message; each with id, title, task, created_at, updated_at, message_count, preview,
        and status (the last answer's: "interrupted" shows a crash)."""
        visible = and_(Message.conversation_id == Conversation.id, Message.hidden.is_(False))
        count = select(func.count(Message.id)).where(visible).correlate(Conversation).scalar_subquery()
        preview = (
            select(Message.text)
            .where(visible, Message.role == "user")
            .order_by(Message.position)
            .limit(1)
            .correlate(Conversation)
            .scalar_subquery()
        )
        last_answer = (
            select(Message.status)
            .where(visible, Message.role == "assistant")
            .order_by(Message.position.desc())
            .limit(1)
            .correlate(Conversation)
            .scalar_subquery()
        )
        # A conversation whose every message was undone is not listed (its messages stay, hidden, in the log).
        query = select(Conversation, count, preview, last_answer).where(
            Conversation.deleted.is_(False), exists().where(visible)
        )
        if owner is not None and owner != ADMIN_OWNER:
            query = query.where(Conversation.owner == owner)
        if search and search.strip():
            escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            matches = exists().where(visible, Message.text.ilike(pattern, escape="\\"))
            query = query.where(or_(Conversation.title.ilike(pattern, escape="\\"), matches))
        query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit).offset(offset)
        with self._session() as s:
            rows = s.execute(query).all()
        return [self._summary(conversation, n, first, status) for conversation, n, first, status in rows]

    def get_conversation(self, conversation_id: int, include_hidden: bool = False, owner: str | None = None) -> dict:
        """A conversation with its messages in order (each with images, feedback and generation record)."""
        loading = selectinload(Conversation.messages)
        query = (
            select(Conversation)
            .where(Conversation.id == conversation_id)
            .options(
                loading.selectinload(Message.image_links).joinedload(MessageImage.image),
                loading.selectinload(Message.feedback),
                loading.selectinload(Message.generation),
            )
        )
        with self._session() as s:
            conversation = s.scalar(query)
            if conversation is None or not _owns(conversation, owner):
                raise LookupError(f"no conversation {conversation_id}")
            shown = [m for m in conversation.messages if include_hidden or not m.hidden]
            return records.conversation_dict(conversation, [records.message_dict(m, self.data_dir) for m in shown])

    # Exports

    def export(
        self,
        conversation_ids: Iterable[int],
        out_dir: str | Path,
        fmt: str,
        owner: str | None = None,
        include_hidden: bool = False,
    ) -> Path:
        """Write `conversations.json` ("json", all metadata) or `conversations.md` ("markdown") into `out_dir`, with
        the images they show copied to `out_dir/images/` and linked by relative paths; returns the file's path.
        Raises LookupError for a conversation that does not exist or is not `owner`'s."""
        conversations = [self.get_conversation(i, include_hidden, owner) for i in conversation_ids]
        return exports.write_export(conversations, out_dir, fmt)

    def export_llava(self, conversation_ids: Iterable[int], out_dir: str | Path, owner: str | None = None) -> Path:
        """Write a LLaVA-format training folder (`data.json` + `images/`) and return the path of `data.json`."""
        return exports.write_llava([self.get_conversation(i, owner=owner) for i in conversation_ids], out_dir)

    # Helpers (inside an open session)

    @staticmethod
    def _live(s: Session, conversation_id: int, owner: str | None = None) -> Conversation:
        conversation = s.get(Conversation, conversation_id)
        if conversation is None or conversation.deleted or not _owns(conversation, owner):
            raise LookupError(f"no conversation {conversation_id}")
        return conversation

    @staticmethod
    def _append(
        s: Session,
        conversation: Conversation,
        role: str,
        text: str,
        task: str | None,
        status: str,
        error: str | None = None,
    ) -> Message:
        last = s.scalar(select(func.max(Message.position)).where(Message.conversation_id == conversation.id))
        message = Message(
            conversation_id=conversation.id,
            role=role,
            text=text,
            task=task,
            status=status,
            error=error,
            position=0 if last is None else last + 1,
        )
        s.add(message)
        conversation.updated_at = utcnow()
        s.flush()
        return message

    @staticmethod
    def _image_id(s: Session, info: ImageInfo) -> tuple[int, str]:
        """The id and stored path of the image row for `info`, inserted if it is new."""
        row = s.execute(_IMAGE_BY_HASH, {"sha256": info.sha256}).first()
        if row is not None:
            return row[0], row[1]
        values = {"sha256": info.sha256, "path": info.relative_path, "mime": info.mime, "size": info.size}
        image_id = _insert(s, _INSERT_IMAGE, values, width=info.width, height=info.height, created_at=utcnow())
        return image_id, info.relative_path

    @staticmethod
    def _summary(
        conversation: Conversation, message_count: int, first_user_text: str | None, last_status: str | None
    ) -> dict:
        return {
            "id": conversation.id,
            "title": conversation.title,
            "task": conversation.task,
            "status": last_status,
            "created_at": records.iso(conversation.created_at),
            "updated_at": records.iso(conversation.updated_at),
            "message_count": message_count,
            "preview": records.title_from(first_user_text or "", 80) or "",
        }


# The statements that save a question, built once (their compiled form is cached): values are bound parameters.
_INSERT_CONVERSATION = insert(cast(Table, Conversation.__table__))
_INSERT_MESSAGE = insert(cast(Table, Message.__table__))
_INSERT_MESSAGE_IMAGE = insert(cast(Table, MessageImage.__table__))
_INSERT_IMAGE = insert(cast(Table, Image.__table__))
_IMAGE_BY_HASH = select(Image.id, Image.path).where(Image.sha256 == bindparam("sha256"))
# The statements that finish an answer.
_ANSWER_CONVERSATION = (
    select(Message.conversation_id, Conversation.deleted)
    .join(Conversation, Conversation.id == Message.conversation_id)
    .where(Message.id == bindparam("answer_id"), Message.role == "assistant")
)
_FINISH_ANSWER = (
    update(Message)
    .where(Message.id == bindparam("answer_id"))
    .values(text=bindparam("text"), status=bindparam("status"), error=bindparam("error"))
)
_TOUCH_CONVERSATION = (
    update(Conversation).where(Conversation.id == bindparam("conversation_id")).values(updated_at=bindparam("now"))
)
_INSERT_GENERATION = insert(cast(Table, Generation.__table__))


def _insert(s: Session, statement, values: dict, **more) -> int:
    """Run one of the inserts above with these column values; returns the new row's id."""
    key = cast(CursorResult, s.execute(statement, {**values, **more})).inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


def _owns(conversation: Conversation | None, owner: str | None) -> bool:
    """No owner given (internal use) or the admin: any conversation; else only the owner's own."""
    return conversation is not None and (owner is None or owner == ADMIN_OWNER or conversation.owner == owner)

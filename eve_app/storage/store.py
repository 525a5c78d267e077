"""`Storage`: the verbs the app uses to log conversations, images, feedback, generation records and jobs.

Each verb opens a short session of its own (`with self._session() as s`), so the object is safe to share between
Gradio's worker threads: the Engine and its pool are thread-safe, sessions are not shared. Write verbs take
SQLite's write lock when they begin (see `database.py`), which makes read-then-write steps like "next position in
the conversation" atomic, and the busy timeout makes concurrent writers queue instead of failing.
"""

import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, selectinload, sessionmaker

from . import exports, migrations, records
from .database import default_url, is_memory_sqlite, make_engine, write_engine
from .images import ImageInfo, describe, write_once
from .jobs import JobVerbs
from .schema import (
    ANSWER_STATUSES,
    FEEDBACK_VALUES,
    USER_STATUS,
    Conversation,
    Feedback,
    Image,
    Message,
    MessageImage,
    utcnow,
)


class Storage(JobVerbs):
    """The app's database and image folder.

    Args:
        url: any SQLAlchemy URL; None means the SQLite file `<data_dir>/eve.db`.
        data_dir: folder for the default database and for `images/`, created if missing.

    Raises:
        migrations.SchemaVersionError: the database was written by a newer version of the app.
    """

    def __init__(self, url: str | None = None, data_dir: str | Path = "data"):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = url or default_url(self.data_dir)
        self.engine = make_engine(url)
        # An in-memory database is one connection shared by all threads: let one session use it at a time.
        self._lock: AbstractContextManager = threading.RLock() if is_memory_sqlite(make_url(url)) else nullcontext()
        writer = write_engine(self.engine)
        try:
            self.schema_version = migrations.prepare(writer)
        except Exception:
            self.engine.dispose()
            raise
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(writer, expire_on_commit=False)

    def close(self) -> None:
        """Release pooled connections (lets SQLite checkpoint and remove its WAL file)."""
        self.engine.dispose()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with self._lock, (self._writes if write else self._reads)() as session, session.begin():
            yield session

    # Conversations and messages

    def create_conversation(self, title: str | None = None, task: str | None = None) -> int:
        """Start a conversation; without a title, the first user message's text becomes its title."""
        with self._session(write=True) as s:
            conversation = Conversation(title=records.title_from(title) if title else None, task=task)
            s.add(conversation)
            s.flush()
            return conversation.id

    def save_user_message(self, conversation_id: int, text: str, task: str | None = None,
                          images: Iterable[tuple[bytes, str]] = ()) -> int:
        """Save a user turn with its images, given as (file bytes, file name) pairs; returns the message id.

        Images are validated and written before the transaction, so a bad file fails the call without a half-saved
        message; their files are content-addressed, so a leftover from a failed call is simply reused later.
        """
        described = [(describe(data, name), data) for data, name in images]
        for info, data in described:
            write_once(self.data_dir, info, data)
        with self._session(write=True) as s:
            conversation = self._live(s, conversation_id)
            message = self._append(s, conversation, "user", text, task, USER_STATUS)
            for position, (info, _) in enumerate(described):
                s.add(MessageImage(message_id=message.id, position=position, image=self._image_row(s, info)))
            if conversation.title is None:
                conversation.title = records.title_from(text)
            return message.id

    def finish_answer(self, conversation_id: int, text: str, status: str, task: str | None = None,
                      record: dict | None = None, error: str | None = None) -> int:
        """Save an answer (complete, stopped with its partial text, or failed) and its generation record at once.

        Args:
            status: "done", "stopped" or "error".
            record: model, parameters (temperature, top_p, ...), prompt_tokens, new_tokens, time_to_first_token,
                duration, status, error; status and error default to the message's.
            error: the message shown for a failed answer; defaults to `record["error"]`.
        """
        if status not in ANSWER_STATUSES:
            raise ValueError(f"answer status must be one of {ANSWER_STATUSES}, got {status!r}")
        error = error if error is not None else (record or {}).get("error")
        generation = records.generation_from(record, status, error) if record is not None else None
        with self._session(write=True) as s:
            conversation = self._live(s, conversation_id)
            message = self._append(s, conversation, "assistant", text, task, status, error)
            if generation is not None:
                generation.message_id = message.id
                s.add(generation)
            return message.id

    def store_image(self, data: bytes, filename_hint: str = "") -> str:
        """Store an image file once by content and return its sha256 (the same bytes give the same row and file)."""
        info = describe(data, filename_hint)
        write_once(self.data_dir, info, data)
        with self._session(write=True) as s:
            return self._image_row(s, info).sha256

    def image_path(self, sha256: str) -> Path:
        """Absolute path of a stored image."""
        with self._session() as s:
            relative = s.scalar(select(Image.path).where(Image.sha256 == sha256))
        if relative is None:
            raise LookupError(f"no stored image {sha256}")
        return self.data_dir / relative

    def hide_messages(self, message_ids: Iterable[int]) -> None:
        """Hide messages (undo, retry, edit); they stay in the database and in `get_conversation(include_hidden)`."""
        ids = list(message_ids)
        with self._session(write=True) as s:
            s.execute(update(Message).where(Message.id.in_(ids)).values(hidden=True))

    def hide_last_exchange(self, conversation_id: int) -> list[int]:
        """Hide the last visible user message and everything after it (undo); returns the hidden ids."""
        with self._session(write=True) as s:
            visible = self._visible(s, conversation_id)
            users = [m for m in visible if m.role == "user"]
            hidden = [m for m in visible if users and m.position >= users[-1].position]
            for message in hidden:
                message.hidden = True
            return [m.id for m in hidden]

    def hide_last_answer(self, conversation_id: int) -> list[int]:
        """Hide the last visible message when it is an answer (retry); returns the hidden ids (empty or one)."""
        with self._session(write=True) as s:
            visible = self._visible(s, conversation_id)
            if not visible or visible[-1].role != "assistant":
                return []
            visible[-1].hidden = True
            return [visible[-1].id]

    def save_feedback(self, message_id: int, value: str | None) -> None:
        """Record a like or dislike (None clears it); earlier clicks stay in the log, the latest one counts."""
        if value is not None and value not in FEEDBACK_VALUES:
            raise ValueError(f"feedback must be one of {FEEDBACK_VALUES} or None, got {value!r}")
        with self._session(write=True) as s:
            if s.get(Message, message_id) is None:
                raise LookupError(f"no message {message_id}")
            s.add(Feedback(message_id=message_id, value=value))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Set the title (whitespace collapsed, at most 200 characters); counts as activity for the list order."""
        with self._session(write=True) as s:
            conversation = self._live(s, conversation_id)
            conversation.title = " ".join(title.split())[:200] or None
            conversation.updated_at = utcnow()

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: the conversation leaves the list, and its rows and images stay for the record."""
        with self._session(write=True) as s:
            self._live(s, conversation_id).deleted = True

    def list_conversations(self, search: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        """Conversations, newest activity first, optionally those whose title or a visible message contains
        `search` (case-insensitive); each with id, title, task, created_at, updated_at, message_count, preview."""
        visible = and_(Message.conversation_id == Conversation.id, Message.hidden.is_(False))
        count = select(func.count(Message.id)).where(visible).correlate(Conversation).scalar_subquery()
        preview = (select(Message.text).where(visible, Message.role == "user").order_by(Message.position)
                   .limit(1).correlate(Conversation).scalar_subquery())
        query = select(Conversation, count, preview).where(Conversation.deleted.is_(False))
        if search and search.strip():
            escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            matches = exists().where(visible, Message.text.ilike(pattern, escape="\\"))
            query = query.where(or_(Conversation.title.ilike(pattern, escape="\\"), matches))
        query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit).offset(offset)
        with self._session() as s:
            rows = s.execute(query).all()
        return [self._summary(conversation, n, first) for conversation, n, first in rows]

    def get_conversation(self, conversation_id: int, include_hidden: bool = False) -> dict:
        """A conversation with its messages in order (each with images, feedback and generation record)."""
        loading = selectinload(Conversation.messages)
        query = select(Conversation).where(Conversation.id == conversation_id).options(
            loading.selectinload(Message.image_links).joinedload(MessageImage.image),
            loading.selectinload(Message.feedback), loading.selectinload(Message.generation))
        with self._session() as s:
            conversation = s.scalar(query)
            if conversation is None:
                raise LookupError(f"no conversation {conversation_id}")
            shown = [m for m in conversation.messages if include_hidden or not m.hidden]
            return records.conversation_dict(conversation, [records.message_dict(m, self.data_dir) for m in shown])

    def count_messages(self, conversation_id: int | None = None, include_hidden: bool = False) -> int:
        """Messages in one conversation, or in all of them."""
        query = select(func.count(Message.id))
        if conversation_id is not None:
            query = query.where(Message.conversation_id == conversation_id)
        if not include_hidden:
            query = query.where(Message.hidden.is_(False))
        with self._session() as s:
            return s.scalar(query)

    # Exports

    def export_json(self, conversation_ids: Iterable[int], include_hidden: bool = False) -> str:
        """The conversations with all their metadata as a JSON list (see `get_conversation`)."""
        return exports.to_json([self.get_conversation(i, include_hidden) for i in conversation_ids])

    def export_markdown(self, conversation_ids: Iterable[int], relative_to: str | Path | None = None) -> str:
        """A transcript; image links are relative to `relative_to` (default: the data dir)."""
        conversations = [self.get_conversation(i) for i in conversation_ids]
        return exports.to_markdown(conversations, relative_to or self.data_dir)

    def export_llava(self, conversation_ids: Iterable[int], out_dir: str | Path) -> Path:
        """Write a LLaVA-format training folder (`data.json` + `images/`) and return the path of `data.json`."""
        return exports.write_llava([self.get_conversation(i) for i in conversation_ids], out_dir)

    # Helpers (inside an open session)

    @staticmethod
    def _live(s: Session, conversation_id: int) -> Conversation:
        conversation = s.get(Conversation, conversation_id)
        if conversation is None or conversation.deleted:
            raise LookupError(f"no conversation {conversation_id}")
        return conversation

    @staticmethod
    def _append(s: Session, conversation: Conversation, role: str, text: str, task: str | None, status: str,
                error: str | None = None) -> Message:
        last = s.scalar(select(func.max(Message.position)).where(Message.conversation_id == conversation.id))
        message = Message(conversation_id=conversation.id, role=role, text=text, task=task, status=status,
                          error=error, position=0 if last is None else last + 1)
        s.add(message)
        conversation.updated_at = utcnow()
        s.flush()
        return message

    @staticmethod
    def _visible(s: Session, conversation_id: int) -> list[Message]:
        query = (select(Message).where(Message.conversation_id == conversation_id, Message.hidden.is_(False))
                 .order_by(Message.position))
        return list(s.scalars(query))

    @staticmethod
    def _image_row(s: Session, info: ImageInfo) -> Image:
        row = s.scalar(select(Image).where(Image.sha256 == info.sha256))
        if row is None:
            row = Image(sha256=info.sha256, path=info.relative_path, mime=info.mime, size=info.size,
                        width=info.width, height=info.height)
            s.add(row)
            s.flush()
        return row

    @staticmethod
    def _summary(conversation: Conversation, message_count: int, first_user_text: str | None) -> dict:
        return {
            "id": conversation.id, "title": conversation.title, "task": conversation.task,
            "created_at": records.iso(conversation.created_at), "updated_at": records.iso(conversation.updated_at),
            "message_count": message_count, "preview": records.title_from(first_user_text or "", 80) or "",
        }

"""ORM models: conversations, their messages, images stored once by content hash, feedback, generation records,
fine-tuning jobs, and the schema version.

Nothing is ever deleted by the app: a deleted conversation is flagged, and messages removed by undo, retry or edit
are hidden, so the full history stays available for review and for building training data.
"""

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Bump together with appending a function to migrations.MIGRATIONS (a test checks they agree).
SCHEMA_VERSION = 2

ROLES = ("user", "assistant")
USER_STATUS = "ok"
ANSWER_STATUSES = ("done", "stopped", "error")
STREAMING = "streaming"  # an answer being generated; its text is the partial answer saved so far
INTERRUPTED = "interrupted"  # an answer the app never finished (it crashed or was killed); keeps the partial text
MESSAGE_STATUSES = (USER_STATUS, *ANSWER_STATUSES, STREAMING, INTERRUPTED)
# Rows written before conversations had owners, and what the admin (password) sees: everything.
ADMIN_OWNER = "admin"
FEEDBACK_VALUES = ("like", "dislike")
JOB_STATUSES = ("queued", "running", "done", "failed", "aborted")


def utcnow() -> datetime:
    """Aware UTC: every stored time is UTC, so times from different machines and time zones compare."""
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    # timezone=True keeps the offset on databases that store it; SQLite hands back naive UTC (see records.iso).
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict: JSON}


class SchemaVersion(Base):
    """A single row holding the version the tables were created or last migrated to."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_listing", "deleted", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Who may see it: "browser:<hash of the browser's token>", "hf:<user>", "api", or ADMIN_OWNER (see security.py).
    owner: Mapped[str] = mapped_column(String(128), default=ADMIN_OWNER, server_default=ADMIN_OWNER, index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str | None] = mapped_column(String(64))  # task preset picked when the conversation started
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted: Mapped[bool] = mapped_column(default=False)

    messages: Mapped[list["Message"]] = relationship(back_populates="conversation", order_by="Message.position")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position"),
        CheckConstraint(_one_of("role", ROLES), name="ck_messages_role"),
        CheckConstraint(_one_of("status", MESSAGE_STATUSES), name="ck_messages_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[str | None] = mapped_column(String(64))
    position: Mapped[int]  # 0, 1, 2, ... within the conversation, hidden messages included
    status: Mapped[str] = mapped_column(String(16))  # "ok" for user messages; an answer's status otherwise
    error: Mapped[str | None] = mapped_column(Text)
    hidden: Mapped[bool] = mapped_column(default=False)  # removed by undo/retry/edit; kept for the record
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    image_links: Mapped[list["MessageImage"]] = relationship(order_by="MessageImage.position")
    feedback: Mapped[list["Feedback"]] = relationship(order_by="Feedback.id")
    generation: Mapped["Generation | None"] = relationship()


class Image(Base):
    """One row and one file per distinct content, however many messages show it."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(255))  # relative to the data dir: images/<aa>/<sha256>.<ext>
    mime: Mapped[str] = mapped_column(String(32))
    size: Mapped[int]  # bytes
    width: Mapped[int | None]
    height: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageImage(Base):
    __tablename__ = "message_images"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)  # order of the images within the message
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)

    image: Mapped[Image] = relationship()


class Feedback(Base):
    """A log of like/dislike clicks; the latest row is the message's current feedback (NULL: cleared)."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint(f"value IS NULL OR {_one_of('value', FEEDBACK_VALUES)}", name="ck_feedback"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    value: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Generation(Base):
    """How one answer was produced: model, sampling parameters, token counts and timings."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    model: Mapped[str | None] = mapped_column(String(255))
    # temperature, top_p, max_new_tokens, repetition_penalty, seed, image_max_size
    parameters: Mapped[dict] = mapped_column(default=dict)
    prompt_tokens: Mapped[int | None]
    new_tokens: Mapped[int | None]
    time_to_first_token: Mapped[float | None]  # seconds
    duration: Mapped[float | None]  # seconds, prompt processing included
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A fine-tuning job; the runner records its state here so the UI can re-attach after a restart."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(_one_of("status", JOB_STATUSES), name="ck_jobs_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    args: Mapped[dict | list] = mapped_column(JSON, default=dict)  # the training settings or argument list
    pid: Mapped[int | None]
    run_dir: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    final_metrics: Mapped[dict | None]
    error: Mapped[str | None] = mapped_column(Text)

"""Rows to plain dicts and back: what the verbs return is JSON-ready (ISO-8601 UTC times, absolute image paths)."""

from datetime import UTC, datetime
from pathlib import Path

from .schema import Conversation, Generation, Job, Message

TITLE_LENGTH = 60
# Keys accepted in `finish_answer(record=...)`; "text" is allowed (and ignored) so that a dataclass-as-dict of the
# engine's GenerationRecord can be passed straight through, its text being the message text.
GENERATION_FIELDS = (
    "model",
    "parameters",
    "prompt_tokens",
    "new_tokens",
    "time_to_first_token",
    "duration",
    "status",
    "error",
)
JOB_FIELDS = ("status", "args", "pid", "run_dir", "started_at", "finished_at", "final_metrics", "error")


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC; SQLite returns naive datetimes, which are UTC because we only ever store UTC."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def title_from(text: str, length: int = TITLE_LENGTH) -> str | None:
    """A conversation title from a user message: whitespace collapsed, cut at a word near `length` characters."""
    flat = " ".join(text.split())
    if len(flat) <= length:
        return flat or None
    cut = flat[: length - 1]
    if " " in cut[length // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def generation_values(record: dict, status: str, error: str | None) -> dict:
    """The column values of a Generation row from the caller's record dict; unknown keys are an error so typos do
    not lose data."""
    unknown = set(record) - set(GENERATION_FIELDS) - {"text"}
    if unknown:
        raise ValueError(f"unknown generation record fields {sorted(unknown)}; expected {GENERATION_FIELDS}")
    values = {key: record[key] for key in GENERATION_FIELDS if key in record}
    values.setdefault("status", status)
    values.setdefault("error", error)
    values["parameters"] = dict(values.get("parameters") or {})
    return values


def generation_dict(row: Generation | None) -> dict | None:
    """The generation record of an answer (None for user messages and answers saved without one)."""
    if row is None:
        return None
    return {
        "model": row.model,
        "parameters": row.parameters,
        "prompt_tokens": row.prompt_tokens,
        "new_tokens": row.new_tokens,
        "time_to_first_token": row.time_to_first_token,
        "duration": row.duration,
        "status": row.status,
        "error": row.error,
        "created_at": iso(row.created_at),
    }


def message_dict(row: Message, data_dir: Path) -> dict:
    """One message with its images (absolute paths, in order), current feedback and generation record."""
    return {
        "id": row.id,
        "role": row.role,
        "text": row.text,
        "task": row.task,
        "position": row.position,
        "status": row.status,
        "error": row.error,
        "hidden": row.hidden,
        "created_at": iso(row.created_at),
        "images": [str(data_dir / link.image.path) for link in row.image_links],
        "feedback": row.feedback[-1].value if row.feedback else None,
        "generation": generation_dict(row.generation),
    }


def conversation_dict(row: Conversation, messages: list[dict]) -> dict:
    """A conversation's fields with its already converted messages (the caller picks which to show)."""
    return {
        "id": row.id,
        "title": row.title,
        "task": row.task,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "deleted": row.deleted,
        "messages": messages,
    }


def job_dict(row: Job) -> dict:
    """A job's fields, times as ISO strings, so the UI can show or poll it without touching the ORM."""
    return {
        "id": row.id,
        "status": row.status,
        "args": row.args,
        "pid": row.pid,
        "run_dir": row.run_dir,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "final_metrics": row.final_metrics,
        "error": row.error,
    }

"""The checks of one LLaVA row that need no files: keys and types, turn order, answers, `<image>` placeholders.

A row is `{"id", "image": str | list[str] | absent, "conversations": [{"from": "human" | "gpt", "value": str}]}`.
The training data loader also accepts the roles "user" and "assistant", so they pass here too. Problems make a row
unusable (the trainer would skip it or fail); notes are accepted quirks worth knowing about.
"""

from dataclasses import dataclass, field
from pathlib import Path

from model.shared import IMAGE_PLACEHOLDER

ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


@dataclass
class RowReport:
    """One row of the dataset as the validator saw it.

    Attributes:
        index: position in the JSON list (0-based; messages count rows from 1).
        images: the image references as written; paths: where each was found (None: not found or unusable).
        turns: (role, text) pairs; problems: why the row cannot be trained on; notes: accepted quirks.
    """

    index: int
    sample_id: str | None = None
    images: list[str] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    turns: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_tokens: int = 0
    image_tokens: int = 0

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return f"row {self.index + 1}" + (f" (id {self.sample_id})" if self.sample_id is not None else "")


def _type_name(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_id(row: dict, report: RowReport) -> None:
    if "id" not in row:
        report.notes.append('no "id"; the row is named by its position')
    elif isinstance(row["id"], bool) or not isinstance(row["id"], str | int):
        report.problems.append(f'"id" must be a string or a number, got {_type_name(row["id"])}')
    else:
        report.sample_id = str(row["id"])


def _check_images(row: dict, report: RowReport) -> None:
    value = row.get("image")
    if value is None:
        return
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        report.problems.append(f'"image" must be a file name or a list of file names, got {_type_name(value)}')
        return
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            report.problems.append(f'"image"[{i}] must be a non-empty file name, got {name!r}')
        else:
            report.images.append(name)


def _check_turn(i: int, turn: object, report: RowReport) -> tuple[str, str] | None:
    where = f"turn {i + 1}"
    if not isinstance(turn, dict):
        report.problems.append(f'{where} must be an object with "from" and "value", got {_type_name(turn)}')
        return None
    if "from" not in turn:
        report.problems.append(f'{where} has no "from" (expected "human" or "gpt")')
        return None
    if turn["from"] not in ROLES:
        report.problems.append(f'{where}: "from" is {turn["from"]!r}; expected "human" or "gpt"')
        return None
    if not isinstance(turn.get("value"), str):
        report.problems.append(f'{where}: "value" must be a string, got {_type_name(turn.get("value"))}')
        return None
    return ROLES[turn["from"]], turn["value"]


def _check_order(report: RowReport) -> None:
    roles = [role for role, _ in report.turns]
    if roles[0] != "human":
        report.problems.append('turn 1 is from "gpt": conversations must start with a human turn')
    for i in range(1, len(roles)):
        if roles[i] == roles[i - 1]:
            report.problems.append(
                f'turns {i} and {i + 1} are both from "{roles[i]}": turns must alternate human, gpt, human, ...'
            )
            break
    for i, (role, text) in enumerate(report.turns):
        if role == "gpt" and not text.strip():
            report.problems.append(f"turn {i + 1} (gpt) is an empty answer")
    if "gpt" not in roles:
        report.problems.append("no gpt answer to train on")
    elif roles[-1] == "human":
        report.notes.append("the last human turn has no answer and is not trained on")


def _check_conversations(row: dict, report: RowReport) -> None:
    if "conversations" not in row:
        report.problems.append('missing "conversations" (the list of human/gpt turns)')
        return
    turns = row["conversations"]
    if not isinstance(turns, list):
        report.problems.append(f'"conversations" must be a list of turns, got {_type_name(turns)}')
        return
    if not turns:
        report.problems.append('"conversations" is empty')
        return
    checked = [_check_turn(i, turn, report) for i, turn in enumerate(turns)]
    if all(checked):
        report.turns = [turn for turn in checked if turn is not None]
        _check_order(report)


def _check_placeholders(report: RowReport) -> None:
    """`<image>` placeholders must match the images; one image without a placeholder is the LLaVA exception."""
    placeholders = sum(text.count(IMAGE_PLACEHOLDER) for _, text in report.turns)
    images = len(report.images)
    if placeholders == images:
        return
    if images == 1 and placeholders == 0:
        report.notes.append(
            f"1 image and no {IMAGE_PLACEHOLDER} placeholder: accepted, the trainer puts the image at the start of the "
            "first human turn (as LLaVA does)"
        )
        return
    report.problems.append(
        f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {images} image(s): the counts must match (one "
        f"{IMAGE_PLACEHOLDER} per image, in order; only a single image may go without one)"
    )


def check_row(index: int, row: object) -> RowReport:
    """Schema, turn order, answers and placeholder count of one row (image files are checked separately)."""
    report = RowReport(index)
    if not isinstance(row, dict):
        report.problems.append(f'expected an object with "id", "image" and "conversations", got {_type_name(row)}')
        return report
    _check_id(row, report)
    _check_images(row, report)
    _check_conversations(row, report)
    if report.turns:
        _check_placeholders(report)
    return report


def turns_text(report: RowReport, limit: int = 400) -> str:
    """The conversation as `human: ...` / `gpt: ...` lines, each cut at `limit` characters, for the preview table."""
    lines = [f"{role}: {text if len(text) <= limit else text[: limit - 1] + '…'}" for role, text in report.turns]
    return "\n".join(lines)

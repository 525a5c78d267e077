"""Validate a fine-tuning dataset before anything runs, with a message that says what is wrong and where.

Dataset registration that fails silently is a top complaint about fine-tuning UIs, so every problem is named: JSON
syntax errors with line and column, a top level that is not a list, per-row schema and turn-order problems,
`<image>` placeholders that do not match the images, missing, empty or unreadable images, unsafe archives and size
limits. Rows with problems are left out of the prepared training file; `fatal` says that nothing can run.

    result = validate_upload(["data.json", "images.zip"], data_dir="data", base="ckpt", stage="3")
    if not result.fatal:
        JobConfig(base="ckpt", data=str(result.data_path), image_folder=str(result.image_folder), ...)
    paged_preview(result, page=1, page_size=20)["rows"]
"""

import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.shared import IMAGE_PLACEHOLDER

from ..limits.uploads import UploadLimits
from .archive import UploadError, check_file_size, stage_upload
from .images import ImageFinder, ImageSettings
from .rows import RowReport, check_row, turns_text

PREPARED_FILE = "train.json"
TURN_OVERHEAD = 5  # chat-template tokens around each turn (role markers, end of turn), roughly
SHOWN_PROBLEMS = 5
DEFAULT_LIMITS = UploadLimits()


class DatasetError(ValueError):
    """The dataset file cannot be read as a list of samples."""


def estimate_tokens(text: str) -> int:
    """About four characters a token, the usual rule of thumb for English BPE vocabularies."""
    return math.ceil(len(text) / 4)


@dataclass
class ValidationResult:
    """What the validator found. `data_path` and `image_folder` are what a job trains on (for an upload: the
    prepared `train.json` with the valid rows, and the folder of the staged files; both None when `fatal`)."""

    errors: list[str] = field(default_factory=list)
    rows: list[RowReport] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    upload_dir: Path | None = None
    source_path: Path | None = None
    data_path: Path | None = None
    image_folder: Path | None = None

    @property
    def fatal(self) -> bool:
        """Nothing can run: a file-level error, or no row that can be trained on."""
        return bool(self.errors) or not any(row.valid for row in self.rows)

    def message(self) -> str:
        """A short report: file errors, the counts, and the first row problems."""
        lines = list(self.errors)
        if self.summary:
            s = self.summary
            lines.append(
                f"{s['samples']} samples, {s['valid_samples']} valid; {s['images']} images; about "
                f"{s['text_tokens']} text tokens, {s['total_tokens']} with images (longest row {s['longest_row']})"
            )
        bad = [row for row in self.rows if not row.valid]
        lines += [f"{row.label}: {'; '.join(row.problems)}" for row in bad[:SHOWN_PROBLEMS]]
        if len(bad) > SHOWN_PROBLEMS:
            lines.append(f"... and {len(bad) - SHOWN_PROBLEMS} more rows with problems")
        if self.rows and not self.errors and not any(row.valid for row in self.rows):
            lines.insert(0, "No row can be trained on: fix the problems listed per row.")
        return "\n".join(lines)


def load_samples(path: Path, limits: UploadLimits = DEFAULT_LIMITS) -> list:
    """The dataset file as a list (JSON list, or JSONL with one sample a line).

    Raises:
        DatasetError: empty, too large, not UTF-8, invalid JSON (with line and column), or not a list.
    """
    check_file_size(path, limits.max_json_bytes, "limit", DatasetError)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path.name} is not UTF-8 text (bad byte at offset {error.start})") from error
    if path.suffix.lower() == ".jsonl":
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) > limits.max_rows:
            raise DatasetError(f"{path.name} holds {len(lines)} samples; the limit is {limits.max_rows}")
        return [_parse(line, path.name, n) for n, line in lines]
    data = _parse(text, path.name)
    if not isinstance(data, list):
        kind = "an object" if isinstance(data, dict) else type(data).__name__
        hint = (
            next(
                (f' (its "{k}" key holds a list: upload that list)' for k, v in data.items() if isinstance(v, list)),
                "",
            )
            if isinstance(data, dict)
            else ""
        )
        raise DatasetError(f"{path.name} must hold a JSON list of samples [{{...}}, ...], got {kind}{hint}")
    if len(data) > limits.max_rows:
        raise DatasetError(f"{path.name} holds {len(data)} samples; the limit is {limits.max_rows}")
    return data


def _parse(text: str, name: str, line: int | None = None) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        where = f" (line {line})" if line else ""
        raise DatasetError(
            f"{name}{where} is nested too deeply: a dataset is a list of samples, each a few levels deep"
        ) from None
    except json.JSONDecodeError as error:
        lineno = line or error.lineno
        source = text.splitlines()[error.lineno - 1] if text.splitlines() else ""
        excerpt = source[max(error.colno - 30, 0) : error.colno + 30].strip()
        raise DatasetError(
            f"{name} is not valid JSON: {error.msg} at line {lineno}, column {error.colno}: {excerpt!r}"
        ) from error


def _check_files(report: RowReport, finder: ImageFinder, settings: ImageSettings) -> None:
    for ref in report.images:
        path, problem, note = finder.resolve(ref)
        if path is not None:
            size, problem = finder.check(path, ref)
            report.image_tokens += settings.tokens(*size) if size else 0
        report.paths.append(path if problem is None else None)
        report.problems += [problem] if problem else []
        report.notes += [note] if note else []


def _count_text(report: RowReport, count: Callable[[str], int]) -> None:
    texts = [text.replace(IMAGE_PLACEHOLDER, "") for _, text in report.turns]
    report.text_tokens = sum(count(t) for t in texts) + TURN_OVERHEAD * len(texts)


def _check_sample(
    index: int,
    sample: object,
    finder: ImageFinder,
    settings: ImageSettings,
    count: Callable[[str], int],
    max_length: int | None,
) -> RowReport:
    """Every check of one row: schema and turns, image files, token estimate against the max length."""
    report = check_row(index, sample)
    _check_files(report, finder, settings)
    _count_text(report, count)
    length = report.text_tokens + report.image_tokens
    if max_length and length > max_length and report.valid:
        report.notes.append(
            f"about {length} tokens, above the max length {max_length}: the trainer cuts the row, "
            "or skips it when the cut falls inside an image"
        )
    return report


def _summary(rows: list[RowReport], finder: ImageFinder, settings: ImageSettings, max_length: int | None) -> dict:
    valid = [row for row in rows if row.valid]
    lengths = [row.text_tokens + row.image_tokens for row in valid]
    return {
        "samples": len(rows),
        "valid_samples": len(valid),
        "invalid_samples": len(rows) - len(valid),
        "rows_with_notes": sum(1 for row in rows if row.notes),
        "images": finder.unique_files(),
        "image_references": sum(len(row.images) for row in rows),
        "missing_images": sum(1 for row in rows for path in row.paths if path is None),
        "text_tokens": sum(row.text_tokens for row in valid),
        "image_tokens": sum(row.image_tokens for row in valid),
        "total_tokens": sum(lengths),
        "longest_row": max(lengths, default=0),
        "rows_over_max_length": sum(1 for n in lengths if max_length and n > max_length),
        "image_max_size": settings.max_size,
        "patch_size": settings.patch_size,
    }


def validate_dataset(
    json_path: str | Path,
    image_folder: str | Path | None = None,
    *,
    settings: ImageSettings | None = None,
    max_length: int | None = None,
    limits: UploadLimits = DEFAULT_LIMITS,
    count_tokens: Callable[[str], int] | None = None,
    search_root: str | Path | None = None,
    by_name: bool = False,
) -> ValidationResult:
    """Check a dataset where it lies (no copy); `image_folder` defaults to the JSON's folder.

    Args:
        settings: image sizes of the job, for the token estimate (see `ImageSettings.for_job`); default: the
            official model's.
        max_length: the job's longest row in tokens; longer rows get a note (the trainer cuts or skips them).
        count_tokens: a text token counter (e.g. a tokenizer's); default `estimate_tokens`.
        search_root: no image outside it is opened (default: the image folder).
        by_name: match a missing image path by file name anywhere under `search_root` (loose uploads).
    """
    json_path, settings = Path(json_path), settings or ImageSettings()
    image_folder = Path(image_folder) if image_folder else json_path.parent
    result = ValidationResult(source_path=json_path, data_path=json_path, image_folder=image_folder)
    try:
        samples = load_samples(json_path, limits)
    except DatasetError as error:
        result.errors.append(str(error))
        return result
    if not samples:
        result.errors.append(f"{json_path.name} holds no samples (an empty list)")
    finder = ImageFinder(image_folder, Path(search_root or image_folder), limits.max_image_pixels, by_name)
    count = count_tokens or estimate_tokens
    result.rows = [_check_sample(i, sample, finder, settings, count, max_length) for i, sample in enumerate(samples)]
    result.summary = _summary(result.rows, finder, settings, max_length)
    return result


def new_upload_dir(data_dir: str | Path) -> Path:
    """A fresh `<data_dir>/uploads/<id>/`; ids sort by time and never collide."""
    upload_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    path = Path(data_dir).resolve() / "uploads" / upload_id
    path.mkdir(parents=True)
    return path


def write_prepared(result: ValidationResult, samples: list, folder: Path) -> Path:
    """The valid rows, image paths relative to `folder`, as the file the job trains on."""
    prepared = []
    for row in result.rows:
        if row.valid:
            sample = dict(samples[row.index])
            images = [
                path.relative_to(folder).as_posix() for path in row.paths if path is not None
            ]  # valid: all found
            if "image" in sample and images:
                sample["image"] = images[0] if isinstance(sample["image"], str) else images
            prepared.append(sample)
    path = folder.parent / PREPARED_FILE
    path.write_text(json.dumps(prepared, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def validate_upload(
    paths: Sequence[str | Path],
    data_dir: str | Path,
    *,
    base: str | Path | None = None,
    stage: str = "3",
    max_image_size: int | None = None,
    max_length: int | None = None,
    limits: UploadLimits = DEFAULT_LIMITS,
    count_tokens: Callable[[str], int] | None = None,
    allow_folders: bool = False,
    upload_dir: Path | None = None,
) -> ValidationResult:
    """Stage an upload into `<data_dir>/uploads/<id>/`, validate it, and write the prepared `train.json`.

    `paths`: a JSON file with a zip of images or with loose image files, a zip holding the JSON too, or (with
    `allow_folders`, for paths the server chose, never a visitor's) an export folder (`data.json` + `images/`). The
    image sizes for the token estimate come from `base`'s config.json and the stage's rule (see
    `ImageSettings.for_job`). `upload_dir`: a folder made for it already (see `ValidatedUploads.reserve`), else a
    new one. Never raises for bad input: problems are in the result.
    """
    upload_dir = upload_dir or new_upload_dir(data_dir)
    result = ValidationResult(upload_dir=upload_dir)
    if not paths:
        result.errors.append("nothing was uploaded: add the dataset JSON and its images")
        return result
    try:
        staged = stage_upload(paths, upload_dir, limits, allow_folders)
    except UploadError as error:
        result.errors.append(str(error))
        return result
    if staged.json_path is None:
        result.errors.append("the upload has no dataset JSON file (.json or .jsonl with the samples)")
        return result
    settings = ImageSettings.for_job(base, stage, max_image_size)
    checked = validate_dataset(
        staged.json_path,
        staged.image_root,
        settings=settings,
        max_length=max_length,
        limits=limits,
        count_tokens=count_tokens,
        search_root=staged.files_dir,
        by_name=True,
    )
    checked.upload_dir = upload_dir
    if checked.fatal:  # nothing to train on: no path a job could be given by mistake
        checked.data_path = checked.image_folder = None
    else:
        checked.data_path = write_prepared(checked, load_samples(staged.json_path, limits), staged.files_dir)
        checked.image_folder = staged.files_dir
    return checked


def paged_preview(result: ValidationResult, page: int = 1, page_size: int = 20, only_problems: bool = False) -> dict:
    """One page of rows for a table: row number, id, thumbnail (first usable image), turns, problems, notes.

    Returns:
        {"rows": [...], "page": n (1-based, clamped), "pages": count, "total": rows matching the filter}.
    """
    rows = [row for row in result.rows if row.problems or not only_problems]
    pages = max(math.ceil(len(rows) / max(page_size, 1)), 1)
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * page_size : page * page_size]
    return {
        "rows": [
            {
                "row": row.index + 1,
                "id": row.sample_id,
                "thumbnail": next((str(p) for p in row.paths if p is not None), None),
                "images": ", ".join(row.images),
                "turns": turns_text(row),
                "problems": "; ".join(row.problems),
                "notes": "; ".join(row.notes),
                "valid": row.valid,
            }
            for row in shown
        ],
        "page": page,
        "pages": pages,
        "total": len(rows),
    }

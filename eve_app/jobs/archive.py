"""Bring an uploaded dataset into `<data_dir>/uploads/<id>/files/` without trusting it.

An upload is a LLaVA JSON file plus its images, given as a zip archive, as loose files, or as an export folder of the
History tab (`data.json` + `images/`, zipped or not). Nothing is extracted until the whole archive has been checked:
an entry with an absolute path, a `..` component or a symlink refuses the archive (such entries are how a zip writes
outside its folder), and the limits on archive size, unpacked size and file count are checked against the entry
headers first and again while copying (a header can lie about the size).

    staged = stage_upload(["data.json", "images.zip"], upload_dir)
    staged.json_path, staged.files_dir
"""

import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..limits.uploads import UploadLimits, human_size

JSON_SUFFIXES = (".json", ".jsonl")
# Files that archivers add and that are never part of a dataset.
IGNORED_PARTS = ("__MACOSX", ".DS_Store")
CHUNK = 1 << 20
NAME_MAX = 255  # bytes in one file or folder name on Linux, macOS and Windows file systems


class UploadError(ValueError):
    """The upload cannot be used at all; the message says why and what to do."""


@dataclass
class StagedUpload:
    """Where the staged files are: `json_path` is the dataset file, image paths are looked up under `files_dir`."""

    upload_dir: Path
    files_dir: Path
    json_path: Path | None = None
    image_root: Path | None = None  # the folder relative image paths start from (the JSON's folder)
    files: list[Path] = field(default_factory=list)


class _Budget:
    """Counts files and bytes over all parts of one upload."""

    def __init__(self, limits: UploadLimits):
        self.limits, self.files, self.bytes = limits, 0, 0

    def add(self, files: int, size: int, what: str) -> None:
        self.files += files
        self.bytes += size
        if self.files > self.limits.max_files:
            raise UploadError(f"{what}: more than {self.limits.max_files} files in the upload (limit)")
        if self.bytes > self.limits.max_total_bytes:
            raise UploadError(
                f"{what}: the upload unpacks to more than {human_size(self.limits.max_total_bytes)} (limit); "
                "split the dataset or raise the limit"
            )


def check_file_size(path: Path, max_bytes: int, what: str, error: type[ValueError] = UploadError) -> int:
    """The file's size; raises `error` for an empty file or one above `max_bytes` (`what` names the limit)."""
    size = path.stat().st_size
    if size == 0:
        raise error(f"{path.name} is empty (0 bytes)")
    if size > max_bytes:
        raise error(f"{path.name} is {human_size(size)}, above the {what} of {human_size(max_bytes)}")
    return size


def unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry may not be extracted (None when it is safe): absolute path, `..`, symlink, encryption."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component that points outside the upload folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def entry_names_problem(infos: list[zipfile.ZipInfo]) -> str | None:
    """Why a set of zip entries cannot be extracted side by side (None when it can): a name part longer than the
    file system allows (255 bytes), or a name that is both a file and the folder of another entry (`x` and `x/y`)."""
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        too_long = next((part for part in parts if len(part.encode()) > NAME_MAX), None)
        if too_long is not None:
            return (
                f"entry {info.filename[:60]!r}... has a name of {len(too_long.encode())} bytes; the limit is "
                f"{NAME_MAX} bytes a file or folder name"
            )
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), info.filename)
        if parts and not info.is_dir():
            files.setdefault("/".join(parts), info.filename)
    clash = next((name for name in files if name in folders), None)
    if clash is not None:
        return f"entry {files[clash]!r} is a file, and {folders[clash]!r} needs a folder of that name"
    return None


def _ignored(name: str) -> bool:
    return any(part in IGNORED_PARTS for part in PurePosixPath(name.replace("\\", "/")).parts)


def safe_extract(archive: Path, dest: Path, limits: UploadLimits, budget: _Budget | None = None) -> list[Path]:
    """Extract a zip archive into `dest` after checking every entry; returns the extracted files.

    Raises:
        UploadError: empty, too large or not a zip file, or an unsafe entry (nothing is extracted then).
    """
    budget = budget or _Budget(limits)
    check_file_size(archive, limits.max_archive_bytes, "archive limit")
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [i for i in zf.infolist() if not i.is_dir() and not _ignored(i.filename)]
            for info in zf.infolist():
                reason = unsafe_entry_reason(info)
                if reason:
                    raise UploadError(f"{archive.name}: entry {info.filename!r} {reason}; the archive was refused")
            problem = entry_names_problem(zf.infolist())
            if problem:
                raise UploadError(f"{archive.name}: {problem}; the archive was refused")
            budget.add(len(entries), sum(i.file_size for i in entries), archive.name)
            for info in entries:
                if info.file_size > limits.max_compression_ratio * max(info.compress_size, 1) + CHUNK:
                    raise UploadError(
                        f"{archive.name}: entry {info.filename!r} unpacks to {human_size(info.file_size)} from "
                        f"{human_size(info.compress_size)}, more than {limits.max_compression_ratio:g} times its "
                        "packed size (limit); the archive was refused"
                    )
            return [_extract_one(zf, info, dest, archive.name) for info in entries]
    except zipfile.BadZipFile as error:
        raise UploadError(f"{archive.name} is not a readable zip archive: {error}") from error


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, archive_name: str) -> Path:
    target = (dest / info.filename.replace("\\", "/")).resolve()
    if not target.is_relative_to(dest.resolve()):  # checked above already; kept as the last line of defence
        raise UploadError(f"{archive_name}: entry {info.filename!r} points outside the upload folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise UploadError(f"{archive_name}: entry {info.filename!r} is larger than its header says")
            out.write(chunk)
    return target


def _copy_folder(folder: Path, dest: Path, budget: _Budget) -> list[Path]:
    """Copy an export folder; symlinks are refused for the same reason as in archives."""
    sources = [p for p in sorted(folder.rglob("*")) if not _ignored(str(p.relative_to(folder)))]
    links = [p for p in sources if p.is_symlink()]
    if links:
        raise UploadError(f"{folder.name}: {links[0].relative_to(folder)} is a symbolic link; the folder was refused")
    files = [p for p in sources if p.is_file()]
    budget.add(len(files), sum(p.stat().st_size for p in files), folder.name)
    copied = []
    for path in files:
        target = dest / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copyfile(path, target)))
    return copied


def _copy_file(path: Path, dest: Path, budget: _Budget) -> Path:
    target = dest / path.name
    if target.exists():
        raise UploadError(f"two uploaded files are named {path.name}; rename one of them")
    budget.add(1, path.stat().st_size, path.name)
    return Path(shutil.copyfile(path, target))


def _pick_json(explicit: list[Path], files: list[Path], files_dir: Path) -> Path | None:
    """The dataset file: the JSON uploaded on its own, else the only (or the shallowest `data.json`) in the archive."""
    if len(explicit) > 1:
        raise UploadError(f"upload one dataset JSON file, got {len(explicit)}: {', '.join(p.name for p in explicit)}")
    if explicit:
        return explicit[0]
    found = [p for p in files if p.suffix.lower() in JSON_SUFFIXES]
    if len(found) <= 1:
        return found[0] if found else None
    named = sorted((p for p in found if p.name == "data.json"), key=lambda p: len(p.relative_to(files_dir).parts))
    if named:
        return named[0]
    listed = ", ".join(str(p.relative_to(files_dir)) for p in found[:5])
    raise UploadError(f"the upload holds several JSON files ({listed}); upload the dataset JSON file separately")


def stage_upload(
    paths: Sequence[str | Path], upload_dir: Path, limits: UploadLimits | None = None, allow_folders: bool = False
) -> StagedUpload:
    """Copy or extract the uploaded files into `upload_dir/files/` and find the dataset JSON.

    Zip archives are extracted (after the safety checks), other files copied by name, and folders copied only with
    `allow_folders`: for trusted server code (an export folder on the server's disk), never for paths a visitor sent
    (a visitor naming a folder would have it copied). Symbolic links are never followed. Images of a JSON that came
    inside an archive or folder are relative to that JSON's folder; those of a JSON uploaded on its own are relative
    to `files/`.

    Raises:
        UploadError: a missing file, a folder or link where files are expected, an unsafe or too large archive, or
            an ambiguous set of JSON files.
    """
    limits = limits or UploadLimits()
    files_dir = upload_dir / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    budget, explicit, files = _Budget(limits), [], []
    for path in map(Path, paths):
        if path.is_symlink():
            raise UploadError(f"{path.name} is a symbolic link; upload the file itself")
        if not path.exists():
            raise UploadError(f"{path.name} was not uploaded completely (the file is missing); upload it again")
        if path.is_dir() and not allow_folders:
            raise UploadError(f"{path.name} is a folder; upload its files or a zip of it")
        if path.is_dir():
            files += _copy_folder(path, files_dir / path.name, budget)
        elif path.suffix.lower() == ".zip":
            files += safe_extract(path, files_dir, limits, budget)
        else:
            copied = _copy_file(path, files_dir, budget)
            files.append(copied)
            if path.suffix.lower() in JSON_SUFFIXES:
                explicit.append(copied)
    json_path = _pick_json(explicit, files, files_dir)
    image_root = files_dir if json_path is None or json_path in explicit else json_path.parent
    return StagedUpload(upload_dir, files_dir, json_path, image_root, files)

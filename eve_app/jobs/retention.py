"""`ValidatedUploads`: validation results kept for a while, then dropped with their upload folders.

A visitor may validate a dataset without the admin password (to fix it before asking for a run), so neither the
results (they hold every row) nor the staged files may stay for good. Each result lives `retention` seconds under a
random key; a launched job claims its upload, which then belongs to the job's record. Folders under `uploads/` that
no result, no running validation and no job points to are removed once they are older than `retention` (also after
a restart).

The disk the waiting uploads take is bounded twice. Each visitor (client address) has a `share`: past it, their own
oldest uploads are dropped to make room for the new one, so validating again never needs to wait. All visitors
together stay below `budget`: a validation starts only while the others' uploads leave room for one more of the
largest size, so with `budget` at least twice `share` one visitor alone can never fill it for the others.

    folder = uploads.reserve(visitor)        # registered before anything is written into it
    result = validate_upload(files, data_dir, upload_dir=folder)
    key = uploads.add(result, visitor)       # drops the visitor's oldest uploads beyond their share
"""

import secrets
import shutil
import threading
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from .validation import ValidationResult, new_upload_dir


@dataclass
class _Entry:
    added: float
    result: ValidationResult
    visitor: str | None


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 once it is gone)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


class ValidatedUploads:
    def __init__(self, uploads_dir: Path, retention: float, share: int | None = None, budget: int | None = None):
        """`share`: bytes of waiting uploads one visitor may hold (None: no limit); `budget`: all visitors' together
        (None: no limit)."""
        self.uploads_dir, self.retention = Path(uploads_dir), retention
        self.share, self.budget = share, budget
        self._results: dict[str, _Entry] = {}
        self._claimed: set[Path] = set()
        self._staging: dict[Path, str | None] = {}  # folders whose validation is running, by visitor
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def reserve(self, visitor: str | None = None) -> Path:
        """A fresh upload folder for `visitor`'s validation, kept by the sweeper from this moment until `add` (or
        `discard`) however long the validation takes."""
        with self._lock:  # made and registered in one step: a sweep never sees it unregistered
            folder = new_upload_dir(self.uploads_dir.parent).resolve()
            self._staging[folder] = visitor
        return folder

    def discard(self, folder: Path) -> None:
        """A reserved folder whose validation gave no result: delete it."""
        with self._lock:
            self._staging.pop(Path(folder).resolve(), None)
        shutil.rmtree(folder, ignore_errors=True)

    def add(self, result: ValidationResult, visitor: str | None = None) -> str:
        """Keep `result` under a new key; beyond the visitor's share, their oldest other uploads are dropped."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            if result.upload_dir is not None:
                self._staging.pop(result.upload_dir.resolve(), None)
            self._results[key] = _Entry(time.monotonic(), result, visitor)
        if visitor is not None and self.share is not None:
            self._keep_share(visitor, key)
        return key

    def get(self, key: str) -> ValidationResult | None:
        with self._lock:
            entry = self._results.get(key or "")
        return entry.result if entry else None

    def claim(self, key: str) -> ValidationResult | None:
        """A job will train on this upload: keep its folder for good (the job's record points to it)."""
        with self._lock:
            entry = self._results.get(key or "")
            if entry and entry.result.upload_dir is not None:
                self._claimed.add(entry.result.upload_dir.resolve())
        return entry.result if entry else None

    def __len__(self) -> int:
        return len(self._results)

    def pending_bytes(self, in_use: AbstractSet[Path] = frozenset(), visitor: str | None = None) -> int:
        """Disk taken by uploads that no job uses yet, running validations included; with `visitor`, only theirs."""
        pending = self._pending(in_use)
        return sum(size for owner, size in pending.values() if visitor is None or owner == visitor)

    def room_for(self, visitor: str | None, in_use: AbstractSet[Path] = frozenset()) -> bool:
        """Whether the other visitors' waiting uploads leave room in the budget for one more of `share` bytes (the
        visitor's own make room themselves: the oldest are replaced)."""
        if self.budget is None:
            return True
        others = sum(size for owner, size in self._pending(in_use).values() if visitor is None or owner != visitor)
        return others + (self.share or 0) <= self.budget

    def _pending(self, in_use: AbstractSet[Path]) -> dict[Path, tuple[str | None, int]]:
        """Each unclaimed upload folder: (its visitor, or None when unknown, e.g. left from before a restart; bytes)."""
        with self._lock:
            keep = self._claimed | {path.resolve() for path in in_use}
            owners = dict(self._staging)
            for entry in self._results.values():
                if entry.result.upload_dir is not None:
                    owners[entry.result.upload_dir.resolve()] = entry.visitor
        if not self.uploads_dir.is_dir():
            return {}
        return {
            folder: (owners.get(folder), folder_bytes(folder))
            for folder in (path.resolve() for path in self.uploads_dir.iterdir() if path.is_dir())
            if folder not in keep
        }

    def _keep_share(self, visitor: str, newest: str) -> None:
        """Drop `visitor`'s oldest unclaimed results (never `newest`) while their uploads exceed their share."""
        with self._lock:
            mine = sorted(
                (
                    (entry.added, key, entry.result.upload_dir)
                    for key, entry in self._results.items()
                    if entry.visitor == visitor and entry.result.upload_dir is not None
                    if entry.result.upload_dir.resolve() not in self._claimed
                ),
                key=lambda item: item[0],
            )
        sizes = {key: folder_bytes(folder) for _, key, folder in mine}
        total = sum(sizes.values())
        for _, key, folder in mine:
            if total <= (self.share or 0) or key == newest:
                continue
            with self._lock:
                self._results.pop(key, None)
            shutil.rmtree(folder, ignore_errors=True)
            total -= sizes[key]

    def sweep(self, in_use: AbstractSet[Path] = frozenset()) -> int:
        """Drop expired results and delete unclaimed upload folders older than the retention; returns how many
        folders were deleted. `in_use`: folders that jobs recorded in storage point into. Folders whose validation
        is still running are kept, however old."""
        now = time.monotonic()
        with self._lock:
            expired = [key for key, entry in self._results.items() if now - entry.added > self.retention]
            for key in expired:
                del self._results[key]
            live = {e.result.upload_dir.resolve() for e in self._results.values() if e.result.upload_dir is not None}
            keep = live | self._claimed | set(self._staging) | {path.resolve() for path in in_use}
        removed = 0
        if self.uploads_dir.is_dir():
            for folder in self.uploads_dir.iterdir():
                old = time.time() - folder.stat().st_mtime > self.retention
                if folder.is_dir() and old and folder.resolve() not in keep:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed

    def start_sweeper(self, in_use, interval: float | None = None) -> None:
        """Sweep in a daemon thread (every minute, or sooner for a short retention); `in_use()` returns the folders
        jobs point into."""
        interval = interval or min(60.0, max(self.retention / 2, 0.5))

        def run() -> None:
            while not self._stop.wait(interval):
                self.sweep(in_use())

        threading.Thread(target=run, name="eve-upload-sweeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

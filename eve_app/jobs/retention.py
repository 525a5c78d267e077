"""`ValidatedUploads`: validation results kept for a while, then dropped with their upload folders.

A visitor may validate a dataset without the admin password (to fix it before asking for a run), so neither the
results (they hold every row) nor the staged files may stay for good. Each result lives `retention` seconds under a
random key; a launched job claims its upload, which then belongs to the job's record. Folders under `uploads/` that
no result and no job points to are removed once they are older than `retention` (also after a restart).
"""

import secrets
import shutil
import threading
import time
from collections.abc import Set as AbstractSet
from pathlib import Path

from .validation import ValidationResult


class ValidatedUploads:
    def __init__(self, uploads_dir: Path, retention: float):
        self.uploads_dir, self.retention = Path(uploads_dir), retention
        self._results: dict[str, tuple[float, ValidationResult]] = {}
        self._claimed: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def add(self, result: ValidationResult) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._results[key] = (time.monotonic(), result)
        return key

    def get(self, key: str) -> ValidationResult | None:
        with self._lock:
            entry = self._results.get(key or "")
        return entry[1] if entry else None

    def claim(self, key: str) -> ValidationResult | None:
        """A job will train on this upload: keep its folder for good (the job's record points to it)."""
        with self._lock:
            entry = self._results.get(key or "")
            if entry and entry[1].upload_dir is not None:
                self._claimed.add(entry[1].upload_dir.resolve())
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._results)

    def pending_bytes(self, in_use: AbstractSet[Path] = frozenset()) -> int:
        """Disk taken by uploads that no job uses yet: all visitors' together stay below one upload's limit, so
        repeated validations cannot fill the disk before the retention time frees it."""
        with self._lock:
            keep = self._claimed | {path.resolve() for path in in_use}
        if not self.uploads_dir.is_dir():
            return 0
        return sum(
            path.stat().st_size
            for folder in self.uploads_dir.iterdir()
            if folder.is_dir() and folder.resolve() not in keep
            for path in folder.rglob("*")
            if path.is_file()
        )

    def sweep(self, in_use: AbstractSet[Path] = frozenset()) -> int:
        """Drop expired results and delete unclaimed upload folders older than the retention; returns how many
        folders were deleted. `in_use`: folders that jobs recorded in storage point into."""
        now = time.monotonic()
        with self._lock:
            expired = [key for key, (added, _) in self._results.items() if now - added > self.retention]
            for key in expired:
                del self._results[key]
            live = {r.upload_dir.resolve() for _, r in self._results.values() if r.upload_dir is not None}
            keep = live | self._claimed | {path.resolve() for path in in_use}
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

"""A consistent copy of the app's SQLite database while the app keeps running, through SQLite's online backup.

    python -m eve_app.storage.backup backups/eve-2026-11-30.db                 # the default data/eve.db
    python -m eve_app.storage.backup --data-dir /data backups/eve.db
    python -m eve_app.storage.backup --db-url sqlite:////data/eve.db backups/eve.db

Copying `eve.db` with `cp` (or serving it over HTTP) is not a backup: the recent writes are in `eve.db-wal`, and a
process that opens and closes the live file can release the server's locks. The online backup reads through SQLite
itself, page by page, so concurrent writers simply wait a moment; the copy is checked with `PRAGMA integrity_check`.
Databases on a server (`EVE_DB_URL=postgresql://...`) are backed up with their own tools (pg_dump).
"""

import argparse
import sqlite3
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from .database import BUSY_TIMEOUT_MS, default_url


def backup(db_file: str | Path, out: str | Path, pages_per_step: int = 256) -> Path:
    """Copy the database at `db_file` to `out` (replaced if it exists) and check the copy.

    Raises:
        RuntimeError: the copy fails SQLite's integrity check.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(Path(db_file).resolve(), timeout=BUSY_TIMEOUT_MS / 1000)
    target = sqlite3.connect(partial)
    try:
        source.backup(target, pages=pages_per_step)  # between steps, writers get their turn
        verdict = target.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        target.close()
        source.close()
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the backup failed SQLite's integrity check: {verdict}")
    partial.replace(out)
    return out


def sqlite_file(db_url: str | None, data_dir: str | Path) -> Path:
    url = make_url(db_url or default_url(data_dir))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise SystemExit(f"{url.get_backend_name()} databases are backed up with their own tools (e.g. pg_dump)")
    return Path(url.database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the backup file to write")
    parser.add_argument("--data-dir", default="data", help="the app's data directory (default: data)")
    parser.add_argument("--db-url", help="the app's EVE_DB_URL, when it is not the data directory's eve.db")
    args = parser.parse_args(argv)
    source = sqlite_file(args.db_url, args.data_dir)
    if not source.is_file():
        print(f"no database at {source}", file=sys.stderr)
        return 1
    print(f"backed up {source} to {backup(source, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

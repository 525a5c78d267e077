"""Schema versioning: fresh databases are stamped, older ones migrated once, newer ones refused untouched."""

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from eve_app.storage import MIGRATIONS, SCHEMA_VERSION, ConversationStore, Database, SchemaVersionError, migrations


def stored_version(path) -> int:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version FROM schema_version")).scalar_one()
    engine.dispose()
    return version


def columns(path, table: str) -> set[str]:
    engine = create_engine(f"sqlite:///{path}")
    names = {c["name"] for c in inspect(engine).get_columns(table)}
    engine.dispose()
    return names


def add_pinned(connection) -> None:
    """A fake next step, as a real migration would be written."""
    add_pinned.calls += 1
    connection.exec_driver_sql("ALTER TABLE conversations ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT 0")


def test_fresh_database_is_stamped(tmp_path):
    assert len(MIGRATIONS) + 1 == SCHEMA_VERSION  # bump the version with every appended migration
    storage = Database(data_dir=tmp_path)
    assert storage.schema_version == SCHEMA_VERSION
    storage.close()
    assert stored_version(tmp_path / "eve.db") == SCHEMA_VERSION
    Database(data_dir=tmp_path).close()  # reopening the current version changes nothing
    assert stored_version(tmp_path / "eve.db") == SCHEMA_VERSION


def test_migration_runs_once_then_newer_database_is_refused(tmp_path, monkeypatch):
    storage = ConversationStore(Database(data_dir=tmp_path))
    cid = storage.save_question(None, "Before the upgrade").conversation_id
    storage.database.close()
    add_pinned.calls = 0
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, add_pinned])
    new, old = SCHEMA_VERSION + 1, SCHEMA_VERSION
    upgraded = Database(data_dir=tmp_path)
    assert upgraded.schema_version == new and add_pinned.calls == 1
    assert ConversationStore(upgraded).get_conversation(cid)["title"] == "Before the upgrade"
    upgraded.close()
    Database(data_dir=tmp_path).close()
    assert add_pinned.calls == 1 and stored_version(tmp_path / "eve.db") == new
    assert "pinned" in columns(tmp_path / "eve.db", "conversations")

    monkeypatch.undo()  # back to code that only knows the current version
    before = hashlib.sha256((tmp_path / "eve.db").read_bytes()).hexdigest()
    with pytest.raises(SchemaVersionError, match=f"schema version {new}, newer than this code's version {old}"):
        Database(data_dir=tmp_path)
    assert hashlib.sha256((tmp_path / "eve.db").read_bytes()).hexdigest() == before
    assert stored_version(tmp_path / "eve.db") == new


def test_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    Database(data_dir=tmp_path).close()

    def broken(connection) -> None:
        connection.exec_driver_sql("ALTER TABLE conversations ADD COLUMN half_done INTEGER")
        raise RuntimeError("bug in the migration")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="bug in the migration"):
        Database(data_dir=tmp_path)
    assert stored_version(tmp_path / "eve.db") == SCHEMA_VERSION  # the step and its DDL rolled back together
    assert "half_done" not in columns(tmp_path / "eve.db", "conversations")


def test_unversioned_database_with_our_tables_is_refused(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'eve.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT)")
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="no schema_version table"):
        Database(data_dir=tmp_path)


def version_1_database(path) -> None:
    """A database as schema version 1 wrote it: no owners, and answers only done, stopped or error."""
    connection = sqlite3.connect(path)
    connection.executescript((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
    connection.close()


def test_a_version_1_database_migrates_to_owned_conversations(tmp_path):
    version_1_database(tmp_path / "eve.db")
    database = Database(data_dir=tmp_path)
    assert database.schema_version == SCHEMA_VERSION
    storage = ConversationStore(database)
    # Old rows belong to the admin: a visitor does not see them, the admin does, nothing was lost on the way.
    assert storage.list_conversations(owner="browser:visitor") == []
    old = storage.get_conversation(1, owner="admin")
    assert [m["text"] for m in old["messages"]] == ["Read it", "HELLO"] and old["messages"][1]["feedback"] == "like"
    assert old["messages"][1]["generation"]["model"] == "eve-tiny"  # rows pointing at messages survived the rebuild
    # The rebuilt messages table takes the new answer states and still enforces the old rules.
    answer = storage.begin_answer(1, task="OCR")
    storage.save_partial_answer(answer, "partial")
    assert storage.get_conversation(1)["messages"][-1]["status"] == "streaming"
    with pytest.raises(Exception, match="CHECK constraint"):
        _bad_status(database)
    database.close()


def _bad_status(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE messages SET status = 'nonsense' WHERE id = 1")

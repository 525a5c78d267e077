"""Schema versioning: create a fresh database, migrate an older one step by step, refuse a newer one.

`MIGRATIONS[i]` upgrades a database from version `i + 1` to `i + 2`, so the code's version is
`1 + len(MIGRATIONS)`. To change the schema: edit the models in `schema.py`, append a function that brings an
existing database to the same shape (plain DDL through the connection it is given), and bump `SCHEMA_VERSION`.
Each step runs in its own transaction together with its version bump, so an interrupted upgrade resumes where it
stopped, and no step runs twice.
"""

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, MetaData, insert, inspect, select, update
from sqlalchemy.schema import CreateTable

from .schema import ADMIN_OWNER, Base, Conversation, Message, SchemaVersion, _one_of

Migration = Callable[[Connection], None]


def add_owners_and_answer_states(connection: Connection) -> None:
    """1 -> 2: conversations get an owner (existing ones belong to the admin); answers may be "streaming" (saved
    while generated) or "interrupted" (never finished), so the messages' status check is widened."""
    connection.exec_driver_sql(
        f"ALTER TABLE conversations ADD COLUMN owner VARCHAR(128) NOT NULL DEFAULT '{ADMIN_OWNER}'"
    )
    connection.exec_driver_sql("CREATE INDEX ix_conversations_owner ON conversations (owner)")
    statuses = _one_of("status", ("ok", "done", "stopped", "error", "streaming", "interrupted"))
    if connection.dialect.name != "sqlite":
        connection.exec_driver_sql("ALTER TABLE messages DROP CONSTRAINT ck_messages_status")
        connection.exec_driver_sql(f"ALTER TABLE messages ADD CONSTRAINT ck_messages_status CHECK ({statuses})")
        return
    # SQLite cannot alter a constraint: rebuild the table (foreign keys are off during migrations, see _run_step).
    metadata = MetaData()
    tables = Base.metadata.tables
    tables[Conversation.__tablename__].to_metadata(metadata)  # the foreign key's target, so the new table compiles
    rebuilt = tables[Message.__tablename__].to_metadata(metadata, name="messages_v2")
    columns = ", ".join(column.name for column in rebuilt.columns)
    connection.execute(CreateTable(rebuilt))
    connection.exec_driver_sql(f"INSERT INTO messages_v2 ({columns}) SELECT {columns} FROM messages")
    connection.exec_driver_sql("DROP TABLE messages")
    connection.exec_driver_sql("ALTER TABLE messages_v2 RENAME TO messages")
    connection.exec_driver_sql("CREATE INDEX ix_messages_conversation_id ON messages (conversation_id)")


MIGRATIONS: list[Migration] = [add_owners_and_answer_states]


class SchemaVersionError(RuntimeError):
    """The database cannot be used by this code; raised before anything in it is changed."""


def read_version(connection: Connection) -> int | None:
    """The stored version, or None when the database has no version table yet."""
    if not inspect(connection).has_table(SchemaVersion.__tablename__):
        return None
    version = connection.scalar(select(SchemaVersion.version))
    if version is None:
        raise SchemaVersionError("the schema_version table is empty; refusing to guess the schema of this database")
    return version


def prepare(engine: Engine, migrations: Sequence[Migration] | None = None) -> int:
    """Bring the database at `engine` to the code's schema version and return that version.

    Args:
        engine: an engine whose transactions take the write lock at BEGIN (see `database.write_engine`), so two
            processes opening the same fresh file do not both create it.
        migrations: the ordered upgrade steps; defaults to `MIGRATIONS` (tests pass their own).

    Raises:
        SchemaVersionError: the database is newer than this code, or holds our tables without a version.
    """
    steps = list(MIGRATIONS if migrations is None else migrations)
    target = 1 + len(steps)
    with engine.begin() as connection:
        version = read_version(connection)
        if version is None:
            _create(connection, target)
            return target
    if version > target:
        raise SchemaVersionError(
            f"the database {engine.url.render_as_string(hide_password=True)} has schema version {version}, "
            f"newer than this code's version {target}; upgrade the app (or point it at another data directory) - "
            "the database was left untouched"
        )
    for step_from in range(version, target):
        _run_step(engine, steps[step_from - 1], step_from)
    return target


def _create(connection: Connection, version: int) -> None:
    """Create every table on an empty database and stamp it; refuse a database with our tables but no stamp."""
    existing = set(inspect(connection).get_table_names()) & set(Base.metadata.tables)
    if existing:
        raise SchemaVersionError(
            f"the database has tables {sorted(existing)} but no schema_version table; refusing to guess its version"
        )
    Base.metadata.create_all(connection)
    connection.execute(insert(SchemaVersion).values(version=version))


def _pragma(connection: Connection, setting: str) -> None:
    """A SQLite PRAGMA on the DB-API connection itself, outside SQLAlchemy's transaction."""
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the database connection is closed")
    driver.execute(f"PRAGMA {setting}")


def _run_step(engine: Engine, step: Migration, step_from: int) -> None:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        # SQLite changes a table by rebuilding it; with foreign keys on, dropping the old table would cascade-delete
        # every row that points at it. The pragma only works outside a transaction, so it is set before BEGIN.
        if sqlite:
            _pragma(connection, "foreign_keys=OFF")
        try:
            with connection.begin():
                # Re-read under the write lock: another process may have run this step meanwhile.
                if read_version(connection) != step_from:
                    return
                step(connection)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise SchemaVersionError(f"migration {step.__name__} left broken references; rolled back")
                connection.execute(update(SchemaVersion).values(version=step_from + 1))
        finally:
            if sqlite:
                _pragma(connection, "foreign_keys=ON")

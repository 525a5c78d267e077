"""Schema versioning: create a fresh database, migrate an older one step by step, refuse a newer one.

`MIGRATIONS[i]` upgrades a database from version `i + 1` to `i + 2`, so the code's version is
`1 + len(MIGRATIONS)`. To change the schema: edit the models in `schema.py`, append a function that brings an
existing database to the same shape (plain DDL through the connection it is given), and bump `SCHEMA_VERSION`.
Each step runs in its own transaction together with its version bump, so an interrupted upgrade resumes where it
stopped, and no step runs twice.
"""

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, inspect, select, update

from .schema import Base, SchemaVersion

Migration = Callable[[Connection], None]

MIGRATIONS: list[Migration] = []


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
    connection.execute(SchemaVersion.__table__.insert().values(version=version))


def _run_step(engine: Engine, step: Migration, step_from: int) -> None:
    with engine.begin() as connection:
        # Re-read under the write lock: another process may have run this step meanwhile.
        if read_version(connection) != step_from:
            return
        step(connection)
        connection.execute(update(SchemaVersion).values(version=step_from + 1))

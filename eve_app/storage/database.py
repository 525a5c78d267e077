"""`Database`: the one engine, session factory and image folder that the conversation store and the job store share,
with SQLite made safe for Gradio's worker threads.

SQLite needs three things to serve several threads well: WAL journaling (readers never wait for the writer),
a busy timeout (a second writer waits instead of failing with "database is locked"), and write transactions that
take the write lock at BEGIN. The last one matters because pysqlite's default deferred BEGIN lets a transaction
read first and upgrade to a writer later, which fails at once (no busy wait) when another thread committed in
between. So pysqlite's own transaction handling is switched off and we emit `BEGIN` (reads) or `BEGIN IMMEDIATE`
(writes) ourselves, the recipe from SQLAlchemy's pysqlite documentation. Other databases are left as they are.

Within one process, SQLite's writers also queue on a lock of ours before BEGIN IMMEDIATE. SQLite's busy handler
polls: a writer that finds the lock taken sleeps 1, 2, 5, 10 ... up to 100 ms between tries, however soon the lock
frees, and under a burst an unlucky one waited over a second; a thread waiting on our lock is woken when it frees.
The busy timeout still covers writers in other processes (scripts, a second app on the same file).
"""

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from . import migrations

BUSY_TIMEOUT_MS = 30_000
# Execution option read by the "begin" listener; set on the engine that write sessions are bound to.
BEGIN_OPTION = "eve_sqlite_begin"


class Database:
    """The app's database and image folder, opened (and migrated) once and shared by the stores built on it.

    Each store verb opens a short session of its own (`with database.session() as s`), so the stores are safe to
    share between Gradio's worker threads: the Engine and its pool are thread-safe, sessions are not shared.

    Args:
        url: any SQLAlchemy URL; None means the SQLite file `<data_dir>/eve.db`.
        data_dir: folder for the default database and for `images/`, created if missing.

    Raises:
        migrations.SchemaVersionError: the database was written by a newer version of the app.
    """

    def __init__(self, url: str | None = None, data_dir: str | Path = "data"):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = url or default_url(self.data_dir)
        self.engine = make_engine(url)
        # An in-memory database is one connection shared by all threads: let one session use it at a time. A SQLite
        # file: one writer at a time in this process, waiting here rather than in SQLite's busy handler (above).
        parsed = make_url(url)
        self._lock: AbstractContextManager = threading.RLock() if is_memory_sqlite(parsed) else nullcontext()
        self._write_lock: AbstractContextManager = (
            threading.RLock() if parsed.get_backend_name() == "sqlite" else nullcontext()
        )
        writer = write_engine(self.engine)
        try:
            self.schema_version = migrations.prepare(writer)
        except Exception:
            self.engine.dispose()
            raise
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(writer, expire_on_commit=False)

    def close(self) -> None:
        """Release pooled connections (lets SQLite checkpoint and remove its WAL file)."""
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session in its own transaction; `write` takes SQLite's write lock at BEGIN, which makes read-then-write
        steps (the next position in a conversation) atomic and queues concurrent writers on the busy timeout."""
        with (
            self._lock,
            self._write_lock if write else nullcontext(),
            (self._writes if write else self._reads)() as session,
            session.begin(),
        ):
            yield session


def default_url(data_dir: str | Path) -> str:
    """The SQLite file used when no URL is given: `<data_dir>/eve.db`."""
    return f"sqlite:///{Path(data_dir) / 'eve.db'}"


def is_memory_sqlite(url: URL) -> bool:
    """`sqlite://` and `sqlite:///:memory:` live inside one connection and need a shared pool."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str) -> Engine:
    """Build the engine for `url`; for SQLite also create the file's folder and install the connection setup.

    An in-memory SQLite database lives in one connection, so it gets a StaticPool shared by all threads
    (fine for tests and throwaway sessions; use a file for real concurrent use).
    """
    parsed = make_url(url)
    kwargs: dict = {}
    if is_memory_sqlite(parsed):
        kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        _install_sqlite_setup(engine)
    return engine


def write_engine(engine: Engine) -> Engine:
    """A view of `engine` (same pool) whose transactions take SQLite's write lock at BEGIN."""
    return engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})


def _install_sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record) -> None:
        # None: pysqlite emits no BEGIN of its own; the "begin" listener below does it at the right moment.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; answers "memory" for :memory:
        cursor.execute("PRAGMA synchronous=NORMAL")  # the usual WAL pairing: durable at checkpoints, far fewer fsyncs
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

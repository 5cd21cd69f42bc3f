"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

The database is untrusted storage: it holds ciphertext, signed statements and
hashes. Integrity comes from the signatures and MACs the layers above check,
not from the database. What the store guarantees is durability: SQLite runs in
WAL mode with ``synchronous=FULL`` so a committed transaction survives a crash.

On SQLite a transaction that may write starts with ``BEGIN IMMEDIATE`` (it takes
the write lock up front, so two writers never deadlock upgrading a read lock);
``Store.session(readonly=True)`` starts a deferred ``BEGIN`` instead, which
reads a WAL snapshot without queueing behind writers. A read-only session
refuses to flush.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from strongroom.datadir import DIR_MODE, create_private_file
from strongroom.errors import StorageError
from strongroom.store.schema import (
    MIGRATIONS_DIR,
    SchemaMode,
    SchemaState,
    schema_heads,
)

__all__ = ["MIGRATIONS_DIR", "READONLY", "Store", "dbapi_errors", "is_sqlite", "raw_query",
           "reader_engine", "require_current", "schema_heads", "writer_engine"]

#: Execution option marking a connection whose transactions only read.
READONLY = "strongroom_readonly"

_upgrade_lock = threading.Lock()


def is_sqlite(url: str) -> bool:
    """True when the URL names an SQLite database."""
    return url.startswith("sqlite")


class _RawReaders:
    """Idle DB-API connections of one engine for :func:`raw_query`, detached from its pool.

    Checking a connection out of SQLAlchemy's pool and back in (queue, events,
    reset) cost ~20 us of CPU, twice what the statement costs; a key release
    makes two such lookups. These connections were opened by the engine's pool
    (its connect hooks ran) and then detached from it; each runs in autocommit on
    PostgreSQL (a statement is its own transaction: one round trip), is rolled
    back after its statement, as the pool's reset would (a no-op in autocommit),
    closed after any error, and all
    are closed when the engine is disposed (a connection in use then is closed
    when it comes back).
    """

    #: Idle connections kept at most (more in use at once are closed after use).
    MAX_IDLE = 16

    def __init__(self, engine: Engine) -> None:
        # No reference to the engine is kept here (the registry's key must be able to die).
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._epoch = 0
        event.listen(engine, "engine_disposed", self._disposed)

    def _disposed(self, _engine: Engine) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._epoch += 1
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def query(self, engine: Engine, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; see :func:`raw_query`."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            epoch = self._epoch
        if conn is not None:
            try:
                return self._run(conn, sql, params, epoch)
            except engine.dialect.dbapi.OperationalError:  # type: ignore[union-attr]
                pass  # a connection the server dropped while idle: once more on a fresh one
        fairy = engine.raw_connection()
        conn = fairy.dbapi_connection
        fairy.detach()  # ours now: the pool opens another when it needs one
        if engine.dialect.name == "postgresql":
            # One statement, one round trip: psycopg otherwise sends BEGIN before it and
            # ROLLBACK after it, each a round trip, and the ROLLBACK forgets the prepared
            # statements (SQLite's connections are in autocommit already).
            conn.autocommit = True  # type: ignore[union-attr]
        return self._run(conn, sql, params, epoch)

    def _run(self, conn: Any, sql: str, params: tuple[Any, ...],
             epoch: int) -> list[tuple[Any, ...]]:
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, params)
                rows = [tuple(row) for row in cur.fetchall()]
            finally:
                cur.close()
            conn.rollback()  # whatever the driver began (psycopg), as the pool's reset does
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        with self._lock:
            if epoch == self._epoch and len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
                return rows
        conn.close()
        return rows


_raw_readers: weakref.WeakKeyDictionary[Engine, _RawReaders] = weakref.WeakKeyDictionary()
_raw_readers_lock = threading.Lock()


def raw_query(engine: Engine, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one read-only statement on a reused DB-API connection.

    For the few lookups every key release makes: an SQLAlchemy ``Connection``
    (events, result metadata, transaction bookkeeping) costs ~100 us of CPU a
    call, a pooled DB-API cursor ~25 us, a kept one ~8 us (:class:`_RawReaders`).
    ``sql`` must be a constant using the driver's placeholder style (``?`` for
    SQLite, ``%s`` for psycopg); a single statement is its own consistent read.
    Driver and pool errors are raised as SQLAlchemy or DB-API errors for the
    caller to translate.
    """
    readers = _raw_readers.get(engine)
    if readers is None:
        with _raw_readers_lock:
            readers = _raw_readers.get(engine)
            if readers is None:
                readers = _raw_readers[engine] = _RawReaders(engine)
    return readers.query(engine, sql, params)


def dbapi_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """The exception classes :func:`raw_query` may raise on ``engine``."""
    error = getattr(engine.dialect.dbapi, "Error", None)
    return (SQLAlchemyError, error) if isinstance(error, type) else (SQLAlchemyError,)


def require_current(url: str) -> None:
    """Raise :class:`~strongroom.store.schema.SchemaMismatch` unless ``url``'s schema is current.

    What starts a deployment (``serve``, the key agent) asks this before it spawns a
    process, so the operator reads the refusal instead of "the agent did not start".
    """
    Store.open(url, schema="current").close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def reader_engine(store: Store, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An engine for reads that never wait for SQLite's write lock.

    On SQLite: a second engine on the same file whose connections are
    ``query_only`` and start no transaction of their own (a caller that needs a
    snapshot over several statements emits ``BEGIN``, which is deferred); the
    caller disposes it when done. On PostgreSQL: the store's own engine (do not
    dispose it).
    """
    if store.dialect != "sqlite":
        return store.engine
    reader = create_engine(store.engine.url, connect_args={"timeout": 30, "isolation_level": None},
                           pool_size=pool_size, max_overflow=max_overflow)
    event.listen(reader, "connect", _sqlite_query_only)
    return reader


def writer_engine(store: Store) -> tuple[Engine, bool]:
    """An engine for one long-lived writing connection, and whether the caller emits ``BEGIN``.

    On a file-backed SQLite database: a second engine on the file (one pooled
    connection, the store's pragmas) without the store's ``begin`` hook, so its
    owner emits ``BEGIN IMMEDIATE`` itself on the DB-API connection (True): the
    hook's SQLAlchemy execute cost more than the statement in the audit
    writer's hot loop. ``Connection.begin()`` still brackets the transaction
    and commits or rolls it back. Elsewhere (PostgreSQL, in-memory SQLite): the
    store's engine (False). The caller disposes an engine it got here unless
    it is ``store.engine``.
    """
    path = store.engine.url.database or ""
    if store.dialect != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return store.engine, False
    engine = create_engine(store.engine.url, connect_args={"timeout": 30, "isolation_level": None},
                           pool_size=1, max_overflow=0)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine, True


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that a
    # write transaction takes its lock up front and a read-only one does not.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READONLY)
                         else "BEGIN IMMEDIATE")


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise StorageError("a read-only session tried to write", obj="database session",
                           remedy="use Store.session() (not readonly=True) to write")


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


class Store:
    """A database: an engine, a session factory, and the schema at its newest version."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(engine.execution_options(**{READONLY: True}),
                                     expire_on_commit=False)
        event.listen(self._readers, "before_flush", _refuse_flush)

    @classmethod
    def open(cls, url: str, *, schema: SchemaMode = "create") -> Store:
        """Connect to ``url``; ``schema`` says what may happen to its schema (store/schema.py).

        ``create`` (default): a new, empty database gets the whole schema, an existing
        one must be at this code's revisions. ``current``: what a deployment runs
        with, refusing a new, older or newer database (an SQLite file is not
        created). ``upgrade``: apply pending migrations (``strongroom db upgrade``).
        ``unchecked``: change and check nothing. Raises
        :class:`~strongroom.store.schema.SchemaMismatch` when refused.
        """
        kwargs: dict[str, Any] = {}
        if is_sqlite(url):
            path = url.split("///", 1)[-1].partition("?")[0]
            if path and path != ":memory:" and not path.startswith("file:"):
                if schema == "current" and not Path(path).is_file():
                    SchemaState.of(frozenset()).require(url)  # no database: refused, not made
                # Created 0600 here, so SQLite's -wal and -shm files (which copy
                # the database file's mode) are 0600 from their first byte too.
                Path(path).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                create_private_file(Path(path))
            kwargs["connect_args"] = {"timeout": 30, "isolation_level": None}
        else:
            kwargs["pool_pre_ping"] = True
            if "psycopg" in url.split("://", 1)[0]:
                from strongroom.store.pg_arrays import register_dumpers

                register_dumpers()  # the release path's arrays, before any connection
        try:
            engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(
                f"cannot use database URL ({type(exc).__name__})",
                obj="STRONGROOM_DATABASE_URL",
                remedy="check the URL, e.g. postgresql+psycopg://user@host:5432/db",
            ) from exc
        if is_sqlite(url):
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        store = cls(engine)
        try:
            store._settle_schema(schema)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _settle_schema(self, mode: SchemaMode) -> None:
        if mode == "unchecked":
            return
        state = self.schema_state()
        if mode == "upgrade" or (mode == "create" and state.new):
            self.migrate()  # refuses a newer database first
        else:
            state.require(self.url)

    @property
    def url(self) -> str:
        """The database URL (password hidden)."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def schema_versions(self) -> frozenset[str]:
        """The Alembic revisions the database is at (empty when none)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError as exc:
            if not self._reachable_without_schema():
                raise StorageError(
                    f"cannot read the schema revision: {type(exc).__name__}", obj=self.url,
                    remedy="check that the database is reachable and readable") from exc
            return frozenset()
        return frozenset(str(r[0]) for r in rows)

    def _reachable_without_schema(self) -> bool:
        try:
            with self.engine.connect() as conn:
                return not inspect(conn).has_table("alembic_version")
        except SQLAlchemyError:
            return False

    def schema_state(self) -> SchemaState:
        """The database's revisions beside this code's (new, current, pending or newer)."""
        return SchemaState.of(self.schema_versions())

    def migrate(self) -> SchemaState:
        """Apply every Alembic migration not yet applied; the state before it (from -> to).

        Only ``strongroom init`` (through ``Store.open``'s ``create``) and ``strongroom
        db upgrade`` call this; a database a newer strongroom migrated is refused.
        """
        before = self.schema_state()
        before.refuse_newer(self.url)
        if before.current:
            return before
        try:
            from alembic import command

            with _upgrade_lock:
                command.upgrade(_alembic_config(self.engine), "heads")
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot migrate the database schema: {type(exc).__name__}: {exc.args[0] if exc.args else ''}",
                obj=self.url,
                remedy="check that the database is reachable and writable",
            ) from exc
        return before

    def table_names(self) -> list[str]:
        """Names of the tables that exist in the database."""
        return sorted(inspect(self.engine).get_table_names())

    @contextlib.contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        ``readonly=True``: the transaction only reads (on SQLite a deferred
        ``BEGIN`` on a WAL snapshot, not the write lock); flushing raises
        :class:`StorageError`.
        """
        session = (self._readers if readonly else self._sessions)()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StorageError(
                f"database operation failed: {type(exc).__name__}",
                obj=self.url,
                remedy="check that the database is reachable and writable, then retry",
            ) from exc
        finally:
            session.close()

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

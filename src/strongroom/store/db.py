"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

The database is untrusted storage: it holds ciphertext, signed statements and
hashes. Integrity comes from the signatures and MACs the layers above check,
not from the database. What the store guarantees is durability: SQLite runs in
WAL mode with ``synchronous=FULL`` so a committed transaction survives a crash.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from strongroom.errors import StorageError

__all__ = ["Store", "is_sqlite"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.M)


def schema_heads() -> frozenset[str]:
    """The newest Alembic revisions, read from the migration files without importing Alembic.

    A store already at these revisions skips Alembic entirely: importing it
    costs most of a CLI command's start-up. A test checks this against Alembic.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(text)
        if down is not None:
            parents.update(re.findall(r'"([^"]+)"', down.group(1)))
    return frozenset(revisions - parents)
_upgrade_lock = threading.Lock()


def is_sqlite(url: str) -> bool:
    """True when the URL names an SQLite database."""
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


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

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` and bring its schema up to date."""
        kwargs: dict[str, Any] = {}
        if is_sqlite(url):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "isolation_level": None}
        else:
            kwargs["pool_pre_ping"] = True
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
            # pysqlite's own transaction handling defers BEGIN; emit it ourselves
            # so that a write transaction takes its lock up front.
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

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
        except SQLAlchemyError:
            return frozenset()
        return frozenset(str(r[0]) for r in rows)

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied."""
        if self.schema_versions() == schema_heads():
            return
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

    def table_names(self) -> list[str]:
        """Names of the tables that exist in the database."""
        return sorted(inspect(self.engine).get_table_names())

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        session = self._sessions()
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

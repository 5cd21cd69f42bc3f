"""The store opens, migrates idempotently and reports errors without leaking secrets."""

from __future__ import annotations

import pytest

from strongroom.errors import StorageError
from strongroom.store.db import Store, schema_heads


def test_migrations_create_every_table(store: Store) -> None:
    names = store.table_names()
    assert {"artifacts", "artifact_files", "alembic_version"} <= set(names)


def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    Store.open(db_url).close()
    again = Store.open(db_url)
    assert "artifacts" in again.table_names()
    again.close()


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: object) -> None:
    s = Store.open(f"sqlite:///{tmp_path}/x.db")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    s.close()


def test_unreachable_database_is_a_clear_error_without_password() -> None:
    with pytest.raises(StorageError) as info:
        Store.open("postgresql+psycopg://u:hunter2@127.0.0.1:1/none?connect_timeout=2")
    assert "hunter2" not in str(info.value)
    assert "reachable" in str(info.value)


def test_schema_heads_match_alembic(store: Store) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from strongroom.store.db import MIGRATIONS_DIR, schema_heads

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert set(ScriptDirectory.from_config(cfg).get_heads()) == set(schema_heads())
    assert store.schema_versions() == schema_heads()


def test_readonly_sessions_do_not_take_the_write_lock(tmp_path: object) -> None:
    import threading
    import time
    from datetime import UTC, datetime

    from sqlalchemy import text

    from strongroom.store.tables.monitor import CanaryRow

    s = Store.open(f"sqlite:///{tmp_path}/ro.db")
    try:
        with s.session() as w:
            w.add(CanaryRow(name="before", kind="weights", created_at=datetime.now(UTC)))
        writer_holds = threading.Event()
        release = threading.Event()

        def writer() -> None:
            with s.session() as w:  # BEGIN IMMEDIATE: holds the write lock until release
                w.add(CanaryRow(name="during", kind="weights", created_at=datetime.now(UTC)))
                w.flush()
                writer_holds.set()
                release.wait(10)

        t = threading.Thread(target=writer)
        t.start()
        assert writer_holds.wait(10)
        try:
            started = time.monotonic()
            with s.session(readonly=True) as r:  # a snapshot read, not queued behind the writer
                names = set(r.scalars(text("SELECT name FROM monitor_canaries")))
            assert names == {"before"}
            assert time.monotonic() - started < 1.0
        finally:
            release.set()
            t.join()
        with pytest.raises(StorageError, match="read-only"), s.session(readonly=True) as r:
            r.add(CanaryRow(name="sneaky", kind="weights", created_at=datetime.now(UTC)))
        with s.session(readonly=True) as r:
            assert set(r.scalars(text("SELECT name FROM monitor_canaries"))) == {"before", "during"}
    finally:
        s.close()


def test_open_settles_the_schema_only_as_asked(db_url: str) -> None:
    """``create`` makes a new schema; ``current`` refuses older, newer and empty databases."""
    from alembic import command
    from sqlalchemy import text

    from strongroom.store.db import _alembic_config
    from strongroom.store.schema import SchemaMismatch

    with pytest.raises(SchemaMismatch, match="no strongroom schema"):
        Store.open(db_url, schema="current")
    Store.open(db_url).close()  # create
    (head,) = schema_heads()
    s = Store.open(db_url, schema="unchecked")
    try:
        command.downgrade(_alembic_config(s.engine), "-1")
        (older,) = s.schema_versions()
        for mode in ("current", "create"):
            with pytest.raises(SchemaMismatch, match=f"{older}.*older.*{head}.*db upgrade"):
                Store.open(db_url, schema=mode)  # type: ignore[arg-type]
        assert s.schema_versions() == {older}  # refused, not migrated
        before = Store.open(db_url, schema="upgrade")
        before.close()
        assert s.schema_versions() == {head}
        with s.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0999_newer'"))
        for mode in ("current", "create", "upgrade"):
            with pytest.raises(SchemaMismatch, match=f"0999_newer.*does not know.*{head}"):
                Store.open(db_url, schema=mode)  # type: ignore[arg-type]
    finally:
        s.close()

"""Migration ``0015_audit_rowid``: an audit log written at the old schema upgrades in place.

A log made at revision ``0014_attest_nonces`` (entries, Merkle nodes, signed
checkpoints, the anchor) is migrated with ``Store.migrate`` (what ``strongroom
db upgrade`` runs); every row must come through byte for byte, the whole log
must still verify against the checkpoints signed before the upgrade, and new
appends, proofs and consistency proofs must extend it. On SQLite the tables
must then be the rowid-keyed and ``WITHOUT ROWID`` ones, and tampering with
them must still be named. A row whose index is not an integer is refused
before anything changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from strongroom.audit import AuditLog, open_checkpoint
from strongroom.audit.merkle import verify_consistency
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import IntegrityError, StorageError
from strongroom.store.db import Store, _alembic_config, is_sqlite, schema_heads

from audit_helpers import ORIGIN, FixedClock, fill

OLD = "0014_attest_nonces"
NEW = "0015_audit_rowid"


def _store_at(db_url: str, revision: str) -> Store:
    from alembic import command

    kwargs = {"connect_args": {"isolation_level": None}} if is_sqlite(db_url) else {}
    engine = create_engine(db_url, **kwargs)
    try:
        command.upgrade(_alembic_config(engine), revision)
    finally:
        engine.dispose()
    store = Store.open(db_url, schema="unchecked")
    assert store.schema_versions() == {revision}
    return store


def _rows(store: Store) -> dict[str, list[tuple[object, ...]]]:
    with store.engine.connect() as conn:
        return {
            "entries": [tuple(r) for r in conn.execute(text(
                "SELECT idx, leaf_hash, body FROM audit_entries ORDER BY idx"))],
            "nodes": [tuple(r) for r in conn.execute(text(
                "SELECT level, idx, hash FROM audit_nodes ORDER BY level, idx"))],
            "checkpoints": [tuple(r) for r in conn.execute(text(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size"))],
            "head": [tuple(r) for r in conn.execute(text(
                "SELECT size, root, checkpoint_size, origin, hmac_salt FROM audit_head"))],
        }


def _ddl(store: Store, table: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"),
                                {"t": table}).scalar_one())


def test_old_log_upgrades_and_still_verifies(db_url: str, signer: Ed25519Signer,
                                             tmp_path: Path) -> None:
    assert NEW in schema_heads()
    anchor = tmp_path / "anchor"
    store = _store_at(db_url, OLD)
    log = AuditLog(store, signer, ORIGIN, clock=FixedClock(), anchor_path=anchor)
    fill(log, 37)
    first = log.checkpoint()
    fill(log, 30)  # a tree whose nodes span several levels, past a checkpoint
    second = log.checkpoint()
    fill(log, 5)  # and entries no checkpoint covers yet
    log.verify()
    before = _rows(store)
    log.close()
    if is_sqlite(db_url):
        assert "BIGINT" in _ddl(store, "audit_entries")
        assert "WITHOUT ROWID" not in _ddl(store, "audit_nodes")

    store.migrate()
    assert store.schema_versions() == schema_heads()
    assert _rows(store) == before  # every row as it was, byte for byte
    if is_sqlite(db_url):
        assert "idx INTEGER NOT NULL" in _ddl(store, "audit_entries")
        assert _ddl(store, "audit_nodes").endswith("WITHOUT ROWID")
    store.close()

    store = Store.open(db_url, schema="current")
    try:
        log = AuditLog(store, signer, ORIGIN, clock=FixedClock(), anchor_path=anchor)
        report = log.verify([first, second])
        assert report.size == 72 and report.checkpoints == 2
        assert log.append(actor="bob", action="weights.read", obj="m@72", decision="allow") == 72
        assert fill(log, 40) == list(range(73, 113))
        note = log.checkpoint()
        log.verify([first, second, note])
        for index in (0, 36, 66, 71, 72, 112):
            assert log.prove(index).verify(signer.vkey).index == index
        old = open_checkpoint(second, log_key=signer.vkey).checkpoint
        new = open_checkpoint(note, log_key=signer.vkey).checkpoint
        assert (old.size, new.size) == (67, 113)
        verify_consistency(67, 113, log.consistency(67, 113), old.root, new.root)

        # a hostile DBA is still caught on the rebuilt tables
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_entries WHERE idx = 50"))
        with pytest.raises(IntegrityError, match=r"audit entry 50"):
            log.verify()
        log.close()
    finally:
        store.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_non_integer_index_stops_the_upgrade_unchanged(db_url: str, signer: Ed25519Signer,
                                                       tmp_path: Path) -> None:
    store = _store_at(db_url, OLD)
    log = AuditLog(store, signer, ORIGIN, clock=FixedClock(), anchor_path=tmp_path / "anchor")
    fill(log, 4)
    log.close()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET idx = 2.5 WHERE idx = 2"))
    before = _rows(store)
    with pytest.raises(StorageError, match=r"audit_entries holds a row whose index is not an "
                                           r"integer \('2.5'\)"):
        store.migrate()
    assert store.schema_versions() == {OLD}
    assert _rows(store) == before
    assert "BIGINT" in _ddl(store, "audit_entries")
    store.close()

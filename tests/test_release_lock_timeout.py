"""A release that cannot get the database's locks within the bound fails closed, and is audited.

Another process holds SQLite's write lock (``BEGIN IMMEDIATE``) or PostgreSQL's
lock on the egress ledger; with ``STRONGROOM_DB_LOCK_TIMEOUT_S=0.5`` the
release raises :class:`AuditUnavailable` in about that long, nothing is
unwrapped or charged, and once the lock is gone the next append records the
refused release.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from strongroom.audit.log import AuditEvent
from strongroom.errors import AuditUnavailable
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseRequest, sign_release_evidence
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store

from keyring_fixtures import unsealed_service

BOUND_S = 0.5
#: What the bound may take on a loaded test machine (a release normally takes milliseconds).
SLACK_S = 2.5

_HOLD_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def _locked(db_url: str) -> Iterator[None]:
    """Another process (SQLite) or connection (PostgreSQL) holds the lock a release needs."""
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1]
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_SQLITE, path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            yield
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(10)
        return
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE egress_ledger IN EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()


def _request(officer: Identity, blob: str = "blob-1") -> ReleaseRequest:
    ev = sign_release_evidence(officer.private_key, artifact="m@1", shard="w.safetensors",
                               blob_id=blob, purpose="load")
    return ReleaseRequest(principal=officer.public.principal,
                          principal_key=officer.public.public_bytes, artifact="m@1",
                          shard="w.safetensors", blob_id=blob, nbytes=1000, purpose="load",
                          evidence=ev)


def _releases(svc: LocalKeyService) -> list[AuditEvent]:
    assert svc._audit is not None
    return [e for e in svc._audit.events(0, svc._audit.size()) if e.action == "key.release"]


def _charges(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.execute(sa.text("SELECT count(*) FROM egress_charges")).scalar() or 0)


@pytest.fixture
def service(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[LocalKeyService, Identity]]:
    monkeypatch.setenv("STRONGROOM_DB_LOCK_TIMEOUT_S", str(BOUND_S))
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        yield svc, officer
    finally:
        svc.seal()


def test_a_locked_store_refuses_the_release_within_the_bound_then_audits_it(
        service: tuple[LocalKeyService, Identity], store: Store, db_url: str) -> None:
    svc, officer = service
    key = os.urandom(16)
    svc.wrap_file_key("blob-1", key)
    assert bytes(svc.release(_request(officer))) == key  # warm: caches, connections
    assert svc._audit is not None and svc._audit.lock_timeout == BOUND_S
    with _locked(db_url):
        start = time.monotonic()
        with pytest.raises(AuditUnavailable) as refused:
            svc.release(_request(officer))
        took = time.monotonic() - start
    assert BOUND_S * 0.8 <= took < BOUND_S + SLACK_S, took
    err = refused.value
    assert f"locked for more than {BOUND_S:g} s" in err.message and "refused" in err.message
    assert err.obj == store.url and "STRONGROOM_DB_LOCK_TIMEOUT_S" in (err.remedy or "")
    assert [e.decision for e in _releases(svc)] == ["allow"]  # nothing recorded while locked
    assert _charges(store) == 1  # and nothing charged

    assert bytes(svc.release(_request(officer))) == key  # the store is back
    events = _releases(svc)
    assert sorted(e.decision for e in events) == ["allow", "allow", "deny"]
    refusal = next(e for e in events if e.decision == "deny")
    assert refusal.actor == officer.public.principal and refusal.shard == "w.safetensors"
    assert "locked for more than" in refusal.reason
    assert refusal.details["unrecorded"]["decision"] == "allow"
    assert refusal.details["unrecorded"]["error"] == "AuditUnavailable"
    assert _charges(store) == 2
    assert svc._audit.verify().size == svc._audit.size()  # the refusal is an ordinary entry


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from strongroom.audit.config import AuditSettings

    assert AuditSettings().db_lock_timeout_s == 5.0
    monkeypatch.setenv("STRONGROOM_DB_LOCK_TIMEOUT_S", "0.25")
    assert AuditSettings().db_lock_timeout_s == 0.25
    monkeypatch.setenv("STRONGROOM_DB_LOCK_TIMEOUT_S", "0")
    with pytest.raises(ValidationError):
        AuditSettings()


def test_the_reads_before_the_append_never_wait_for_the_lock(
        service: tuple[LocalKeyService, Identity], db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by RT-ABS-007: the canary list (its cache expired) and the state guard's ledger
    check (due) read the store before the append; they read a snapshot, so the release is
    still refused within the bound instead of waiting for the store's own busy timeout."""
    from strongroom.monitor import canaries

    monkeypatch.setattr(canaries, "CACHE_TTL_S", 0.0)
    svc, officer = service
    key = os.urandom(16)
    svc.wrap_file_key("blob-1", key)
    assert bytes(svc.release(_request(officer))) == key
    assert svc._guard is not None
    with _locked(db_url):
        svc._guard._egress_due = 0.0  # the guard's ledger check is due before this release
        start = time.monotonic()
        with pytest.raises(AuditUnavailable) as refused:
            svc.release(_request(officer))
        took = time.monotonic() - start
    assert took < BOUND_S + SLACK_S, took
    assert f"locked for more than {BOUND_S:g} s" in refused.value.message

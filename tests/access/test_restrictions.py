"""The restriction journal's interval cost is bounded; what it catches, it still catches.

A run that finds the statements' marker as the last run left it looks up only
the statements logged since and one sweep slice; a moved marker (a deletion, an
insert) and the first run compare every restrictive row. The clock is driven
by hand: no sleeps.
"""

from __future__ import annotations

import base64
import json
import math

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, update

from strongroom.access import statements
from strongroom.access.restrictions import SWEEP_MAX_S, RestrictionJournal, journal_details
from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import StorageError
from strongroom.store.db import Store
from strongroom.store.tables.access import AccessStatement

#: Restrictive statements stored and journaled before each test's first run.
ROWS = 300
#: The guard's interval, as the tests drive the clock.
STEP = 2.0


def _envelope(i: int) -> str:
    payload = base64.b64encode(json.dumps({"revoked": f"key{i}"}).encode()).decode()
    return json.dumps({"payload": payload, "payloadType": statements.payload_type("revocation"),
                       "signatures": [{"keyid": "officer", "sig": f"sig{i}"}]})


class Setup:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = AuditLog(store, Ed25519Signer("journal.test/log",
                                                   Ed25519PrivateKey.generate()))
        self.now = 0.0
        self.digests: list[str] = []

    def put(self, n: int) -> list[str]:
        """Store ``n`` revocations and log them as the server does; their digests."""
        first = len(self.digests)
        envs = [_envelope(i) for i in range(first, first + n)]
        for i, env in enumerate(envs, first):
            statements.restore(self.store, "revocation", env, subject=f"key{i}")
        self.audit.append_many(
            {"actor": "officer", "action": "directory.revoke", "obj": f"key{i}",
             "decision": "allow", "details": journal_details("revocation", env, subject=f"key{i}")}
            for i, env in enumerate(envs, first))
        self.digests += [statements.payload_digest(e) for e in envs]
        return self.digests[first:]

    def journal(self) -> RestrictionJournal:
        return RestrictionJournal(self.store, self.audit, clock=lambda: self.now,
                                  sweep_share=0.0)

    def edit(self, digest: str) -> None:
        """An UPDATE by SQL: no marker moves."""
        with self.store.session() as s:
            s.execute(update(AccessStatement).where(AccessStatement.digest == digest)
                      .values(subject="someone-else"))


@pytest.fixture
def env(store: Store) -> Setup:
    return Setup(store)


def test_an_unmoved_marker_reads_no_whole_table(env: Setup,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env.put(ROWS)
    j = env.journal()
    assert j.reconcile() == []
    whole = 0
    rows = RestrictionJournal._rows

    def counted(self: RestrictionJournal) -> object:
        nonlocal whole
        whole += 1
        return rows(self)

    monkeypatch.setattr(RestrictionJournal, "_rows", counted)
    for _ in range(5):
        env.now += STEP
        assert j.reconcile() == []
        assert j.looked_up <= math.ceil(ROWS * STEP / SWEEP_MAX_S)
    assert whole == 0  # the old journal read every restrictive row on every run


def test_an_edit_that_moves_no_marker_is_undone_within_the_sweep_bound(env: Setup) -> None:
    digests = env.put(ROWS)
    j = env.journal()
    j.reconcile()
    env.now += STEP
    j.reconcile()  # the sweep has passed the first rows
    env.edit(digests[0])
    env.edit(digests[ROWS // 2])
    edited_at, found = env.now, []
    while len(found) < 2:
        env.now += STEP
        assert env.now - edited_at <= SWEEP_MAX_S + STEP, "not found within the bound"
        found += j.reconcile()
    assert sorted(t.digest for t in found) == sorted([digests[0], digests[ROWS // 2]])
    assert {t.what for t in found} == {"altered"}
    assert env.now - edited_at > STEP  # by the sweep, not by reading every row
    assert j.reconcile() == []  # restored


def test_a_deleted_row_moves_the_marker_and_is_restored_at_the_next_run(env: Setup) -> None:
    digests = env.put(ROWS)
    j = env.journal()
    j.reconcile()
    with env.store.session() as s:
        s.execute(delete(AccessStatement).where(AccessStatement.digest == digests[ROWS // 2]))
    env.now += STEP
    found = j.reconcile()
    assert [(t.digest, t.what) for t in found] == [(digests[ROWS // 2], "missing")]
    assert statements.envelopes(env.store, "revocation", subject=f"key{ROWS // 2}")


def test_a_statement_logged_since_the_last_run_is_compared_at_once(env: Setup) -> None:
    env.put(ROWS)
    j = env.journal()
    j.reconcile()
    env.now += STEP
    j.reconcile()
    # A row stored with no log entry: the run that sees the marker move journals it (an
    # entry of its own, read by the next run); the row is edited before that run.
    new = _envelope(ROWS)
    digest = statements.restore(env.store, "revocation", new, subject=f"key{ROWS}")
    env.now += STEP
    assert j.reconcile() == []
    env.edit(digest)
    env.now += STEP
    assert [t.digest for t in j.reconcile()] == [digest]
    assert j.looked_up <= 1 + math.ceil((ROWS + 1) * STEP / SWEEP_MAX_S)


def test_the_first_run_compares_every_row(env: Setup) -> None:
    digests = env.put(ROWS)
    env.edit(digests[ROWS - 1])
    assert [t.digest for t in env.journal().reconcile()] == [digests[ROWS - 1]]


def test_a_run_that_failed_to_restore_makes_the_next_one_full(
        env: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    digests = env.put(ROWS)
    j = env.journal()
    j.reconcile()
    env.edit(digests[ROWS - 1])
    restore = statements.restore

    def down(*args: object, **kw: object) -> str:
        raise StorageError("cannot write the access statements", obj="test")

    monkeypatch.setattr(statements, "restore", down)
    with pytest.raises(StorageError):
        j.reconcile(full=True)
    monkeypatch.setattr(statements, "restore", restore)
    env.now += STEP
    assert [t.digest for t in j.reconcile()] == [digests[ROWS - 1]]

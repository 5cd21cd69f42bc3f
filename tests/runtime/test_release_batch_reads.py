"""A release batch's shared reads: the access statements' marker is read once per batch,
when the batch is run, so a revocation committed before a batch refuses every request in
it, and the next batch reads it afresh."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from access_kit import World
from sqlalchemy import event
from test_state_guard import _delete, _grant, _request, _svc, _tamper_alerts, world

from strongroom.access import statements
from strongroom.access.directory import KeyRevocation, publish
from strongroom.access.grants import revoke_grant
from strongroom.errors import AccessDenied, StrongroomError
from strongroom.release import ReleaseRequest
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store, raw_query
from strongroom.store.tables.access import AccessStatement

__all__ = ["world"]


def _batch(w: World, requests: list[ReleaseRequest]) -> list[bytearray | StrongroomError]:
    gate = w.keys.gate
    assert gate is not None
    return gate.release_many(requests)


def _released(w: World, n: int) -> bool:
    return all(isinstance(o, bytearray) for o in _batch(w, [_request(w) for _ in range(n)]))


class _Reads:
    """The access statements' reads made on this thread: marker queries by kind, ORM reads."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = self.head = self.rows = 0
        caller = threading.get_ident()  # a background thread's reads (the guard's) don't count
        real = raw_query

        def counted(engine: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
            if threading.get_ident() == caller:
                self.full += sql == statements._MARKER_SQL
                self.head += sql == getattr(statements, "_HEAD_SQL", None)
            return real(engine, sql, params)

        def orm(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            if threading.get_ident() == caller and "access_statements" in sql:
                self.rows += 1

        monkeypatch.setattr("strongroom.access.statements.raw_query", counted)
        event.listen(store.engine, "before_cursor_execute", orm)
        self._listening = (store, orm)

    def stop(self) -> None:
        event.remove(self._listening[0].engine, "before_cursor_execute", self._listening[1])

    def take(self) -> tuple[int, int, int]:
        """(full markers, heads, other reads of access_statements) since the last take."""
        out = (self.full, self.head, self.rows)
        self.full = self.head = self.rows = 0
        return out


def test_a_steady_batch_reads_only_the_head(world: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The full marker's count(*) scans access_statements (~6 ms at 100,000 rows on SQLite):
    # a batch whose snapshot holds everything it needs reads only the head (one index read).
    w = world
    _grant(w)
    reads = _Reads(w.store, monkeypatch)
    assert _released(w, 5)  # the first snapshot: a full marker, the reads, a full marker again
    full, heads, rows = reads.take()
    assert (full, heads) == (2, 0) and rows > 0
    for n in (3, 1, 4):
        assert _released(w, n)
        assert reads.take() == (0, 1, 0)  # and afresh for each batch: one head, nothing else
    w.enroll("dave")  # a statement put moves the head: a new snapshot, read afresh
    assert _released(w, 2)
    full, heads, rows = reads.take()
    assert (full, heads) == (2, 1) and rows > 0
    assert _released(w, 2)
    assert reads.take() == (0, 1, 0)
    reads.stop()


def test_a_grant_revoked_before_a_batch_refuses_every_request_in_it(world: World) -> None:
    w = world
    _, grant = _grant(w)
    assert _released(w, 3)  # warm: the snapshot and the decision are cached
    revoke_grant(w.store, w.people["bob"].private_key, "bob", statements.payload_digest(grant),
                 "stop", now=time.time())
    out = _batch(w, [_request(w) for _ in range(4)])
    assert all(isinstance(o, AccessDenied) and "revoked" in o.message for o in out), out


def test_a_key_revoked_before_a_batch_refuses_every_request_in_it(world: World) -> None:
    w = world
    _grant(w)
    assert _released(w, 3)
    publish(w.store, "revocation",
            KeyRevocation(w.people["alice"].public.key_id, "lost laptop", int(time.time()))
            .sign(*[o.private_key for o in w.officers]))
    out = _batch(w, [_request(w) for _ in range(4)])
    assert all(isinstance(o, AccessDenied) for o in out), out
    assert w.keys.gate is not None
    decisions = [e.decision for e in w.keys.gate.audit.events() if e.action == "key.release"]
    assert decisions == ["allow"] * 3 + ["deny"] * 4


def test_a_batch_mixing_good_and_bad_requests_refuses_only_the_bad_ones(world: World) -> None:
    # Each request of a batch is checked on its own, in order, although the batch shares
    # its reads (the marker, the wrapped keys, the described shard, the Grant decision).
    w = world
    _grant(w)
    good = _request(w)
    replayed = _request(w)
    other_blob = dataclasses.replace(_request(w), blob_id="0" * 64)
    no_grant = _request(w, "carol")
    out = _batch(w, [good, replayed, replayed, other_blob, no_grant, _request(w)])
    assert [isinstance(o, bytearray) for o in out] == [True, True, False, False, False, True]
    assert isinstance(out[2], AccessDenied) and "replay" in out[2].message
    assert isinstance(out[3], StrongroomError)
    assert isinstance(out[4], AccessDenied)
    assert w.keys.gate is not None
    decisions = [e.decision for e in w.keys.gate.audit.events() if e.action == "key.release"]
    assert sorted(decisions) == ["allow"] * 3 + ["deny"] * 3


def test_a_grant_budget_spent_inside_a_batch_refuses_from_that_request_on(world: World) -> None:
    w = world
    size = _request(w).nbytes
    _grant(w, budget=2 * size + size // 2)
    out = _batch(w, [_request(w) for _ in range(4)])
    assert [isinstance(o, bytearray) for o in out] == [True, True, False, False]
    assert all(isinstance(o, AccessDenied) and "budget" in o.message for o in out[2:]), out
    assert not _released(w, 1)  # and in the next batch too


# -- rows deleted or inserted by SQL: the head does not see a deletion below the top ------------

def _deployed(w: World) -> LocalKeyService:
    """The deployment's key service, its state guard's interval thread stopped: only the rule's
    own reads (``on_change``) may restore a deleted row in these tests."""
    svc = _svc(w)
    assert svc._guard is not None
    svc._guard.stop()
    return svc


def _revoke_key(w: World, who: str) -> None:
    publish(w.store, "revocation",
            KeyRevocation(w.people[who].public.key_id, "left the lab", int(time.time()))
            .sign(*[o.private_key for o in w.officers]))


def _refused(svc: LocalKeyService, w: World, who: str) -> bool:
    out = svc.release_many([_request(w, who)])
    return isinstance(out[0], AccessDenied)


def test_a_deleted_revocation_holds_for_a_principal_the_snapshot_never_read(
        world: World) -> None:
    # The memo-miss path: alice's view was never read when her revocation row is deleted, so
    # her first batch reads the directory after the deletion, and the head cannot tell.
    w = world
    _grant(w)
    svc = _deployed(w)
    assert _refused(svc, w, "carol")  # no grant: a snapshot that holds carol's view only
    _revoke_key(w, "alice")
    w.enroll("dave")  # a later row: the revocation is not the table's highest id
    assert _refused(svc, w, "carol")  # a new snapshot; the journal logs the revocation
    top = statements.head(w.store)
    assert _delete(w, "revocation") == 1
    assert statements.head(w.store) == top  # the deletion moved only the count
    assert _refused(svc, w, "alice")
    assert statements.envelopes(w.store, "revocation"), "restored before alice was decided"
    assert any("revocation" in m for m in _tamper_alerts(w))


def test_a_deleted_grant_revocation_holds_for_a_decision_the_snapshot_kept(
        world: World) -> None:
    w = world
    _, grant = _grant(w)
    svc = _deployed(w)
    revoke_grant(w.store, w.people["bob"].private_key, "bob", statements.payload_digest(grant),
                 "stop", now=time.time())
    w.enroll("dave")
    assert _refused(svc, w, "alice")  # read and kept: alice's grant is revoked
    top = statements.head(w.store)
    assert _delete(w, "grant-revocation") == 1
    assert statements.head(w.store) == top
    for _ in range(3):
        assert _refused(svc, w, "alice")


def test_a_row_deleted_during_a_batch_read_is_not_kept_in_the_snapshot(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A deletion between the batch's full marker and its read: that batch may decide on what
    # it read (as for any row deleted once the batch began), but the snapshot must not keep
    # it, or every later batch would decide on it while the head stays as it was.
    w = world
    _grant(w)
    svc = _deployed(w)
    assert _refused(svc, w, "carol")
    _revoke_key(w, "alice")
    w.enroll("dave")
    assert _refused(svc, w, "carol")  # the journal logs the revocation
    real = statements.envelopes
    deleted: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> list[str]:
        if not deleted:
            deleted.append(_delete(w, "revocation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(statements, "envelopes", racing)
    svc.release_many([_request(w, "alice")])  # whatever this batch decided
    monkeypatch.setattr(statements, "envelopes", real)
    assert deleted == [1]
    for _ in range(2):
        assert _refused(svc, w, "alice")
    assert statements.envelopes(w.store, "revocation"), "restored"


def test_a_row_inserted_by_sql_is_seen_by_the_next_batch(world: World) -> None:
    w = world
    _grant(w)
    svc = _deployed(w)
    assert not _refused(svc, w, "alice")
    env = (KeyRevocation(w.people["alice"].public.key_id, "left the lab", int(time.time()))
           .sign(*[o.private_key for o in w.officers]))
    with w.store.session() as s:  # not through put: the generation stays as it was
        s.add(AccessStatement(kind="revocation", subject=w.people["alice"].public.key_id,
                              resource="", signer="", digest=statements.payload_digest(env),
                              envelope=env, expires=0, created_at=datetime.now(UTC)))
    assert _refused(svc, w, "alice")

"""A release batch's shared reads: the access statements' marker is read once per batch,
when the batch is run, so a revocation committed before a batch refuses every request in
it, and the next batch reads it afresh."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from access_kit import World
from test_state_guard import _grant, _request, world

from strongroom.access import statements
from strongroom.access.directory import KeyRevocation, publish
from strongroom.access.grants import revoke_grant
from strongroom.errors import AccessDenied, StrongroomError
from strongroom.release import ReleaseRequest

__all__ = ["world"]


def _batch(w: World, requests: list[ReleaseRequest]) -> list[bytearray | StrongroomError]:
    gate = w.keys.gate
    assert gate is not None
    return gate.release_many(requests)


def _released(w: World, n: int) -> bool:
    return all(isinstance(o, bytearray) for o in _batch(w, [_request(w) for _ in range(n)]))


def test_a_batch_reads_the_marker_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    _grant(w)
    reads: list[object] = []
    real = statements.marker
    caller = threading.get_ident()  # the batch runs here; a background thread's reads don't count

    def counted(store: object) -> tuple[int, int, int]:
        if threading.get_ident() == caller:
            reads.append(store)
        return real(store)  # type: ignore[arg-type]

    monkeypatch.setattr(statements, "marker", counted)
    assert _released(w, 5)
    assert len(reads) == 1
    assert _released(w, 3)
    assert len(reads) == 2  # and afresh for the next batch


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

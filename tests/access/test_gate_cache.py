"""GrantEvidence's snapshot cache and budgets: cached work never outlives a change to the
statements, budgets are per approved request, revoked grants free cap slots, the client host
reaches the audit log and the insider detectors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_kit import World, model_world

from strongroom.access import statements
from strongroom.access.caps import AccessCaps
from strongroom.access.directory import KeyRevocation, Resource, publish
from strongroom.access.evidence import GrantEvidence
from strongroom.access.grants import issue_grant, revoke_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied, StrongroomError
from strongroom.monitor.detectors import ActivityEvent
from strongroom.release import ReleaseRequest, sign_release_evidence
from strongroom.runtime.agent import request_from_json, request_to_json


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with model_world(db_url, tmp_path) as w:
        yield w


def _resource(w: World) -> Resource:
    m = w.vault.manifest("minilm")
    return Resource(m.ref, m.kind, 3, tuple(m.compartments))


def _issue(w: World, request_env: str) -> tuple[str, str]:
    """A grant built from the stored request (a fresh grant id every call); (env, id)."""
    who = str(statements.unverified_payload(request_env)["requester"])
    env, g = issue_grant(w.store, w.people[who].private_key,
                         statements.payload_digest(request_env), w.rule.reader.view(),
                         PolicyEngine(), _resource(w), now=time.time())
    return env, g.grant_id


def _granted(w: World, who: str, budget: int = 1 << 30) -> tuple[str, str]:
    req = w.request(who, "minilm", budget=budget)
    w.approve("bob" if who != "bob" else "alice", req)
    w.approve("carol" if who != "carol" else "alice", req)
    return req, _issue(w, req)[1]


def _request(w: World, who: str, *, host: str | None = None) -> ReleaseRequest:
    m = w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                               blob_id=entry.blob, purpose="load")
    return ReleaseRequest(principal=who, principal_key=ident.public.public_bytes,
                          artifact=m.ref, shard=entry.path, blob_id=entry.blob,
                          nbytes=entry.size, purpose="load", evidence=ev, host=host)


def _release(w: World, who: str, *, host: str | None = None) -> bytearray:
    return w.keys.release(_request(w, who, host=host))


def test_grants_assembled_from_one_request_share_its_byte_budget(world: World) -> None:
    w = world
    size = w.vault.manifest("minilm").files[0].size
    req, _ = _granted(w, "alice", budget=size)
    _release(w, "alice")
    _issue(w, req)  # a second Grant (new id) from the same request and approvals
    with pytest.raises(AccessDenied, match="budget"):
        _release(w, "alice")
    # The audit names the request, so a restarted gate rebuilds the same total.
    digest = statements.payload_digest(req)
    assert w.rule.used(digest) == size
    assert w.keys.gate is not None
    fresh = GrantEvidence(w.rule.officers, w.rule.reader.threshold, w.store,
                          shards=w.rule.shards)
    fresh.seed_from_audit(w.keys.gate.audit, time.time())
    assert fresh.used(digest) == size


def test_byte_budget_is_exact_under_concurrent_releases(world: World) -> None:
    w = world
    size = w.vault.manifest("minilm").files[0].size
    _granted(w, "alice", budget=3 * size)
    requests = [_request(w, "alice") for _ in range(8)]
    ok: list[int] = []
    barrier = threading.Barrier(len(requests))

    def go(r: ReleaseRequest) -> None:
        barrier.wait()
        try:
            w.keys.release(r)
            ok.append(1)
        except AccessDenied:
            pass

    threads = [threading.Thread(target=go, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 3


def test_revoked_grant_frees_its_cap_slot(world: World) -> None:
    w = world
    w.rule.caps = AccessCaps(load=1)
    _, alice_grant = _granted(w, "alice")
    _release(w, "alice")  # alice holds the only slot
    _granted(w, "carol")
    with pytest.raises(AccessDenied, match="cap"):
        _release(w, "carol")
    revoke_grant(w.store, w.people["alice"].private_key, "alice", alice_grant, "done",
                 now=time.time())
    _release(w, "carol")  # alice never released again: the revocation is found by the caps


def test_cap_holders_follow_storage_order(world: World) -> None:
    w = world
    w.rule.caps = AccessCaps(load=1)
    _granted(w, "carol")  # stored first, in the same second as bob's
    _granted(w, "bob")
    for _ in range(3):
        with pytest.raises(AccessDenied, match="cap"):
            _release(w, "bob")
    _release(w, "carol")


def test_cached_decision_sees_a_grant_revocation_at_once(world: World) -> None:
    w = world
    _, grant_id = _granted(w, "alice")
    for _ in range(3):
        _release(w, "alice")  # warm: the snapshot is cached
    revoke_grant(w.store, w.people["bob"].private_key, "bob", grant_id, "stop",
                 now=time.time())
    with pytest.raises(AccessDenied):
        _release(w, "alice")


def test_cached_decision_sees_a_key_revocation_at_once(world: World) -> None:
    w = world
    _granted(w, "alice")
    _release(w, "alice")
    _release(w, "alice")
    kid = w.people["alice"].public.key_id
    publish(w.store, "revocation",
            KeyRevocation(kid, "lost laptop", int(time.time()))
            .sign(*[o.private_key for o in w.officers]))
    with pytest.raises(AccessDenied, match="enrolled"):
        _release(w, "alice")


def _pin_clock(w: World) -> None:
    """Every release decides at one instant, so a cached decision is always in its second."""
    gate = w.keys.gate
    assert gate is not None
    pinned = time.time()
    gate.clock = lambda: pinned


def _decisions(w: World) -> int:
    snap = w.rule._snap
    return 0 if snap is None else sum(1 for k in snap.memo if k[0] == "decision")


def test_decision_reused_in_its_second_yields_to_a_grant_revocation(world: World) -> None:
    w = world
    _pin_clock(w)
    _, grant_id = _granted(w, "alice")
    _release(w, "alice")
    _release(w, "alice")  # served from the cached decision
    assert _decisions(w) == 1
    revoke_grant(w.store, w.people["carol"].private_key, "carol", grant_id, "stop",
                 now=time.time())
    with pytest.raises(AccessDenied, match="revoked"):
        _release(w, "alice")  # the very next release, in the same second
    assert _decisions(w) == 0  # the marker moved: a new snapshot, nothing cached


def test_decision_reused_in_its_second_yields_to_a_key_revocation(world: World) -> None:
    w = world
    _pin_clock(w)
    _granted(w, "alice")
    _release(w, "alice")
    _release(w, "alice")
    assert _decisions(w) == 1
    publish(w.store, "revocation",
            KeyRevocation(w.people["bob"].public.key_id, "left", int(time.time()))
            .sign(*[o.private_key for o in w.officers]))
    with pytest.raises(AccessDenied):  # bob's approval no longer counts: 1 of 2
        _release(w, "alice")


def test_marker_changes_on_insert_and_on_merged_cosignature(world: World) -> None:
    w = world
    kid = w.people["carol"].public.key_id
    rev = KeyRevocation(kid, "test", int(time.time()))
    first = statements.marker(w.store)
    publish(w.store, "revocation", rev.sign(w.officers[0].private_key))
    second = statements.marker(w.store)
    assert second != first
    publish(w.store, "revocation", rev.sign(w.officers[1].private_key))  # merges into the row
    third = statements.marker(w.store)
    assert third != second and third[1:] == second[1:]  # same rows, new generation


def test_release_records_the_client_host_for_the_detectors(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    _granted(w, "alice")
    monkeypatch.setenv("STRONGROOM_CLIENT_HOST", "ws-17.lab")
    m = w.vault.manifest("minilm")
    key = w.vault_as("alice").release_file_key(m, m.files[0], "load")
    key[:] = bytes(len(key))
    assert w.keys.gate is not None
    audit = w.keys.gate.audit
    ev = audit.events(audit.size() - 1, audit.size())[0]
    assert ev.action == "key.release" and ev.decision == "allow"
    assert ev.details["host"] == "ws-17.lab"
    assert ActivityEvent.from_audit(ev).host == "ws-17.lab"
    # Refusals carry it too, and the agent's encoding keeps it.
    with pytest.raises(AccessDenied):
        _release(w, "carol", host="10.1.2.3")
    denied = audit.events(audit.size() - 1, audit.size())[0]
    assert denied.decision == "deny" and ActivityEvent.from_audit(denied).host == "10.1.2.3"
    r = _request(w, "alice", host="ws-9")
    assert request_from_json(request_to_json(r)).host == "ws-9"
    assert request_from_json(request_to_json(_request(w, "alice"))).host is None


def _batch(w: World, requests: list[ReleaseRequest]) -> list[bytearray | StrongroomError]:
    gate = w.keys.gate
    assert gate is not None
    return gate.release_many(requests)


def test_a_batch_spends_a_grant_budget_in_order(world: World) -> None:
    # Four requests against a budget of two shards in one batch: the ledger decides them
    # in order in one transaction, so the first two are released and the last two refused.
    w = world
    size = w.vault.manifest("minilm").files[0].size
    req, _ = _granted(w, "alice", budget=2 * size)
    out = _batch(w, [_request(w, "alice") for _ in range(4)])
    assert [isinstance(o, bytearray) for o in out] == [True, True, False, False]
    assert all(isinstance(o, AccessDenied) and "byte budget is spent" in o.message
               for o in out[2:])
    assert w.rule.used(statements.payload_digest(req)) == 2 * size
    assert w.keys.gate is not None
    decisions = [e.decision for e in w.keys.gate.audit.events() if e.action == "key.release"]
    assert decisions == ["allow", "allow", "deny", "deny"]


def test_a_batch_sees_revocations_made_before_it(world: World) -> None:
    w = world
    _granted(w, "alice")
    _, bob_grant = _granted(w, "bob")
    _granted(w, "carol")
    assert all(isinstance(o, bytearray) for o in _batch(w, [_request(w, n) for n in
                                                            ("alice", "bob", "carol")]))
    revoke_grant(w.store, w.people["bob"].private_key, "bob", bob_grant, "done",
                 now=time.time())
    alice, bob, carol = _batch(w, [_request(w, n) for n in ("alice", "bob", "carol")])
    assert isinstance(alice, bytearray) and isinstance(carol, bytearray)
    assert isinstance(bob, AccessDenied) and "revoked" in bob.message
    publish(w.store, "revocation",
            KeyRevocation(w.people["alice"].public.key_id, "lost laptop", int(time.time()))
            .sign(*[o.private_key for o in w.officers]))
    alice, carol = _batch(w, [_request(w, n) for n in ("alice", "carol")])
    assert isinstance(alice, AccessDenied) and "enrolled" in alice.message
    assert isinstance(carol, AccessDenied)  # alice approved carol's Grant: it counts no more
    assert w.keys.gate is not None
    decisions = [e.decision for e in w.keys.gate.audit.events() if e.action == "key.release"]
    # A request refused by its checks is audited at once, before the batch's allow entries.
    assert decisions == ["allow"] * 3 + ["deny", "allow", "allow"] + ["deny"] * 2


def test_a_shard_is_described_once_while_the_locator_hands_out_the_same_one() -> None:
    from strongroom.access.evidence import GrantEvidence
    from strongroom.release.ports import LocatedShard
    from strongroom.release.request import Shard

    rule = GrantEvidence.__new__(GrantEvidence)
    rule._resources = {}
    shard = Shard("minilm@1", "model.safetensors", "b" * 64, 10)
    first = LocatedShard(shard, "weights", ("atlas",), {})
    assert rule._described(first, "x") is rule._described(first, "x")
    # A new manifest (another object, even if equal) is described afresh.
    again = LocatedShard(shard, "weights", ("atlas", "bio"), {})
    assert rule._described(again, "x").compartments == ("atlas", "bio")
    assert rule._described(first, "x").compartments == ("atlas",)

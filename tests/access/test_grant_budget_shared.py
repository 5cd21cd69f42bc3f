"""A Grant's byte budget is charged in the shared egress ledger: two gates (two GrantEvidence
rules with their own memory, one database) never release more than the budget together, and a
release refused after the evidence check (egress cap, failed audit commit) consumes none of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_kit import World, access_world
from sqlalchemy import text

from strongroom.access import statements
from strongroom.access.breakglass import submit_break_glass, take
from strongroom.access.directory import Resource
from strongroom.access.evidence import GrantEvidence
from strongroom.access.grants import issue_grant
from strongroom.access.policy import PolicyEngine
from strongroom.audit.log import AuditLog
from strongroom.errors import AccessDenied, AuditUnavailable, BudgetExceeded
from strongroom.monitor.egress import DAY, Budget
from strongroom.monitor.egress import EgressMeter as DurableMeter
from strongroom.release import ReleaseGate, ReleaseRequest, sign_release_evidence
from strongroom.runtime.wiring import default_meter, shard_locator
from strongroom.store.db import Store

from keyring_fixtures import audit_factory
from vault_fixtures import make_model


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with access_world(db_url, tmp_path) as w:
        make_model(tmp_path / "m.safetensors")
        w.vault.import_weights(tmp_path / "m.safetensors", "minilm", compartments=["atlas"])
        for name in ("alice", "bob", "carol"):
            w.enroll(name)
        yield w


class _Second:
    """Another gate on the same database, as another host would run it: its own store, audit
    log, egress meter and GrantEvidence (nothing in memory shared with the first)."""

    def __init__(self, w: World, db_url: str) -> None:
        ring = w.keys.svc.keyring
        self.store = Store.open(db_url)
        self.audit: AuditLog = audit_factory(self.store, ring.signing_key("checkpoint"))
        self.rule = GrantEvidence(ring.officers, lambda: ring.officer_threshold, self.store,
                                  shards=shard_locator(ring))
        self.rule.seed_from_audit(self.audit, time.time())
        self.gate = ReleaseGate(ring, self.audit, evidence=self.rule,
                                egress=default_meter(self.store, self.audit),
                                sizes=self.rule.shards)

    def close(self) -> None:
        self.audit.close()
        self.store.close()


@pytest.fixture
def second(world: World, db_url: str) -> Iterator[_Second]:
    s = _Second(world, db_url)
    try:
        yield s
    finally:
        s.close()


def _gate(w: World) -> ReleaseGate:
    assert w.keys.gate is not None
    return w.keys.gate


def _size(w: World) -> int:
    return w.vault.manifest("minilm").files[0].size


def _granted(w: World, who: str, budget: int) -> str:
    req = w.request(who, "minilm", budget=budget)
    w.approve("bob" if who != "bob" else "alice", req)
    w.approve("carol" if who != "carol" else "alice", req)
    m = w.vault.manifest("minilm")
    issue_grant(w.store, w.people[who].private_key, statements.payload_digest(req),
                w.rule.reader.view(), PolicyEngine(),
                Resource(m.ref, m.kind, 3, tuple(m.compartments)), now=time.time())
    return statements.payload_digest(req)


def _request(w: World, who: str) -> ReleaseRequest:
    m = w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                               blob_id=entry.blob, purpose="load")
    return ReleaseRequest(principal=who, principal_key=ident.public.public_bytes,
                          artifact=m.ref, shard=entry.path, blob_id=entry.blob,
                          nbytes=entry.size, purpose="load", evidence=ev)


def _ledger(store: Store, budget_id: str) -> int:
    with store.session(readonly=True) as s:
        return int(s.execute(text("SELECT coalesce(sum(nbytes), 0) FROM egress_charges "
                                  "WHERE budget_id = :b"), {"b": budget_id}).scalar() or 0)


def test_two_gates_together_release_no_more_than_the_budget(world: World,
                                                            second: _Second) -> None:
    w, size = world, _size(world)
    first = _gate(w)
    assert first._joined(first.egress) and second.gate._joined(second.gate.egress)
    digest = _granted(w, "alice", 3 * size)
    first.release(_request(w, "alice"))
    second.gate.release(_request(w, "alice"))
    first.release(_request(w, "alice"))
    with pytest.raises(AccessDenied, match=rf"byte budget is spent \({3 * size} of "
                                           rf"{3 * size} bytes used\)"):
        second.gate.release(_request(w, "alice"))  # its memory says 1 of 3: the ledger decides
    assert second.rule.used(digest) == 3 * size  # the refusal warmed its hint
    with pytest.raises(AccessDenied, match="byte budget is spent"):
        second.gate.release(_request(w, "alice"))  # now refused before the ledger
    with pytest.raises(AccessDenied, match="byte budget is spent"):
        first.release(_request(w, "alice"))
    assert _ledger(w.store, digest) == 3 * size
    allowed = [e for e in w.vault.audit.events() if e.action == "key.release"
               and e.decision == "allow"]
    assert len(allowed) == 3 and {e.details["grant_bytes"] for e in allowed} == {3 * size}
    denied = [e for e in w.vault.audit.events() if e.action == "key.release"
              and e.decision == "deny"]
    assert denied and all("budget" in e.reason for e in denied)
    # A gate started now rebuilds the same total from the audit log.
    fresh = GrantEvidence(w.rule.officers, w.rule.reader.threshold, w.store,
                          shards=w.rule.shards)
    fresh.seed_from_audit(w.vault.audit, time.time())
    assert fresh.used(digest) == 3 * size


def test_concurrent_releases_on_two_gates_stay_within_the_budget(world: World,
                                                                 second: _Second) -> None:
    w, size = world, _size(world)
    digest = _granted(w, "alice", 5 * size)
    gates = [_gate(w), second.gate]
    requests = [_request(w, "alice") for _ in range(16)]
    ok: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(requests))

    def go(i: int, r: ReleaseRequest) -> None:
        barrier.wait()
        try:
            gates[i % 2].release(r)
        except AccessDenied as exc:
            with lock:
                refused.append(exc.message)
            return
        with lock:
            ok.append(i)

    threads = [threading.Thread(target=go, args=(i, r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 5 and len(refused) == 11
    assert all("byte budget is spent" in m for m in refused)
    assert _ledger(w.store, digest) == 5 * size


def test_a_release_refused_by_the_egress_cap_consumes_no_budget(world: World) -> None:
    w, size = world, _size(world)
    gate = _gate(w)
    meter = gate.egress
    assert isinstance(meter, DurableMeter)
    digest = _granted(w, "alice", 2 * size)
    meter.set_budget(Budget("principal", "alice", DAY, size))
    gate.release(_request(w, "alice"))
    with pytest.raises(BudgetExceeded):
        gate.release(_request(w, "alice"))
    assert w.rule.used(digest) == size and _ledger(w.store, digest) == size
    meter.set_budget(Budget("principal", "alice", DAY, 100 * size))
    gate.release(_request(w, "alice"))  # the refused release left the budget whole
    with pytest.raises(AccessDenied, match="byte budget is spent"):
        gate.release(_request(w, "alice"))
    assert _ledger(w.store, digest) == 2 * size


def test_a_failed_audit_commit_consumes_no_budget(world: World) -> None:
    w, size = world, _size(world)
    gate = _gate(w)
    digest = _granted(w, "alice", size)
    audit = gate.audit
    real = audit._writer._insert_entry
    audit._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
    try:
        with pytest.raises(AuditUnavailable):
            gate.release(_request(w, "alice"))
    finally:
        audit._writer._insert_entry = real
    assert w.rule.used(digest) == 0 and _ledger(w.store, digest) == 0
    key = gate.release(_request(w, "alice"))
    assert len(key) == 16  # an age file key
    key[:] = bytes(len(key))
    with pytest.raises(AccessDenied, match="byte budget is spent"):
        gate.release(_request(w, "alice"))


def test_break_glass_budget_is_shared_and_spared_by_refusals(world: World,
                                                             second: _Second) -> None:
    w, size = world, _size(world)
    w.label("minilm", break_glass=("alice",))
    bg = take(w.people["alice"].private_key, "alice", "minilm", "load", "incident 4412",
              now=time.time(), window_s=300, byte_budget=2 * size)
    bg_id = statements.payload_digest(bg)
    submit_break_glass(w.store, bg)
    first = _gate(w)
    meter = first.egress
    assert isinstance(meter, DurableMeter)
    meter.set_budget(Budget("principal", "alice", DAY, 0))
    with pytest.raises(BudgetExceeded):  # refused by the egress cap: costs no budget
        first.release(_request(w, "alice"))
    meter.set_budget(Budget("principal", "alice", DAY, 100 * size))
    first.release(_request(w, "alice"))
    second.gate.release(_request(w, "alice"))
    with pytest.raises(AccessDenied, match=rf"byte budget is spent \({2 * size} of"):
        first.release(_request(w, "alice"))
    allowed = [e for e in w.vault.audit.events() if e.action == "key.release"
               and e.decision == "allow"]
    assert [e.details["break_glass_bytes"] for e in allowed] == [2 * size] * 2
    assert {e.details["break_glass"] for e in allowed} == {bg_id}
    assert _ledger(w.store, bg_id) == 2 * size


class _PlainMeter:
    """An egress meter with no shared ledger (cannot charge inside the audit transaction)."""

    def charge(self, principal: str, nbytes: int, now: float, *, artifact: str | None = None,
               charge_id: str | None = None) -> None:
        return None

    def refund(self, principal: str, nbytes: int, now: float, *,
               charge_id: str | None = None) -> None:
        return None


def test_without_a_joined_ledger_the_rule_still_reserves_in_memory(world: World) -> None:
    w, size = world, _size(world)
    gate = ReleaseGate(w.keys.svc.keyring, w.vault.audit, evidence=w.rule, egress=_PlainMeter(),
                       sizes=w.rule.shards)
    assert not gate._joined(gate.egress)
    digest = _granted(w, "alice", 2 * size)
    gate.release(_request(w, "alice"))
    gate.release(_request(w, "alice"))
    with pytest.raises(AccessDenied, match="byte budget is spent"):
        gate.release(_request(w, "alice"))
    # Only the rule's own count is judged: the state guard of this world may write the two
    # releases' charges back from the audit log at any moment (absence is evidence), so the
    # ledger's content here is a race, not a property of the rule.
    assert w.rule.used(digest) == 2 * size


def test_a_release_whose_evidence_names_no_budget_is_refused(world: World) -> None:
    w = world
    _granted(w, "alice", 1 << 30)
    rule = w.rule
    real = rule.verify_unreserved

    def without_budget(request: ReleaseRequest, now: float) -> dict[str, object]:
        return {k: v for k, v in real(request, now).items() if k != "grant_bytes"}

    rule.verify_unreserved = without_budget  # type: ignore[method-assign]
    try:
        with pytest.raises(AccessDenied, match="names no byte budget"):
            _gate(w).release(_request(w, "alice"))
    finally:
        del rule.verify_unreserved
    _gate(w).release(_request(w, "alice"))

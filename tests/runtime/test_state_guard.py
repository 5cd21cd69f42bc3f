"""Absence is evidence: deleted rows reopen nothing, and the gate never believes a byte count.

Each test replays a row of issue 15's table against the deployment's gate
(``LocalKeyService`` with GrantEvidence, the durable egress ledger and the
state guard), as a database administrator would: plain SQL on the tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_kit import World, model_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text

from strongroom.access import statements
from strongroom.access.approvals import approve, deny, submit_approval
from strongroom.access.directory import KeyRevocation, Resource, publish
from strongroom.access.grants import build_grant, issue_grant, revoke_grant
from strongroom.access.policy import PolicyEngine
from strongroom.access.restrictions import journal_details
from strongroom.crypto.age import parse_identities
from strongroom.errors import AccessDenied, BudgetExceeded
from strongroom.keys import ceremony
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.egress import Budget, EgressMeter
from strongroom.release import ReleaseRequest, sign_release_evidence
from strongroom.runtime.services import LocalKeyService
from strongroom.runtime.state_guard import TAMPER_RULE
from strongroom.store.tables.access import AccessStatement
from strongroom.store.tables.monitor import EgressCharge

from keyring_fixtures import audit_factory


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with model_world(db_url, tmp_path) as w:
        yield w


def _svc(w: World) -> LocalKeyService:
    svc: LocalKeyService = w.keys.svc
    return svc


def _request(w: World, who: str = "alice", *, nbytes: int | None = None) -> ReleaseRequest:
    m = w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                               blob_id=entry.blob, purpose="load")
    return ReleaseRequest(principal=who, principal_key=ident.public.public_bytes,
                          artifact=m.ref, shard=entry.path, blob_id=entry.blob,
                          nbytes=entry.size if nbytes is None else nbytes, purpose="load",
                          evidence=ev)


def _grant(w: World, who: str = "alice", budget: int = 1 << 30) -> tuple[str, str]:
    """(request envelope, grant envelope), stored as the CLI stores them."""
    req = w.request(who, "minilm", budget=budget)
    w.approve("bob", req)
    w.approve("carol", req)
    m = w.vault.manifest("minilm")
    res = Resource(m.ref, m.kind, 3, tuple(m.compartments))
    env, _ = issue_grant(w.store, w.people[who].private_key, statements.payload_digest(req),
                         w.rule.reader.view(), PolicyEngine(), res, now=time.time())
    return req, env


def _tamper_alerts(w: World) -> list[str]:
    return [a.message for a in AlertManager(w.store).recent() if a.rule == TAMPER_RULE]


def _allows(svc: LocalKeyService) -> list[int | None]:
    assert svc.audit is not None
    return [e.nbytes for e in svc.audit.tail(200)
            if e.action == "key.release" and e.decision == "allow"]


# -- derive, don't trust: the bytes charged come from the signed manifest -------------------------

def test_a_release_claiming_zero_bytes_is_charged_the_whole_shard(world: World) -> None:
    w = world
    size = w.vault.manifest("minilm").files[0].size
    _grant(w, budget=size)  # room for exactly one shard
    svc = _svc(w)
    svc.release(_request(w, nbytes=0))
    assert _allows(svc)[-1] == size
    assert svc.audit is not None
    assert svc.audit.tail(1)[0].details["claimed_nbytes"] == 0
    with w.store.session() as s:
        assert s.scalars(select(EgressCharge.nbytes)).all() == [size]
    with pytest.raises(AccessDenied, match=rf"{size} of {size} bytes"):
        svc.release(_request(w, nbytes=0))  # the budget is spent, whatever the client says


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claimed=st.one_of(st.integers(min_value=-(1 << 40), max_value=1 << 40),
                         st.sampled_from([0, 1, -1])))
def test_no_release_is_charged_less_than_its_shard(world: World, claimed: int) -> None:
    w = world
    if not statements.envelopes(w.store, "grant"):
        _grant(w)
    size = w.vault.manifest("minilm").files[0].size
    svc = _svc(w)
    svc.release(_request(w, nbytes=claimed))
    assert _allows(svc)[-1] == size


# -- restrictive rows deleted by a database administrator --------------------------------------

def _delete(w: World, kind: str) -> int:
    with w.store.session() as s:
        return s.execute(delete(AccessStatement).where(AccessStatement.kind == kind)).rowcount


def test_a_deleted_grant_revocation_still_holds_and_alerts(world: World) -> None:
    w = world
    _, grant = _grant(w)
    svc = _svc(w)
    svc.release(_request(w))
    revoke_grant(w.store, w.people["carol"].private_key, "carol",
                 statements.payload_digest(grant), "left the project", now=time.time())
    with pytest.raises(AccessDenied, match="revoked"):
        svc.release(_request(w))  # the marker changed: the revocation is journaled in the log
    assert _delete(w, "grant-revocation") == 1
    with pytest.raises(AccessDenied, match="revoked"):
        svc.release(_request(w))
    assert statements.envelopes(w.store, "grant-revocation"), "the row is restored"
    assert any("grant-revocation" in m for m in _tamper_alerts(w))


def test_a_revocation_deleted_while_sealed_is_restored_at_unseal(world: World,
                                                                 tmp_path: Path) -> None:
    w = world
    _, grant = _grant(w)
    env = revoke_grant(w.store, w.people["bob"].private_key, "bob",
                       statements.payload_digest(grant), "done", now=time.time())
    w.vault.record("access.revoke", "g", "allow",
                   **journal_details("grant-revocation", env,
                                     subject=statements.payload_digest(grant)))
    svc = _svc(w)
    svc.seal()
    assert _delete(w, "grant-revocation") == 1
    # A restart: the same custodians unseal a new process's keyring.
    fresh = LocalKeyService(w.store, svc.settings, audit_factory=audit_factory)
    shares = sorted((w.tmp / "shares").glob("share-*.age"))
    for i in (1, 2):
        ident = parse_identities((w.tmp / "custodians" / f"custodian{i}.key").read_text())
        content = ceremony.read_share_file(shares[i - 1], ident)
        fresh.submit_share(ceremony.build_submission(fresh.status(), content))
    try:
        assert statements.envelopes(w.store, "grant-revocation"), "restored at unseal"
        with pytest.raises(AccessDenied, match="revoked"):
            fresh.release(_request(w))
        assert _tamper_alerts(w)
    finally:
        fresh.seal()


def test_a_deleted_person_revocation_keeps_them_out(world: World) -> None:
    w = world
    _grant(w)
    svc = _svc(w)
    svc.release(_request(w))
    kid = w.people["alice"].public.key_id
    publish(w.store, "revocation",
            KeyRevocation(kid, "left the lab", int(time.time())).sign(
                *[o.private_key for o in w.officers]))
    with pytest.raises(AccessDenied, match=r"not enrolled|revoked"):
        svc.release(_request(w))
    _delete(w, "revocation")
    with pytest.raises(AccessDenied, match=r"not enrolled|revoked"):
        svc.release(_request(w))
    assert any("revocation" in m for m in _tamper_alerts(w))


def test_a_deleted_denial_still_vetoes_the_grant(world: World) -> None:
    w = world
    req = w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    submit_approval(w.store, deny(w.people["carol"].private_key, "carol", req, now=time.time(),
                                  reason="not needed"), kind="denial",
                    directory=w.rule.reader.view())
    svc = _svc(w)
    assert svc._guard is not None
    svc._guard.reconcile()  # the background thread's run: the denial is now in the log
    _delete(w, "denial")
    # A Grant assembled anyway (approvals signed outside the tool) is refused at the gate.
    approvals = [approve(w.people[n].private_key, n, req, now=time.time(), ttl_s=3600)
                 for n in ("bob", "carol")]
    grant = build_grant(w.people["alice"].private_key, req, approvals, now=time.time())
    statements.put(w.store, "grant", grant, subject=w.people["alice"].public.key_id,
                   resource="minilm")
    with pytest.raises(AccessDenied, match="denied by carol"):
        svc.release(_request(w))  # the statements changed: the denial is back before the check
    assert statements.envelopes(w.store, "denial", subject=digest)
    assert any("denial" in m for m in _tamper_alerts(w))


# -- the egress ledger reset while the agent runs -----------------------------------------------

def test_a_ledger_reset_while_running_changes_nothing(world: World) -> None:
    w = world
    _grant(w)
    size = w.vault.manifest("minilm").files[0].size
    svc = _svc(w)
    assert svc.gate is not None
    meter = svc.gate.egress
    assert isinstance(meter, EgressMeter)
    meter.set_budget(Budget("principal", "*", 86400, 2 * size))
    svc.release(_request(w))
    svc.release(_request(w))
    with pytest.raises(BudgetExceeded):
        svc.release(_request(w))
    with w.store.session() as s:
        s.execute(delete(EgressCharge).where(EgressCharge.principal == "alice"))
        s.execute(text("UPDATE egress_ledger SET generation = generation + 1"))
    # The meter's totals still hold the deleted rows, and a generation moved with no row
    # added is suspect: the next charge's transaction puts them back from the log.
    with pytest.raises(BudgetExceeded):
        svc.release(_request(w))
    with pytest.raises(BudgetExceeded):
        svc.release(_request(w))
    assert len(_allows(svc)) == 2
    with w.store.session() as s:
        assert len(s.scalars(select(EgressCharge.charge_id)
                            .where(EgressCharge.principal == "alice")).all()) == 2
    assert any("egress charge" in m for m in _tamper_alerts(w))

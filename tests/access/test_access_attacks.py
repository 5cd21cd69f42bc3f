"""The gate with GrantEvidence: a load needs a Grant, and each listed attack fails."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from access_kit import World, model_world
from sqlalchemy import update

from strongroom.access import statements
from strongroom.access.approvals import AccessRequest, approve
from strongroom.access.breakglass import submit_break_glass, take
from strongroom.access.directory import Enrollment, KeyRevocation, Vetting, level, publish
from strongroom.access.directory import Resource as Res
from strongroom.access.evidence import make_evidence
from strongroom.access.grants import build_grant, issue_grant, revoke_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied, ApprovalRequired
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseRequest, sign_release_evidence
from strongroom.store.tables.access import AccessStatement
from strongroom.vault.manifest import Manifest

from vault_fixtures import make_model


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with model_world(db_url, tmp_path) as w:
        w.enroll("dave", clearance="top-secret", compartments=("other",))
        yield w


def _issue(w: World, request_env: str, issuer: str | None = None) -> str:
    digest = statements.payload_digest(request_env)
    claimed = statements.unverified_payload(request_env)
    issuer = issuer or str(claimed["requester"])
    env, _ = issue_grant(w.store, w.people[issuer].private_key, digest,
                         w.rule.reader.view(), PolicyEngine(), _res(w, claimed["resource"]),
                         now=time.time())
    return env


def _res(w: World, name: str = "minilm") -> Res:
    m = w.vault.manifest(name.split("@")[0])
    level = m.metadata.get("strongroom.classification", "secret") if m.kind == "document" \
        else "secret"
    return Res(m.ref, m.kind, ["public", "internal", "confidential", "secret"].index(level),
               tuple(m.compartments))


def _release(w: World, who: str, evidence: str | None = None, *, purpose: str = "load",
             manifest: Manifest | None = None, nbytes: int | None = None) -> bytearray:
    m = manifest or w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = evidence or sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                                           blob_id=entry.blob, purpose=purpose)
    return w.keys.release(ReleaseRequest(
        principal=who, principal_key=ident.public.public_bytes, artifact=m.ref,
        shard=entry.path, blob_id=entry.blob,
        nbytes=entry.size if nbytes is None else nbytes, purpose=purpose, evidence=ev))


def _granted(w: World, who: str = "alice", budget: int = 1 << 30) -> str:
    req = w.request(who, "minilm", budget=budget)
    w.approve("bob", req)
    w.approve("carol", req)
    return _issue(w, req)


def test_load_denied_then_request_two_approvals_grant_and_load(world: World) -> None:
    w = world
    alice = w.vault_as("alice")
    with pytest.raises(ApprovalRequired):
        alice.open_weights("minilm")
    req = w.request("alice", "minilm")
    w.approve("bob", req)
    with pytest.raises(ApprovalRequired, match="rule 2 of approvers"):
        _issue(w, req)
    w.approve("carol", req)
    _issue(w, req)
    weights = alice.open_weights("minilm")
    assert isinstance(weights["embed.weight"], np.ndarray)
    weights.close()
    allows = [e for e in w.vault.audit.tail(50) if e.action == "key.release"
              and e.decision == "allow"]
    assert allows and allows[-1].details["approvers"] == ["bob", "carol"]
    assert allows[-1].actor == "alice"


def _store_unchecked(w: World, name: str, request_env: str) -> None:
    """An approval row written past submit_approval's checks (a DBA, an older release)."""
    env = approve(w.people[name].private_key, name, request_env, now=time.time())
    statements.put(w.store, "approval", env, subject=statements.payload_digest(request_env),
                   expires=int(time.time()) + 3600)


def test_self_approval_does_not_count(world: World) -> None:
    req = world.request("alice", "minilm")
    _store_unchecked(world, "alice", req)
    world.approve("bob", req)
    with pytest.raises(ApprovalRequired, match="requester never counts"):
        _issue(world, req)


def test_one_person_twice_under_two_roles(world: World) -> None:
    w = world
    w.enroll("erin", roles=("approvers", "security-officers"))
    w.label("minilm", rules={"load": "1 of approvers AND 1 of security-officers"})
    req = w.request("alice", "minilm")
    w.approve("erin", req)
    _store_unchecked(w, "erin", req)  # a second approval by the same person
    with pytest.raises(ApprovalRequired):
        _issue(w, req)
    w.enroll("frank", roles=("security-officers",))
    w.approve("frank", req)
    _issue(w, req)
    assert len(_release(w, "alice")) == 16


def test_non_member_unvetted_and_revoked_approvers(world: World) -> None:
    w = world
    w.enroll("gus", roles=("model-owners",))
    w.enroll("hal", status="suspended")
    w.enroll("ivy")
    publish(w.store, "revocation", KeyRevocation(w.people["ivy"].public.key_id, "lost laptop",
                                                 int(time.time())).sign(
        *[o.private_key for o in w.officers]))
    req = w.request("alice", "minilm")
    for who in ("bob", "gus", "hal", "ivy"):
        w.approve(who, req)
    with pytest.raises(ApprovalRequired) as err:
        _issue(w, req)
    assert "not vetted and cleared" in str(err.value) or "not an enrolled" in str(err.value)
    outsider = Identity.generate("mallory")  # never enrolled: signs a perfect-looking approval
    statements.put(w.store, "approval", approve(outsider.private_key, "mallory", req,
                                                now=time.time()),
                   subject=statements.payload_digest(req))
    with pytest.raises(ApprovalRequired):
        _issue(w, req)


def test_approval_replayed_from_another_request(world: World) -> None:
    w = world
    other = w.request("alice", "minilm")
    replayed = w.approve("carol", other)
    req = w.request("alice", "minilm")
    w.approve("bob", req)
    grant = build_grant(w.people["alice"].private_key, req,
                        [statements.envelopes(w.store, "approval",
                                              subject=statements.payload_digest(req))[0],
                         replayed], now=time.time())
    statements.put(w.store, "grant", grant, subject=w.people["alice"].public.key_id,
                   resource="minilm")
    with pytest.raises(ApprovalRequired, match="another request"):
        _release(w, "alice")


def test_approval_after_its_expiry(world: World) -> None:
    w = world
    req = w.request("alice", "minilm")
    w.approve("bob", req, now=time.time() - 200, ttl=100)
    w.approve("carol", req)
    with pytest.raises(ApprovalRequired, match="not valid at the grant's issue time"):
        _issue(w, req)


def test_grant_past_its_time_or_byte_budget(world: World) -> None:
    w = world
    size = w.vault.manifest("minilm").files[0].size
    _granted(w, budget=size + size // 2)  # one shard fits, two do not
    _release(w, "alice", nbytes=1)  # charged the shard's signed size, not the claim
    with pytest.raises(AccessDenied, match="byte budget"):
        _release(w, "alice", nbytes=1)
    w.keys.gate.clock = lambda: time.time() + 7200  # type: ignore[union-attr]
    m = w.vault.manifest("minilm")
    e = m.files[0]
    ev = sign_release_evidence(w.people["alice"].private_key, artifact=m.ref, shard=e.path,
                               blob_id=e.blob, purpose="load", now=time.time() + 7200)
    with pytest.raises(AccessDenied, match="expired"):
        _release(w, "alice", ev, nbytes=1)


def test_grant_row_written_straight_into_the_database(world: World) -> None:
    w = world
    req = w.request("alice", "minilm")
    forged = build_grant(w.people["alice"].private_key, req, [], now=time.time())
    statements.put(w.store, "grant", forged, subject=w.people["alice"].public.key_id,
                   resource="minilm")
    with pytest.raises(ApprovalRequired):
        _release(w, "alice")
    # a real grant for carol, with its payload edited and its row moved to alice
    req2 = w.request("carol", "minilm")
    w.approve("bob", req2)
    w.approve("alice", req2)
    env = _issue(w, req2, issuer="bob")
    data = json.loads(env)
    data["payload"] = data["payload"][:-8] + "AAAAAAA="
    with w.store.session() as s:
        s.execute(update(AccessStatement).where(AccessStatement.kind == "grant")
                  .values(envelope=json.dumps(data), subject=w.people["alice"].public.key_id))
    with pytest.raises(AccessDenied):
        _release(w, "alice")


def test_directory_edits_grant_nothing(world: World) -> None:
    w = world
    mallory = w.enroll("mallory", roles=(), clearance="public", compartments=())
    # mallory rewrites her enrollment row: approver, top secret, every compartment
    now = int(time.time())
    boosted = Enrollment(name="mallory", key=mallory.public.public_bytes,
                         roles=("approvers",), clearance=level("top-secret"),
                         compartments=("atlas",), vetting=Vetting("active", now, now + 9999),
                         serial=2, issued=now)
    with w.store.session() as s:
        s.execute(update(AccessStatement).where(AccessStatement.kind == "enrollment",
                                                AccessStatement.subject == mallory.public.key_id)
                  .values(envelope=boosted.sign(mallory.private_key)))
    one_officer = boosted.sign(w.officers[0].private_key)  # one officer is not the quorum
    publish(w.store, "enrollment", one_officer)
    req = w.request("alice", "minilm")
    w.approve("bob", req)
    w.approve("mallory", req)
    with pytest.raises(ApprovalRequired):
        _issue(w, req)
    with pytest.raises(AccessDenied):
        _release(w, "mallory")


def test_vetting_expires_mid_grant(world: World) -> None:
    w = world
    _granted(w)
    _release(w, "alice")
    w.enroll("alice", expires=int(time.time()) + 1, serial=2)
    time.sleep(1.1)
    with pytest.raises(AccessDenied, match="policy denies alice"):
        _release(w, "alice")


def test_revocation_takes_effect_at_next_release(world: World) -> None:
    w = world
    env = _granted(w)
    _release(w, "alice")
    revoke_grant(w.store, w.people["carol"].private_key, "carol",
                 statements.payload_digest(env), "no longer needed", now=time.time())
    with pytest.raises(AccessDenied, match="revoked"):
        _release(w, "alice")


def test_stolen_grant_is_useless_and_blobs_stay_bound(world: World, tmp_path: Path) -> None:
    w = world
    grant = _granted(w)
    m = w.vault.manifest("minilm")
    e = m.files[0]
    thief = w.people["dave"]
    ev = make_evidence(thief.private_key, artifact=m.ref, shard=e.path, blob_id=e.blob,
                       purpose="load", grant=grant)
    with pytest.raises(AccessDenied, match=r"someone else|policy denies"):
        _release(w, "dave", ev)
    # alice's grant for minilm does not unwrap another artifact's blob
    make_model(tmp_path / "x.safetensors", seed=3)
    other = w.vault.import_weights(tmp_path / "x.safetensors", "secret-model")
    alice = w.people["alice"]
    blob = other.files[0].blob
    ev = make_evidence(alice.private_key, artifact=m.ref, shard=e.path, blob_id=blob,
                       purpose="load", grant=grant)
    with pytest.raises(AccessDenied, match="not this shard"):
        w.keys.release(ReleaseRequest(principal="alice", principal_key=alice.public.public_bytes,
                                      artifact=m.ref, shard=e.path, blob_id=blob, nbytes=1,
                                      purpose="load", evidence=ev))
    # export is another action: the load grant does not cover it
    with pytest.raises(AccessDenied):
        _release(w, "alice", purpose="export: copy")


def test_document_readable_only_inside_its_compartment(world: World, tmp_path: Path) -> None:
    from strongroom.vault.documents import add_document, list_documents, read_document

    w = world
    doc = tmp_path / "recipe.md"
    doc.write_text("lr=3e-4, warmup 2000 steps\n")
    add_document(w.vault, doc, name="recipe", classification="confidential",
                 compartments=["atlas"])
    assert [d.name for d in list_documents(w.vault)] == ["recipe"]
    for who in ("alice", "dave"):
        req = w.request(who, "recipe", "read")
        w.approve("bob", req)
        if who == "alice":
            _issue(w, req)
        else:
            with pytest.raises(AccessDenied, match="policy denies dave"):
                _issue(w, req)
            # even a grant assembled by hand does not get past the gate
            grant = build_grant(w.people["dave"].private_key, req,
                                statements.envelopes(w.store, "approval",
                                                     subject=statements.payload_digest(req)),
                                now=time.time())
            statements.put(w.store, "grant", grant, subject=w.people["dave"].public.key_id,
                           resource="recipe")
    assert read_document(w.vault_as("alice"), "recipe") == doc.read_bytes()
    with pytest.raises(AccessDenied, match="policy denies dave"):
        read_document(w.vault_as("dave"), "recipe")


def test_break_glass_needs_listing_and_window(world: World) -> None:
    w = world
    bg = take(w.people["alice"].private_key, "alice", "minilm", "load", "incident 4411",
              now=time.time(), window_s=300)
    submit_break_glass(w.store, bg)
    with pytest.raises(AccessDenied):
        _release(w, "alice")  # not listed yet
    w.label("minilm", break_glass=("alice",))
    _release(w, "alice")
    ev = [e for e in w.vault.audit.tail(5) if e.action == "key.release"][-1]
    assert ev.decision == "allow" and ev.details["severity"] == "critical"
    long = take(w.people["bob"].private_key, "bob", "minilm", "load", "x", now=time.time(),
                window_s=100_000)
    w.label("minilm", break_glass=("alice", "bob"), serial=2)
    submit_break_glass(w.store, long)
    with pytest.raises(AccessDenied):
        _release(w, "bob")


def test_caps_refuse_the_grant_over_the_limit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from strongroom.access.caps import AccessCaps

    w = world
    w.rule.caps = AccessCaps(load=1)
    _granted(w, "alice")  # stored first: holders are ordered by storage order, not issue second
    _release(w, "alice")
    req = w.request("carol", "minilm")
    w.approve("bob", req)
    w.approve("alice", req)
    _issue(w, req)  # issuance here has no caps check: the gate still holds the line
    with pytest.raises(AccessDenied, match="cap"):
        _release(w, "carol")


def test_request_signature_binds_the_requester(world: World) -> None:
    w = world
    alice = w.people["alice"]
    req = AccessRequest.new("alice", alice.public.key_id, "minilm", "load", "x", 60, 10,
                            time.time())
    with pytest.raises(Exception, match="requester's own key"):
        req.sign(w.people["bob"].private_key)


def test_only_a_verified_denial_blocks_a_grant(world: World) -> None:
    """A denial row is a claim: forged or by a revoked key, it blocks nothing (a DBA can
    neither grant nor block access); a real approver's denial closes the request."""
    from strongroom.access.approvals import deny, submit_approval

    w = world
    req = w.request("alice", "minilm")
    w.approve("bob", req)
    w.approve("carol", req)
    digest = statements.payload_digest(req)
    mallory = Identity.generate("mallory")  # never enrolled
    forged = deny(mallory.private_key, "bob", req, now=time.time(), reason="dba says no")
    submit_approval(w.store, forged, "denial", directory=w.rule.reader.view())
    w.enroll("erin")
    by_erin = deny(w.people["erin"].private_key, "erin", req, now=time.time(), reason="no")
    submit_approval(w.store, by_erin, "denial", directory=w.rule.reader.view())
    publish(w.store, "revocation", KeyRevocation(w.people["erin"].public.key_id, "left",
                                                 int(time.time())).sign(
        *[o.private_key for o in w.officers]))
    assert _issue(w, req)  # neither the forged nor the revoked key's denial counts
    req2 = w.request("alice", "minilm")
    w.approve("bob", req2)
    w.approve("carol", req2)
    submit_approval(w.store, deny(w.people["dave"].private_key, "dave", req2, now=time.time(),
                                  reason="not this quarter"), "denial",
                    directory=w.rule.reader.view())
    with pytest.raises(AccessDenied, match="denied by dave"):
        _issue(w, req2)
    assert statements.payload_digest(req2) != digest


def _approvals(w: World, request_env: str) -> list[str]:
    return statements.envelopes(w.store, "approval", subject=statements.payload_digest(request_env))


def test_a_veto_is_final(world: World) -> None:
    """An approval after a verified denial is refused and not stored, naming who denied and
    why; no Grant is issued for the request, even from approvals made before the denial."""
    from strongroom.access.approvals import deny, submit_approval

    w = world
    w.enroll("erin")
    req = w.request("alice", "minilm")
    w.approve("bob", req)
    submit_approval(w.store, deny(w.people["carol"].private_key, "carol", req, now=time.time(),
                                  reason="not this quarter"), "denial",
                    directory=w.rule.reader.view())
    with pytest.raises(AccessDenied, match=r"denied by carol \('not this quarter'\)") as exc:
        w.approve("erin", req)
    assert exc.value.remedy == "file a new request"
    assert len(_approvals(w, req)) == 1  # erin's approval was not stored
    with pytest.raises(AccessDenied, match=r"denied by carol \('not this quarter'\)"):
        _issue(w, req)
    assert not statements.envelopes(w.store, "grant")
    # a denial row nobody enrolled signed (a DBA's) vetoes nothing
    other = w.request("alice", "minilm")
    forged = deny(Identity.generate("mallory").private_key, "carol", other, now=time.time(),
                  reason="dba says no")
    submit_approval(w.store, forged, "denial", directory=w.rule.reader.view())
    w.approve("erin", other)
    assert len(_approvals(w, other)) == 1


def test_self_approval_and_a_second_approval_are_refused_and_not_stored(world: World) -> None:
    from strongroom.errors import AlreadyExists

    w = world
    req = w.request("alice", "minilm")
    with pytest.raises(AccessDenied, match="alice made this request and cannot approve it"):
        w.approve("alice", req)
    assert _approvals(w, req) == []
    w.approve("bob", req)
    with pytest.raises(AlreadyExists, match="bob approved this request already"):
        w.approve("bob", req)
    assert len(_approvals(w, req)) == 1
    # an approval that has expired may be renewed
    w.approve("carol", req, now=time.time() - 7200, ttl=3600)
    w.approve("carol", req)
    assert len(_approvals(w, req)) == 3

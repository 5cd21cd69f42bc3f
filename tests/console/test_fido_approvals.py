"""Security-key approvals: the gate accepts them like any approval signature, and refuses forgeries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from access_kit import World, access_world
from fido_softkey import SoftKey, add_keys, approval_envelope, grant_envelope, submit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.access import fido, statements
from strongroom.access.approvals import AccessRequest
from strongroom.access.directory import Enrollment, Resource, Vetting
from strongroom.access.grants import grant_statement, issue_grant, store_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied, ApprovalRequired, IntegrityError, InvalidInput
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseRequest, sign_release_evidence

from vault_fixtures import make_model

# -- pure checks (no database) ----------------------------------------------------------------


def _person(name: str, keys: tuple[fido.SecurityKey, ...]) -> tuple[Identity, Enrollment]:
    ident = Identity.generate(name)
    now = int(time.time())
    return ident, Enrollment(name=name, key=ident.public.public_bytes, roles=("approvers",),
                             clearance=3, vetting=Vetting("active", now - 10, now + 3600),
                             security_keys=keys)


def _request_env() -> str:
    alice = Identity.generate("alice")
    req = AccessRequest.new("alice", alice.public.key_id, "minilm", "load", "eval", 3600, 1 << 20,
                            time.time())
    return req.sign(alice.private_key)


def test_enrollments_without_security_keys_sign_exactly_as_before() -> None:
    _, plain = _person("bob", ())
    assert "security_keys" not in plain.to_statement()
    key = SoftKey().security_key()
    _, with_key = _person("bob", (key,))
    st_ = with_key.to_statement()
    assert st_["security_keys"][0]["id"] == key.id
    assert Enrollment.from_statement(st_).security_keys == (key,)


@pytest.mark.parametrize("alg", [-7, -8])
def test_a_security_key_approval_verifies_with_the_enrolled_key(alg: int) -> None:
    key = SoftKey(alg=alg)
    bob_id, bob = _person("bob", (key.security_key(),))
    env = approval_envelope(key, bob_id, _request_env())
    got = fido.verify_envelope(env, "approval", {bob.key_id: bob})
    assert got.statement["approver"] == "bob" and got.sign_count == 1
    assert statements.signer_ids(env) == [bob.key_id]


def _mutations() -> dict[str, dict[str, object]]:
    return {
        "another origin": {"origin": "https://evil.example"},
        "another relying party": {"rp_id": "evil.example"},
        "no user presence": {"flags": 0x04},
        "no user verification": {"flags": 0x01},
        "a registration, not a get": {"kind": "webauthn.create"},
        "a cross-origin frame": {"extra": {"crossOrigin": True}},
    }


@pytest.mark.parametrize("what", list(_mutations()))
def test_assertions_that_break_a_rule_are_refused(what: str) -> None:
    key = SoftKey()
    bob_id, bob = _person("bob", (key.security_key(),))
    env = approval_envelope(key, bob_id, _request_env(), **_mutations()[what])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        fido.verify_envelope(env, "approval", {bob.key_id: bob})


def test_a_key_not_registered_to_the_approver_is_refused() -> None:
    mine, carols = SoftKey(), SoftKey()
    bob_id, bob = _person("bob", (mine.security_key(),))
    env = approval_envelope(mine, bob_id, _request_env(), signer_key=carols)
    with pytest.raises(IntegrityError, match="not registered to the approver"):
        fido.verify_envelope(env, "approval", {bob.key_id: bob})


def test_the_challenge_binds_the_statement() -> None:
    key = SoftKey()
    bob_id, bob = _person("bob", (key.security_key(),))
    good = json.loads(approval_envelope(key, bob_id, _request_env()))
    other = json.loads(approval_envelope(key, bob_id, _request_env()))
    good["payload"] = other["payload"]  # the signature of one approval on another's statement
    with pytest.raises(IntegrityError, match="another challenge"):
        fido.verify_envelope(json.dumps(good), "approval", {bob.key_id: bob})
    # and an approval is never accepted as another kind of statement
    with pytest.raises(IntegrityError, match="payload type"):
        fido.verify_envelope(json.dumps(other), "grant", {bob.key_id: bob})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["authenticator_data", "client_data_json", "signature"]),
       position=st.integers(min_value=0, max_value=400), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(field: str, position: int, bit: int) -> None:
    key = _PROP_KEY
    env = json.loads(_PROP_ENV)
    wa = env["signatures"][0]["webauthn"]
    raw = bytearray(fido.unb64url(wa[field]))
    raw[position % len(raw)] ^= 1 << bit
    wa[field] = fido.b64url(bytes(raw))
    with pytest.raises(IntegrityError):
        fido.verify_envelope(json.dumps(env), "approval", {_PROP_BOB.key_id: _PROP_BOB})
    del key


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=20), c,
                                                                        max_size=5),
                    max_leaves=20))
def test_arbitrary_webauthn_members_only_ever_raise_integrity_errors(junk: object) -> None:
    env = json.loads(_PROP_ENV)
    env["signatures"][0]["webauthn"] = junk
    with pytest.raises(IntegrityError):
        fido.verify_envelope(json.dumps(env), "approval", {_PROP_BOB.key_id: _PROP_BOB})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "public_key", "alg", "rp_id", "origins", "label"]),
                       st.none() | st.integers() | st.text(max_size=30)
                       | st.lists(st.text(max_size=30), max_size=3)))
def test_the_enrolled_key_parser_refuses_garbage(junk: dict[str, object]) -> None:
    with pytest.raises((ValueError, KeyError, InvalidInput)):
        fido.SecurityKey.from_statement(junk)


_PROP_KEY = SoftKey()
_PROP_ID, _PROP_BOB = _person("bob", (_PROP_KEY.security_key(),))
_PROP_ENV = approval_envelope(_PROP_KEY, _PROP_ID, _request_env())


def test_the_property_fixture_itself_verifies() -> None:
    assert fido.verify_envelope(_PROP_ENV, "approval", {_PROP_BOB.key_id: _PROP_BOB})


def test_security_key_records_are_checked() -> None:
    key = SoftKey().security_key()
    with pytest.raises(InvalidInput):
        replace(key, origins=("http://example.org",))  # http only on localhost
    with pytest.raises(InvalidInput):
        replace(key, alg=-36)
    with pytest.raises(InvalidInput):
        replace(key, public_key=SoftKey(alg=-8).cose())  # an EdDSA key declared ES256
    with pytest.raises(IntegrityError):
        Enrollment.from_statement({**_PROP_BOB.to_statement(),
                                   "security_keys": [key.to_statement(), key.to_statement()]})


# -- through the release gate --------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with access_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path) as w:
        make_model(tmp_path / "m.safetensors")
        w.vault.import_weights(tmp_path / "m.safetensors", "minilm", compartments=["atlas"])
        w.enroll("alice", roles=("requesters",))
        for name in ("bob", "carol"):
            w.enroll(name)
        yield w


def _res(w: World) -> Resource:
    m = w.vault.manifest("minilm")
    return Resource(m.ref, m.kind, 3, tuple(m.compartments))


def _release(w: World, who: str) -> bytearray:
    m = w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                               blob_id=entry.blob, purpose="load")
    return w.keys.release(ReleaseRequest(
        principal=who, principal_key=ident.public.public_bytes, artifact=m.ref,
        shard=entry.path, blob_id=entry.blob, nbytes=entry.size, purpose="load", evidence=ev))


def _with_keys(w: World, *names: str) -> dict[str, SoftKey]:
    keys = {}
    directory = w.rule.reader.view()
    for i, name in enumerate(names):
        keys[name] = SoftKey(alg=(-7, -8)[i % 2])
        current = directory.by_name(name)
        assert current is not None
        add_keys(w.store, current, [keys[name].security_key()], w.officers)
    return keys


def test_security_key_approvals_make_a_grant_the_gate_accepts(world: World) -> None:
    w = world
    keys = _with_keys(w, "bob", "carol")
    req = w.request("alice", "minilm")
    for name in ("bob", "carol"):
        submit(w, approval_envelope(keys[name], w.people[name], req))
    # a grant assembled in the console is signed with a counted approver's security key
    digest = statements.payload_digest(req)
    approvals = statements.envelopes(w.store, "approval", subject=digest, newest_first=False)
    env = grant_envelope(keys["carol"], w.people["carol"],
                         grant_statement(req, approvals, now=time.time()))
    g = store_grant(w.store, env, w.rule.reader.view(), PolicyEngine(), _res(w), now=time.time())
    assert sorted(g.approvers) == ["bob", "carol"]
    assert len(_release(w, "alice")) == 16  # an age file key: the gate re-derived everything and unwrapped


def test_security_key_not_registered_to_the_approver_counts_for_nothing_at_the_gate(
        world: World) -> None:
    w = world
    keys = _with_keys(w, "bob", "carol")
    req = w.request("alice", "minilm")
    submit(w, approval_envelope(keys["bob"], w.people["bob"], req))
    # carol's approval made with bob's key, and one made with a key nobody enrolled
    submit(w, approval_envelope(keys["carol"], w.people["carol"], req,
                                signer_key=keys["bob"]))
    submit(w, approval_envelope(keys["carol"], w.people["carol"], req,
                                signer_key=SoftKey()))
    with pytest.raises(ApprovalRequired, match="not registered to the approver"):
        issue_grant(w.store, w.people["alice"].private_key, statements.payload_digest(req),
                    w.rule.reader.view(), PolicyEngine(), _res(w), now=time.time())
    with pytest.raises(AccessDenied):
        _release(w, "alice")


def test_a_key_added_by_editing_the_database_counts_for_nothing(world: World) -> None:
    from sqlalchemy import update

    from strongroom.store.tables.access import AccessStatement

    w = world
    rogue = SoftKey()
    carol = w.rule.reader.view().by_name("carol")
    assert carol is not None
    forged = replace(carol, security_keys=(rogue.security_key(),), serial=carol.serial + 1)
    env = json.loads(carol.sign(w.officers[0].private_key))  # one officer of two: under quorum
    env["payload"] = json.loads(forged.sign(w.officers[0].private_key))["payload"]
    with w.store.session() as s:  # the DBA swaps the stored enrollment's payload
        s.execute(update(AccessStatement).where(AccessStatement.kind == "enrollment",
                                                AccessStatement.subject == carol.key_id)
                  .values(envelope=json.dumps(env)))
    keys = _with_keys(w, "bob")
    req = w.request("alice", "minilm")
    submit(w, approval_envelope(keys["bob"], w.people["bob"], req))
    submit(w, approval_envelope(rogue, w.people["carol"], req))
    with pytest.raises(AccessDenied):
        issue_grant(w.store, w.people["alice"].private_key, statements.payload_digest(req),
                    w.rule.reader.view(), PolicyEngine(), _res(w), now=time.time())


def test_a_label_can_require_security_key_approvals(world: World) -> None:
    from strongroom.access.directory import ResourceLabel, Rule, publish

    w = world
    label = ResourceLabel("minilm", 3, ("atlas",), {"load": Rule.parse("2 of approvers")},
                          serial=1, issued=int(time.time()), security_key_actions=("load",))
    assert ResourceLabel.from_statement(label.to_statement()) == label
    assert "security_key_actions" not in ResourceLabel("minilm", 3).to_statement()
    publish(w.store, "label", label.sign(*[o.private_key for o in w.officers]))
    keys = _with_keys(w, "bob", "carol")
    req = w.request("alice", "minilm")
    w.approve("bob", req)  # identity-key approvals no longer count for load
    w.approve("carol", req)
    digest = statements.payload_digest(req)
    with pytest.raises(ApprovalRequired, match="needs approvals signed with a security key"):
        issue_grant(w.store, w.people["alice"].private_key, digest, w.rule.reader.view(),
                    PolicyEngine(), _res(w), now=time.time())
    for name in ("bob", "carol"):
        submit(w, approval_envelope(keys[name], w.people[name], req))
    issue_grant(w.store, w.people["alice"].private_key, digest, w.rule.reader.view(),
                PolicyEngine(), _res(w), now=time.time())
    assert len(_release(w, "alice")) == 16

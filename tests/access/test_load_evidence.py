"""Load evidence: one signature over a whole load's shards, each released at most once.

The gate still decides, charges and audits every shard; what changes is that the
principal signs once and the gate verifies that signature once per envelope. Each
named shard has its own replay key (``<kid>/<nonce>/<position>``), which the nonce
table, the audit entry and the egress ledger all hold, so a replay is refused by
this gate, by a gate rebuilt from the log, and by the ledger alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from access_kit import GatedKeys, World, count_verifications, model_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.access import statements
from strongroom.access.evidence import GrantEvidence, make_load_evidence
from strongroom.access.grants import issue_grant
from strongroom.access.policy import PolicyEngine
from strongroom.crypto.dsse import sign_statement
from strongroom.errors import AccessDenied, InvalidInput, StrongroomError
from strongroom.keys.identity import Identity
from strongroom.release import (
    LOAD_EVIDENCE_PAYLOAD_TYPE,
    MAX_LOAD_SHARDS,
    ReleaseGate,
    ReleaseRequest,
    VerifiedEvidence,
    check_release_signature,
    sign_load_evidence,
    sign_release_evidence,
)
from strongroom.runtime.wiring import default_meter, shard_locator
from strongroom.vault.manifest import Manifest

from vault_fixtures import make_model


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with model_world(db_url, tmp_path) as w:
        folder = tmp_path / "sharded"
        folder.mkdir()
        for i in range(3):
            make_model(folder / f"model-0000{i + 1}-of-00003.safetensors", seed=i, prefix=f"s{i}.")
        w.vault.import_weights(folder, "sharded", compartments=["atlas"])
        for who in ("alice", "bob"):
            req = w.request(who, "sharded")
            for approver in ({"alice", "bob", "carol"} - {who}):
                w.approve(approver, req)
            issue_grant(w.store, w.people[who].private_key, statements.payload_digest(req),
                        w.rule.reader.view(), PolicyEngine(), _resource(w), now=time.time())
        yield w


def _resource(w: World) -> Any:
    from strongroom.access.directory import Resource

    m = w.vault.manifest("sharded")
    return Resource(m.ref, m.kind, 3, tuple(m.compartments))


def _manifest(w: World) -> Manifest:
    m = w.vault.manifest("sharded")
    assert len(m.files) == 3
    return m


def _pairs(m: Manifest, idx: tuple[int, ...] = (0, 1, 2)) -> list[tuple[str, str]]:
    return [(m.files[i].path, m.files[i].blob) for i in idx]


def _req(w: World, who: str, m: Manifest, i: int, evidence: str, *,
         purpose: str = "load") -> ReleaseRequest:
    e = m.files[i]
    return ReleaseRequest(principal=who, principal_key=w.people[who].public.public_bytes,
                          artifact=m.ref, shard=e.path, blob_id=e.blob, nbytes=e.size,
                          purpose=purpose, evidence=evidence)


def _gate(w: World) -> ReleaseGate:
    assert w.keys.gate is not None
    return w.keys.gate


def _releases(w: World) -> list[Any]:
    return [e for e in _gate(w).audit.events() if e.action == "key.release"]


def _load(w: World, who: str, m: Manifest, idx: tuple[int, ...] = (0, 1, 2), **kw: Any) -> str:
    return make_load_evidence(w.people[who].private_key, artifact=m.ref, shards=_pairs(m, idx),
                              purpose="load", **kw)


def test_one_signature_releases_each_named_shard_once(world: World,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    w, m = world, _manifest(world)
    verified = count_verifications(monkeypatch)
    ev = _load(w, "alice", m)
    out = _gate(w).release_many([_req(w, "alice", m, i, ev) for i in range(3)])
    assert all(isinstance(k, bytearray) and len(k) == 16 for k in out)
    assert verified == [LOAD_EVIDENCE_PAYLOAD_TYPE]  # once for the three shards
    entries = _releases(w)
    assert [e.decision for e in entries] == ["allow"] * 3
    kid = w.people["alice"].public.key_id
    nonces = [e.details["nonce"] for e in entries]
    assert len(set(nonces)) == 3
    assert all(n.startswith(f"{kid}/") and n.endswith(f"/{i}") for i, n in enumerate(nonces))
    assert sorted(e.object for e in entries) == sorted(f"{m.ref}/{f.path}" for f in m.files)
    # the ledger holds one charge per shard, keyed as the log records it
    meter = default_meter(w.store, _gate(w).audit)
    assert meter.missing(nonces) == set()


def test_each_shard_once_replay_refused_here_after_restart_and_by_the_ledger(
        world: World, tmp_path: Path) -> None:
    w, m = world, _manifest(world)
    ev = _load(w, "alice", m)
    first = _gate(w).release(_req(w, "alice", m, 0, ev))
    assert isinstance(first, bytearray)
    # the same shard again, alone and twice in one batch with a shard not yet used
    with pytest.raises(AccessDenied, match="replay"):
        _gate(w).release(_req(w, "alice", m, 0, ev))
    out = _gate(w).release_many([_req(w, "alice", m, 1, ev), _req(w, "alice", m, 1, ev)])
    assert isinstance(out[0], bytearray)
    assert isinstance(out[1], AccessDenied) and "replay" in out[1].message
    # a gate rebuilt from the log (a restart) remembers the spent shards
    ring = w.keys.svc.keyring
    rule = GrantEvidence(ring.officers, lambda: ring.officer_threshold, w.store,
                         shards=shard_locator(ring))
    again = GatedKeys(w.keys.svc, rule)
    again.attach(_gate(w).audit)
    assert again.gate is not None
    with pytest.raises(AccessDenied, match="replay"):
        again.gate.release(_req(w, "alice", m, 1, ev))
    # and a gate that remembers nothing: the ledger holds the charge id
    forgetful = GrantEvidence(ring.officers, lambda: ring.officer_threshold, w.store,
                              shards=shard_locator(ring))
    bare = ReleaseGate(ring, _gate(w).audit, evidence=forgetful,
                       egress=default_meter(w.store, _gate(w).audit), sizes=forgetful.shards)
    with pytest.raises(AccessDenied, match="replay"):
        bare.release(_req(w, "alice", m, 0, ev))
    # the third shard was never used: still released once
    assert isinstance(bare.release(_req(w, "alice", m, 2, ev)), bytearray)
    allowed = [e for e in _releases(w) if e.decision == "allow"]
    assert len(allowed) == 3


def test_shard_not_named_wrong_blob_artifact_purpose_or_signer_refused(world: World) -> None:
    w, m = world, _manifest(world)
    ev = _load(w, "alice", m, (0, 1))
    g = _gate(w)
    with pytest.raises(AccessDenied, match="does not name this shard"):
        g.release(_req(w, "alice", m, 2, ev))
    swapped = make_load_evidence(w.people["alice"].private_key, artifact=m.ref,
                                 shards=[(m.files[0].path, m.files[2].blob)], purpose="load")
    with pytest.raises(AccessDenied, match="another blob_id"):
        g.release(_req(w, "alice", m, 0, swapped))
    with pytest.raises(AccessDenied, match="another purpose"):
        g.release(_req(w, "alice", m, 0, ev, purpose="export"))
    other = make_load_evidence(w.people["alice"].private_key, artifact="minilm@1",
                               shards=_pairs(m, (0,)), purpose="load")
    with pytest.raises(AccessDenied, match="another artifact"):
        g.release(_req(w, "alice", m, 0, other))
    # bob's load evidence presented as alice's: the signature is not alice's
    bobs = _load(w, "bob", m)
    with pytest.raises(AccessDenied, match="does not verify"):
        g.release(_req(w, "alice", m, 0, bobs))
    assert {e.decision for e in _releases(w)} == {"deny"}
    # none of this spent a shard: each named one is still released once
    assert all(isinstance(k, bytearray)
               for k in g.release_many([_req(w, "alice", m, i, ev) for i in (0, 1)]))


def test_replay_keys_are_per_signer_and_disjoint_from_plain_nonces(world: World) -> None:
    w, m = world, _manifest(world)
    nonce = "ab" * 16
    alice_env = sign_load_evidence(w.people["alice"].private_key, artifact=m.ref,
                                   shards=_pairs(m), purpose="load", nonce=nonce)
    alice = '{"release":' + _json(alice_env) + "}"
    assert isinstance(_gate(w).release(_req(w, "alice", m, 0, alice)), bytearray)
    # bob, who read alice's nonce in the log, signs his own load evidence with it:
    # his replay keys carry his key id, so neither load spends the other's shards
    bob_env = sign_load_evidence(w.people["bob"].private_key, artifact=m.ref,
                                 shards=_pairs(m), purpose="load", nonce=nonce)
    bob = '{"release":' + _json(bob_env) + "}"
    assert isinstance(_gate(w).release(_req(w, "bob", m, 1, bob)), bytearray)
    assert isinstance(_gate(w).release(_req(w, "alice", m, 1, alice)), bytearray)
    # a plain evidence nonce shaped like a load's replay key is refused outright
    kid = w.people["bob"].public.key_id
    plain = sign_release_evidence(w.people["bob"].private_key, artifact=m.ref,
                                  shard=m.files[2].path, blob_id=m.files[2].blob,
                                  purpose="load", nonce=f"{kid}/{nonce}/2")
    with pytest.raises(AccessDenied, match="valid nonce"):
        _gate(w).release(_req(w, "bob", m, 2, plain))
    assert isinstance(_gate(w).release(_req(w, "bob", m, 2, bob)), bytearray)


def _json(text: str) -> str:
    import json

    return json.dumps(text)


def test_signing_refuses_empty_too_many_or_repeated_shards() -> None:
    key = Identity.generate("alice").private_key
    with pytest.raises(InvalidInput, match="1 to"):
        sign_load_evidence(key, artifact="m@1", shards=[], purpose="load")
    with pytest.raises(InvalidInput, match="1 to"):
        sign_load_evidence(key, artifact="m@1", purpose="load",
                           shards=[(f"s{i}", "b") for i in range(MAX_LOAD_SHARDS + 1)])
    with pytest.raises(InvalidInput, match="twice"):
        sign_load_evidence(key, artifact="m@1", shards=[("a", "b1"), ("a", "b2")],
                           purpose="load")


_PAIR = st.lists(st.text(max_size=4), min_size=0, max_size=3)
_SHARDS = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                    st.lists(st.one_of(_PAIR, st.text(max_size=3), st.integers()), max_size=4))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shards=_SHARDS)
def test_a_signed_shard_list_releases_only_when_it_is_distinct_pairs(shards: Any) -> None:
    ident = Identity.generate("alice")
    now = time.time()
    statement = {"artifact": "m@1", "shards": shards, "purpose": "load",
                 "nonce": "cd" * 16, "expires": int(now + 60)}
    env = sign_statement(statement, LOAD_EVIDENCE_PAYLOAD_TYPE, ident.private_key)
    well_formed = (isinstance(shards, list) and len(shards) > 0
                   and all(isinstance(p, list) and len(p) == 2
                           and all(isinstance(x, str) for x in p) for p in shards)
                   and len({p[0] for p in shards}) == len(shards))
    target = shards[0] if well_formed else ["s", "b"]
    req = ReleaseRequest(principal="alice", principal_key=ident.public.public_bytes,
                         artifact="m@1", shard=target[0], blob_id=target[1], nbytes=1,
                         purpose="load", evidence=env)
    try:
        key, _ = check_release_signature(env, ident.public.public_key, ident.public.key_id, req, now,
                                         VerifiedEvidence())
    except AccessDenied as exc:
        assert not well_formed, exc.message
        assert "malformed" in exc.message
    else:
        assert well_formed
        assert key == f"{ident.public.key_id}/{'cd' * 16}/0"


def test_refusals_are_strongroom_errors_in_a_batch(world: World) -> None:
    # a malformed envelope in a batch refuses that request only, audited, never a fault
    w, m = world, _manifest(world)
    good = _load(w, "alice", m, (0,))
    bad = '{"release":"{\\"payloadType\\":\\"' + LOAD_EVIDENCE_PAYLOAD_TYPE + '\\"}"}'
    out = _gate(w).release_many([_req(w, "alice", m, 1, bad), _req(w, "alice", m, 0, good)])
    assert isinstance(out[0], StrongroomError) and isinstance(out[0], AccessDenied)
    assert isinstance(out[1], bytearray)

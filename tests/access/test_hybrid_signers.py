"""People with ML-DSA-65 keys beside Ed25519: once an enrollment pins the ML-DSA key, that
person's requests, approvals and Grants count only when both signatures verify; classical
people are unchanged. Real statements stored in SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from strongroom.access.approvals import (
    AccessRequest,
    approval_candidates,
    approve,
    submit_approval,
    submit_request,
)
from strongroom.access.directory import (
    DirectoryReader,
    Enrollment,
    Resource,
    Vetting,
    level,
    publish,
)
from strongroom.access.grants import build_grant, grant_parts
from strongroom.crypto import bech32
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput
from strongroom.keys.identity import MLDSA_PUBLIC_HRP, Identity, PublicIdentity
from strongroom.store.db import Store

YEAR = 365 * 24 * 3600
RESOURCE = Resource("minilm", "weights", level("secret"), ("atlas",))


def _strip_mldsa(env: str) -> str:
    data = json.loads(env)
    data["signatures"] = [s for s in data["signatures"] if not s["keyid"].startswith("mldsa65:")]
    return json.dumps(data)


def _corrupt_mldsa(env: str) -> str:
    data = json.loads(env)
    for s in data["signatures"]:
        if s["keyid"].startswith("mldsa65:"):
            sig = bytearray(base64.b64decode(s["sig"]))
            sig[10] ^= 1
            s["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(data)


class People:
    """Two officers (2 of 2) and people enrolled from their .pub files' text."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.officers = [Identity.generate(f"officer{i}") for i in (1, 2)]
        pinned = {o.public.key_id: o.public.public_key for o in self.officers}
        self.reader = DirectoryReader(store, lambda: pinned, 2)
        self.ids: dict[str, Identity] = {}

    def enroll(self, name: str, *, pq: bool) -> Identity:
        ident = Identity.generate(name, pq=pq)
        self.ids[name] = ident
        pub = PublicIdentity.parse(ident.public.to_text())  # what `people enroll --key` reads
        now = int(time.time())
        e = Enrollment(name=name, key=pub.public_bytes, roles=("approvers",),
                       clearance=level("secret"), compartments=("atlas",),
                       vetting=Vetting("active", now - 10, now + YEAR), issued=now,
                       mldsa_key=pub.mldsa_bytes)
        publish(self.store, "enrollment", e.sign(*[o.private_key for o in self.officers]))
        return ident

    def request(self, name: str) -> tuple[AccessRequest, str]:
        ident = self.ids[name]
        req = AccessRequest.new(name, ident.public.key_id, "minilm", "load", "eval", 3600,
                                1 << 30, time.time())
        env = req.sign(ident.private_key, pq=ident.mldsa_key)
        return req, env

    def approve(self, name: str, request_env: str) -> str:
        ident = self.ids[name]
        return approve(ident.private_key, name, request_env, now=time.time(),
                       pq=ident.mldsa_key)

    def candidates(self, req: AccessRequest, request_env: str, envs: list[str]) -> tuple[
            list[str], list[str]]:
        digest = submit_request(self.store, request_env)
        found = approval_candidates(req, digest, envs, self.reader.view(), RESOURCE,
                                    at=time.time())
        return [who.name for who, _ in found.found], list(found.refused)


def test_identity_files_keep_the_ml_dsa_key_and_classical_files_are_unchanged() -> None:
    hybrid = Identity.generate("alice", pq=True)
    again = Identity.parse(hybrid.to_text())
    assert again.mldsa_key is not None and hybrid.mldsa_key is not None
    assert again.public == hybrid.public and len(again.public.mldsa_bytes) == 1952
    assert PublicIdentity.parse(hybrid.public.to_text()) == hybrid.public
    classical = Identity.generate("bob")
    assert classical.to_text().startswith("# strongroom identity (Ed25519): keep")
    assert len(classical.to_text().splitlines()) == 4
    assert Identity.parse(classical.to_text()).mldsa_key is None
    assert PublicIdentity.parse(classical.public.to_text()).mldsa_key is None


def test_a_hybrid_approval_counts_only_with_both_signatures(store: Store) -> None:
    w = People(store)
    w.enroll("alice", pq=True)
    w.enroll("bob", pq=True)
    w.enroll("carol", pq=False)
    req, req_env = w.request("alice")
    good = w.approve("bob", req_env)
    classical = w.approve("carol", req_env)
    assert sum(s["keyid"].startswith("mldsa65:") for s in json.loads(good)["signatures"]) == 1
    assert all(not s["keyid"].startswith("mldsa65:")
               for s in json.loads(classical)["signatures"])
    assert w.candidates(req, req_env, [good, classical]) == (["bob", "carol"], [])

    counted, refused = w.candidates(req, req_env, [_strip_mldsa(good)])
    assert counted == [] and len(refused) == 1
    assert refused[0].startswith("approval by bob:") and "no signature by mldsa65:" in refused[0]

    counted, refused = w.candidates(req, req_env, [_corrupt_mldsa(good)])
    assert counted == [] and "mldsa65:" in refused[0] and "does not verify" in refused[0]
    # Such an approval is refused when submitted, not stored to fail later.
    with pytest.raises(IntegrityError, match="no signature by mldsa65:") as info:
        submit_approval(store, _strip_mldsa(good), directory=w.reader.view())
    assert info.value.obj == "approval by bob"


def test_a_hybrid_persons_grant_and_request_need_both_signatures(store: Store) -> None:
    w = People(store)
    alice = w.enroll("alice", pq=True)
    w.enroll("bob", pq=False)
    _, req_env = w.request("alice")
    approval = w.approve("bob", req_env)
    directory = w.reader.view()
    grant = build_grant(alice.private_key, req_env, [approval], now=time.time(),
                        pq=alice.mldsa_key)
    parts = grant_parts(grant, directory, RESOURCE)
    assert parts.requester.name == "alice" and parts.requester.mldsa_key

    with pytest.raises(AccessDenied, match=r"the grant does not verify.*no signature by mldsa65"):
        grant_parts(_strip_mldsa(grant), directory, RESOURCE)
    unsigned_req = build_grant(alice.private_key, _strip_mldsa(req_env), [approval],
                               now=time.time(), pq=alice.mldsa_key)
    with pytest.raises(AccessDenied, match=r"request does not verify.*no signature by mldsa65"):
        grant_parts(unsigned_req, directory, RESOURCE)
    # Bob (classical) signs a grant with Ed25519 alone, as before.
    by_bob = build_grant(w.ids["bob"].private_key, req_env, [approval], now=time.time())
    assert grant_parts(by_bob, directory, RESOURCE).issuer_kid == w.ids["bob"].public.key_id


def test_an_enrollment_with_a_malformed_ml_dsa_key_is_refused() -> None:
    ident = Identity.generate("alice", pq=True)
    now = int(time.time())
    e = Enrollment(name="alice", key=ident.public.public_bytes, issued=now,
                   mldsa_key=ident.public.mldsa_bytes)
    assert Enrollment.from_statement(e.to_statement()) == e
    with pytest.raises(InvalidInput, match="not an ML-DSA-65 public key"):
        Enrollment(name="alice", key=ident.public.public_bytes, mldsa_key=b"\x01" * 10)
    for bad in ("zz", "01" * 10):
        with pytest.raises(IntegrityError, match="enrollment statement has an unexpected shape"):
            Enrollment.from_statement({**e.to_statement(), "mldsa_key": bad})
    # A .pub whose ML-DSA line is cut short is refused when read, naming the file's line.
    text = ident.public.to_text().splitlines()
    short = bech32.encode(MLDSA_PUBLIC_HRP, ident.public.mldsa_bytes[:100])
    with pytest.raises(InvalidInput, match="line 4 is not one ML-DSA-65 key"):
        PublicIdentity.parse("\n".join([*text[:3], short]), obj="alice.pub")

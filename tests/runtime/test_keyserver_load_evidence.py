"""A threshold key server's evidence rule takes load evidence: one verification for
every shard it names, each shard's share released once under it."""

from __future__ import annotations

import time

import pytest
from access_kit import count_verifications

from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseRequest, sign_load_evidence
from strongroom.runtime.keyserver import PinnedPrincipals


def _req(ident: Identity, shard: str, blob: str, evidence: str) -> ReleaseRequest:
    return ReleaseRequest(principal="alice", principal_key=ident.public.public_bytes,
                          artifact="llama@3", shard=shard, blob_id=blob, nbytes=10,
                          purpose="load", evidence=evidence)


def test_load_evidence_verified_once_and_each_shard_once(monkeypatch: pytest.MonkeyPatch) -> None:
    alice = Identity.generate("alice")
    rule = PinnedPrincipals({alice.public.key_id: alice.public.public_key})
    calls = count_verifications(monkeypatch)
    shards = [(f"s{i}", f"b{i}") for i in range(3)]
    ev = sign_load_evidence(alice.private_key, artifact="llama@3", shards=shards,
                            purpose="load")
    now = time.time()
    nonces = [rule.verify(_req(alice, p, b, ev), now)["nonce"] for p, b in shards]
    assert len(calls) == 1
    assert len(set(nonces)) == 3
    with pytest.raises(AccessDenied, match="replay"):
        rule.verify(_req(alice, "s1", "b1", ev), now)
    with pytest.raises(AccessDenied, match="does not name this shard"):
        rule.verify(_req(alice, "s9", "b9", ev), now)

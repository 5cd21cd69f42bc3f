"""A full load signs one load evidence for all its shards; each shard is still released alone.

``Vault.open_weights`` (not lazy) hands every shard's :class:`GateIdentity` the
load's :class:`LoadEvidence`: one signature, one verification at the gate, one
``key.release`` decision per shard whose replay key is ``<kid>/<nonce>/<i>``.
A lazy open keeps per-shard evidence; a shard asked for twice, or refused as a
replay, signs its own.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from access_kit import World, model_world

from strongroom.access import statements
from strongroom.access.directory import Resource
from strongroom.access.grants import issue_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied
from strongroom.vault import shards as shards_mod
from strongroom.vault.manifest import Manifest
from strongroom.vault.shards import LoadEvidence
from strongroom.vault.vault import Vault

from vault_fixtures import make_model, unsealed_vault

NAME = "sharded"


def _import(vault: Vault, tmp: Path, **kw: Any) -> dict[str, np.ndarray]:
    folder = tmp / "sharded"
    folder.mkdir()
    tensors: dict[str, np.ndarray] = {}
    for i in range(3):
        tensors.update(make_model(folder / f"model-0000{i + 1}-of-00003.safetensors", seed=i,
                                  prefix=f"s{i}."))
    vault.import_weights(folder, NAME, **kw)
    return tensors


class Signatures:
    """Counts (and keeps) what the vault's shard module signs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.load: list[dict[str, Any]] = []
        self.release = 0
        real_load, real_release = shards_mod.sign_load_evidence, shards_mod.sign_release_evidence

        def load(*a: Any, **k: Any) -> str:
            env = real_load(*a, **k)
            self.load.append(_payload(env))
            return env

        def release(*a: Any, **k: Any) -> str:
            self.release += 1
            return real_release(*a, **k)

        monkeypatch.setattr(shards_mod, "sign_load_evidence", load)
        monkeypatch.setattr(shards_mod, "sign_release_evidence", release)


def _payload(envelope: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return data


def _releases(vault: Vault, since: int = 0) -> list[Any]:
    return [e for e in vault.audit.events(since) if e.action == "key.release"]


@pytest.fixture
def vault(db_url: str, tmp_path: Path) -> Iterator[Vault]:
    with unsealed_vault(db_url, tmp_path) as v:
        yield v


def test_full_load_signs_once_each_shard_released_alone(
        vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tensors = _import(vault, tmp_path)
    m = vault.manifest(NAME)
    start = len(vault.audit.events())
    signed = Signatures(monkeypatch)
    with vault.open_weights(NAME) as w:
        assert set(w) == set(tensors)
        for name, want in tensors.items():
            np.testing.assert_array_equal(w[name], want)
    assert signed.release == 0 and len(signed.load) == 1
    statement = signed.load[0]
    assert statement["shards"] == [[f.path, f.blob] for f in m.files]
    assert statement["purpose"] == "load" and statement["artifact"] == m.ref
    entries = _releases(vault, start)
    assert [e.decision for e in entries] == ["allow"] * 3
    assert [e.object for e in entries] == [f"{m.ref}/{f.path}" for f in m.files]
    kid = vault.identity.public.key_id
    assert [e.details["nonce"] for e in entries] == [
        f"{kid}/{statement['nonce']}/{i}" for i in range(3)]
    # a lazy open keeps per-shard evidence: it signs for the one shard it reads
    with vault.open_weights(NAME, lazy=True) as w:
        np.testing.assert_array_equal(w["s1.layer.0.w"], tensors["s1.layer.0.w"])
    assert signed.release == 1 and len(signed.load) == 1


def test_shard_read_twice_or_refused_as_replay_signs_its_own(
        vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _import(vault, tmp_path)
    m = vault.manifest(NAME)
    entry = m.files[0]
    start = len(vault.audit.events())
    signed = Signatures(monkeypatch)
    load = LoadEvidence(lambda: vault.identity, m.ref, [m.shard(f) for f in m.files], "load")
    for _ in range(2):  # the second read is not under the load evidence: its own, no refusal
        with vault.open_reader(m, entry, "load", load=load) as reader:
            assert reader.read(0, 8)
    assert (len(signed.load), signed.release) == (1, 1)
    assert [e.decision for e in _releases(vault, start)] == ["allow", "allow"]

    class Stale(LoadEvidence):
        """A load evidence that hands out a shard's entry it already handed out."""

        def take(self, shard: Any, purpose: str) -> str | None:
            return spent

    spent = _stale_evidence(vault, m)
    with vault.open_reader(m, entry, "load", load=Stale(lambda: vault.identity, m.ref, [],
                                                        "load")) as reader:
        assert reader.read(0, 8)
    after = _releases(vault, start)[2:]
    assert [e.decision for e in after] == ["allow", "deny", "allow"]
    assert "replay" in after[1].reason
    assert signed.release == 2  # the fallback signed the shard's own evidence


def _stale_evidence(vault: Vault, m: Manifest) -> str:
    """A load evidence whose first shard was released under it (by a full load's reader)."""
    load = LoadEvidence(lambda: vault.identity, m.ref, [m.shard(f) for f in m.files], "load")
    with vault.open_reader(m, m.files[0], "load", load=load) as reader:
        assert reader.read(0, 8)
    assert load._evidence is not None
    return load._evidence


def test_a_refused_grant_refuses_the_full_load_and_spends_nothing(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with model_world(db_url, tmp_path) as w:
        tensors = _import(w.vault, tmp_path)
        start = len(w.vault.audit.events())
        signed = Signatures(monkeypatch)
        bob = w.vault_as("bob")
        with pytest.raises(AccessDenied):
            bob.open_weights(NAME)
        entries = _releases(w.vault, start)
        assert [e.decision for e in entries] == ["deny"]  # refused at the first shard
        assert "replay" not in entries[0].reason
        assert (len(signed.load), signed.release) == (1, 0)
        # nothing was spent: once bob holds a Grant, a load releases every shard once
        _grant(w, "bob")
        with bob.open_weights(NAME) as loaded:
            for name, want in tensors.items():
                np.testing.assert_array_equal(loaded[name], want)
        entries = _releases(w.vault, start)
        assert [e.decision for e in entries] == ["deny"] + ["allow"] * 3
        assert (len(signed.load), signed.release) == (2, 0)


def _grant(w: World, who: str) -> None:
    req = w.request(who, NAME)
    for approver in {"alice", "bob", "carol"} - {who}:
        w.approve(approver, req)
    m = w.vault.manifest(NAME)
    resource = Resource(m.ref, m.kind, 3, tuple(m.compartments))
    issue_grant(w.store, w.people[who].private_key, statements.payload_digest(req),
                w.rule.reader.view(), PolicyEngine(), resource, now=time.time())


def test_load_evidence_is_signed_again_for_the_rest_near_expiry_or_past_its_size(
        vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _import(vault, tmp_path)
    m = vault.manifest(NAME)
    sh = [m.shard(f) for f in m.files]
    signed = Signatures(monkeypatch)
    now = [1_000_000.0]

    class Clock:
        @staticmethod
        def time() -> float:
            return now[0]

    monkeypatch.setattr(shards_mod, "time", Clock)
    load = LoadEvidence(lambda: vault.identity, m.ref, sh, "load", ttl_s=300)
    first = load.take(sh[0], "load")
    assert load.take(sh[0], "load") is None  # each shard once
    assert load.take(sh[1], "export") is None  # another purpose
    now[0] += 300 - LoadEvidence.RENEW_S + 1
    second = load.take(sh[1], "load")
    assert first is not None and second is not None and second != first
    assert [s["shards"] for s in signed.load] == [
        [[f.path, f.blob] for f in m.files], [[f.path, f.blob] for f in m.files[1:]]]
    load.finish()
    assert load.take(sh[2], "load") is None
    # more shards than one evidence may name: the rest get one of their own
    monkeypatch.setattr(shards_mod, "MAX_LOAD_SHARDS", 2)
    load = LoadEvidence(lambda: vault.identity, m.ref, sh, "load")
    evidences = [load.take(s, "load") for s in sh]
    assert evidences[0] == evidences[1] != evidences[2]
    assert [s["shards"] for s in signed.load[2:]] == [
        [[f.path, f.blob] for f in m.files[:2]], [[m.files[2].path, m.files[2].blob]]]

"""Shared set-up for the access tests: a real unsealed keyring with two pinned officers (2 of 2),
a release gate using GrantEvidence, a vault on top of it, and people enrolled by the officers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.access import statements
from strongroom.access.approvals import AccessRequest, approve, submit_approval, submit_request
from strongroom.access.directory import Enrollment, ResourceLabel, Vetting, level, publish
from strongroom.access.evidence import GrantEvidence
from strongroom.audit.log import AuditLog
from strongroom.crypto.age import Stanza
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import KeyringStatus
from strongroom.release import ReleaseGate, ReleaseRequest
from strongroom.release import request as release_request
from strongroom.runtime.services import LocalKeyService
from strongroom.runtime.wiring import default_meter, shard_locator
from strongroom.settings import Settings
from strongroom.store.db import Store
from strongroom.vault.vault import Vault

from keyring_fixtures import audit_factory, make_custodians, submit
from vault_fixtures import make_model

YEAR = 365 * 24 * 3600


class GatedKeys:
    """A KeyService whose release runs a gate with GrantEvidence (what the lead wires in)."""

    def __init__(self, svc: LocalKeyService, rule: GrantEvidence) -> None:
        self.svc = svc
        self.rule = rule
        self.gate: ReleaseGate | None = None

    def attach(self, audit: AuditLog) -> None:
        self.rule.seed_from_audit(audit, time.time())
        ring = self.svc.keyring
        self.gate = ReleaseGate(ring, audit, evidence=self.rule,
                                egress=default_meter(ring.store, audit), sizes=self.rule.shards)

    def status(self) -> KeyringStatus:
        return self.svc.status()

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Stanza:
        return self.svc.wrap_file_key(blob_id, file_key)

    def release(self, request: ReleaseRequest) -> bytearray:
        assert self.gate is not None
        return self.gate.release(request)

    def sign(self, purpose: str, message: bytes) -> bytes:
        return self.svc.sign(purpose, message)  # type: ignore[arg-type]

    def public_keys(self) -> dict[str, bytes]:
        return self.svc.public_keys()


@dataclass
class World:
    store: Store
    vault: Vault
    keys: GatedKeys
    officers: list[Identity]
    people: dict[str, Identity] = field(default_factory=dict)
    tmp: Path = Path(".")

    @property
    def rule(self) -> GrantEvidence:
        return self.keys.rule

    def enroll(self, name: str, *, roles: tuple[str, ...] = ("approvers",),
               clearance: str = "secret", compartments: tuple[str, ...] = ("atlas",),
               status: str = "active", expires: int | None = None, serial: int = 1,
               flags: tuple[str, ...] = (), signers: int = 2, kind: str = "person") -> Identity:
        ident = self.people.get(name) or Identity.generate(name)
        self.people[name] = ident
        now = int(time.time())
        e = Enrollment(name=name, key=ident.public.public_bytes, roles=roles,
                       clearance=level(clearance), compartments=compartments,
                       vetting=Vetting(status, now - 10, expires or now + YEAR, flags),
                       kind=kind, serial=serial, issued=now)
        publish(self.store, "enrollment",
                e.sign(*[o.private_key for o in self.officers[:signers]]))
        return ident

    def label(self, resource: str, *, classification: str = "secret",
              compartments: tuple[str, ...] = ("atlas",), rules: dict[str, str] | None = None,
              break_glass: tuple[str, ...] = (), serial: int = 1) -> None:
        from strongroom.access.directory import Rule

        lab = ResourceLabel(resource, level(classification), compartments,
                            {a: Rule.parse(r) for a, r in (rules or {}).items()}, break_glass,
                            600, serial, int(time.time()))
        publish(self.store, "label", lab.sign(*[o.private_key for o in self.officers]))

    def request(self, name: str, resource: str, action: str = "load", *,
                budget: int = 1 << 30, duration: int = 3600) -> str:
        ident = self.people[name]
        req = AccessRequest.new(name, ident.public.key_id, resource, action, "test", duration,
                                budget, time.time())
        env = req.sign(ident.private_key)
        submit_request(self.store, env)
        return env

    def approve(self, name: str, request_env: str, *, now: float | None = None,
                ttl: int = 3600) -> str:
        ident = self.people[name]
        env = approve(ident.private_key, name, request_env, now=now or time.time(), ttl_s=ttl)
        submit_approval(self.store, env, directory=self.rule.reader.view())
        return env

    def vault_as(self, name: str) -> Vault:
        settings = Settings(home=self.tmp / "home", database_url=self.store.url)
        v = Vault(settings, self.store, self.vault.blobs, self.keys, self.vault.audit,
                  identity=self.people[name])
        return v


def officer_keys(world: World) -> list[Ed25519PrivateKey]:
    return [o.private_key for o in world.officers]


@contextlib.contextmanager
def access_world(db_url: str, tmp: Path, n_officers: int = 2) -> Iterator[World]:
    """Init (2-of-3 custodians, officers n-of-n), unseal, gate with GrantEvidence, open a vault."""
    store = Store.open(db_url)
    officers = [Identity.generate(f"officer{i}") for i in range(1, n_officers + 1)]
    pubs = []
    for o in officers:
        p = tmp / f"{o.name}.pub"
        p.write_text(o.public.to_text())
        pubs.append(p)
    cust = make_custodians(tmp / "custodians", 3)
    result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                 shares_dir=tmp / "shares", officers=pubs, officer_threshold=n_officers,
                                 settings=KeysSettings(key_backend="shamir"))
    svc = LocalKeyService(store, KeysSettings(key_backend="shamir"), audit_factory=audit_factory)
    submit(svc, result, cust, 1)
    submit(svc, result, cust, 2)
    ring = svc.keyring
    rule = GrantEvidence(ring.officers, lambda: ring.officer_threshold, store,
                         shards=shard_locator(ring))
    keys = GatedKeys(svc, rule)
    settings = Settings(home=tmp / "home", database_url=db_url)
    try:
        with Vault.open(settings, keys=keys, identity=officers[0]) as vault:
            keys.attach(vault.audit)
            yield World(store, vault, keys, officers, tmp=tmp)
    finally:
        svc.seal()
        store.close()


@contextlib.contextmanager
def model_world(db_url: str, tmp: Path,
                people: tuple[str, ...] = ("alice", "bob", "carol")) -> Iterator[World]:
    """:func:`access_world` with a small model imported as ``minilm`` (compartment atlas)
    and ``people`` enrolled as approvers."""
    with access_world(db_url, tmp) as w:
        make_model(tmp / "m.safetensors")
        w.vault.import_weights(tmp / "m.safetensors", "minilm", compartments=["atlas"])
        for name in people:
            w.enroll(name)
        yield w


def stored(store: Store, kind: str) -> list[str]:
    return statements.envelopes(store, kind)


def count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The payload type of each evidence signature verified from now on (grows as they are)."""
    seen: list[str] = []
    real = release_request.verify_statement

    def counting(envelope: Any, payload_type: str, *a: Any, **k: Any) -> dict[str, Any]:
        seen.append(payload_type)
        return real(envelope, payload_type, *a, **k)

    monkeypatch.setattr(release_request, "verify_statement", counting)
    return seen

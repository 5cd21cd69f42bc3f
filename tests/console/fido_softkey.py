"""A software security key for tests: makes WebAuthn assertions the way an authenticator does."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.access import fido, statements
from strongroom.access.approvals import Approval, submit_approval
from strongroom.access.directory import Enrollment, publish
from strongroom.keys.identity import Identity
from strongroom.store.db import Store

if TYPE_CHECKING:
    from access_kit import World

ORIGIN = "http://localhost:8420"
UP, UV = 0x01, 0x04


@dataclass
class SoftKey:
    alg: int = -7
    rp_id: str = "localhost"
    origin: str = ORIGIN
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    counter: int = 0

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1()) if self.alg == -7 \
            else Ed25519PrivateKey.generate()

    def cose(self) -> bytes:
        if self.alg == -7:
            n = self._key.public_key().public_numbers()  # type: ignore[union-attr]
            return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32), -3: n.y.to_bytes(32)})
        raw = self._key.public_key().public_bytes_raw()  # type: ignore[union-attr]
        return cbor2.dumps({1: 1, 3: -8, -1: 6, -2: raw})

    def security_key(self) -> fido.SecurityKey:
        return fido.SecurityKey(self.credential_id, self.cose(), self.alg, self.rp_id,
                                (self.origin,))

    def assertion(self, challenge: bytes, *, origin: str | None = None,
                  rp_id: str | None = None, flags: int = UP | UV, kind: str = "webauthn.get",
                  extra: dict[str, object] | None = None) -> fido.Assertion:
        self.counter += 1
        client = json.dumps({"type": kind, "challenge": fido.b64url(challenge),
                             "origin": origin or self.origin, "crossOrigin": False,
                             **(extra or {})}).encode()
        auth = hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([flags]) \
            + self.counter.to_bytes(4)
        signed = auth + hashlib.sha256(client).digest()
        if self.alg == -7:
            sig = self._key.sign(signed, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        else:
            sig = self._key.sign(signed)  # type: ignore[call-arg]
        return fido.Assertion(self.credential_id, auth, client, sig)

    def browser_json(self, a: fido.Assertion) -> dict[str, object]:
        cid = fido.b64url(a.credential_id)
        return {"id": cid, "rawId": cid, "type": "public-key",
                "response": {"authenticatorData": fido.b64url(a.authenticator_data),
                             "clientDataJSON": fido.b64url(a.client_data_json),
                             "signature": fido.b64url(a.signature)}}


def approval_envelope(key: SoftKey, approver: Identity, request_env: str, *,
                      signer_key: SoftKey | None = None, now: float | None = None,
                      ttl: int = 3600, **assert_kw: object) -> str:
    """An approval of ``request_env`` by ``approver``, signed with a security key."""
    now = int(time.time() if now is None else now)
    a = Approval(statements.payload_digest(request_env), approver.name, approver.public.key_id,
                 "approve", os.urandom(8).hex(), now, now + ttl)
    ptype, payload = fido.unsigned_payload("approval", a.to_statement())
    assertion = (signer_key or key).assertion(fido.challenge(ptype, payload), **assert_kw)  # type: ignore[arg-type]
    return fido.envelope(ptype, payload, approver.public.key_id, assertion)


def grant_envelope(key: SoftKey, signer: Identity, statement: dict[str, object]) -> str:
    ptype, payload = fido.unsigned_payload("grant", statement)
    return fido.envelope(ptype, payload, signer.public.key_id,
                         key.assertion(fido.challenge(ptype, payload)))


def add_keys(store: Store, current: Enrollment, keys: list[fido.SecurityKey],
             officers: list[Identity]) -> Enrollment:
    """Officers re-sign ``current`` with ``keys`` added (serial + 1)."""
    e = replace(current, security_keys=(*current.security_keys, *keys),
                serial=current.serial + 1, issued=int(time.time()))
    publish(store, "enrollment", e.sign(*[o.private_key for o in officers]))
    return e


def submit(world: World, env: str) -> str:
    """Store an approval as the console does, checked against the world's directory."""
    return submit_approval(world.store, env, directory=world.rule.reader.view())

"""ML-DSA-65 signatures beside Ed25519: statements that must stay verifiable for years.

A signature made today with Ed25519 alone can be forged by whoever later has a
quantum computer, and a forged officer enrollment, Grant or transfer manifest
would then pass as genuine. So a signer may hold two keys, Ed25519 and ML-DSA-65
(FIPS 204), and sign with both; a verifier that pins both keys of a signer counts
that signer only when **both** signatures verify. Nothing else changes: the
second signature is one more entry of the same envelope or note, which a
verifier that knows only Ed25519 ignores.

DSSE statements (approvals, Grants, enrollments, bundle manifests)::

    env = dsse.sign_statement(statement, PAYLOAD_TYPE, ed_key)
    env = add_mldsa_signature(env, PAYLOAD_TYPE, mldsa_key)     # keyid "mldsa65:<16 hex>"
    verify_hybrid_statement(env, PAYLOAD_TYPE, [PinnedSigner(ed_pub, mldsa_pub)])

Signed notes (checkpoints keep Ed25519 for C2SP compatibility; the ML-DSA
cosignature is an extra signer line that Go's ``sumdb/note`` and our own
:func:`~strongroom.crypto.note.open_note` ignore unless given its verifier)::

    signed = note.sign(text, ed_signer, MLDSANoteSigner(name, mldsa_key))
    note.open_note(signed, [ed_verifier, MLDSANoteVerifier(name, mldsa_pub)])

The note signature type is ``0xff`` (the signed-note spec assigns ML-DSA no
type; ``0xff`` is outside the assigned ones), the key ID is
``SHA-256(name || 0x0A || 0xff || "mldsa65" || public key)[:4]``, and the
signature is ML-DSA-65 (pure, empty context) over the note text.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.crypto import dsse, note
from strongroom.errors import IntegrityError, InvalidInput

__all__ = [
    "MLDSA_KEYID_PREFIX",
    "SIG_MLDSA65",
    "MLDSANoteSigner",
    "MLDSANoteVerifier",
    "PinnedSigner",
    "add_mldsa_signature",
    "mldsa_key_id",
    "verify_hybrid_statement",
    "verify_pinned",
]

#: The signed-note signature type used for ML-DSA-65 lines (see the module docstring).
SIG_MLDSA65 = 0xFF
_NOTE_TAG = b"mldsa65"
#: The DSSE key id prefix of an ML-DSA-65 signature entry.
MLDSA_KEYID_PREFIX = "mldsa65:"


def mldsa_key_id(public_key: MLDSA65PublicKey) -> str:
    """``mldsa65:`` and 16 hex characters of SHA-256 of the raw public key (DSSE keyid)."""
    return MLDSA_KEYID_PREFIX + hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


def add_mldsa_signature(envelope: str, payload_type: str, key: MLDSA65PrivateKey) -> str:
    """``envelope`` with one more signature: ML-DSA-65 over the same DSSE pre-authentication bytes."""
    payload, _ = dsse.parse_envelope(envelope, payload_type)
    env = json.loads(envelope)
    message = dsse.pae(payload_type, payload)
    signature = key.sign(message)
    key.public_key().verify(signature, message)
    env["signatures"].append({"keyid": mldsa_key_id(key.public_key()),
                              "sig": base64.b64encode(signature).decode()})
    return json.dumps(env, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PinnedSigner:
    """One signer's pinned keys; with ``mldsa`` pinned, both signatures are required."""

    ed25519: Ed25519PublicKey
    mldsa: MLDSA65PublicKey | None = None


def _signature(signatures: Sequence[Any], kid: str, obj: str) -> bytes | None:
    for entry in signatures:
        if isinstance(entry, dict) and entry.get("keyid") == kid:
            try:
                return base64.b64decode(entry.get("sig", ""), validate=True)
            except ValueError:
                raise IntegrityError(f"signature by key {kid} is not base64", obj=obj) from None
    return None


def verify_hybrid_statement(envelope: str | bytes, payload_type: str,
                            signers: Sequence[PinnedSigner], *, threshold: int = 1,
                            obj: str = "statement") -> dict[str, Any]:
    """The statement, if at least ``threshold`` pinned signers signed it with every pinned key.

    A signer whose ML-DSA key is pinned but whose envelope lacks that signature
    does not count (an Ed25519-only signature could be a future forgery); a
    signature that is present and fails is an error, as in :func:`dsse.verify_statement`.
    """
    payload, signatures = dsse.parse_envelope(envelope, payload_type, obj=obj)
    message = dsse.pae(payload_type, payload)
    counted = 0
    missing: list[str] = []
    for signer in signers:
        keys: list[tuple[str, Ed25519PublicKey | MLDSA65PublicKey]] = [
            (dsse.key_id(signer.ed25519), signer.ed25519)]
        if signer.mldsa is not None:
            keys.append((mldsa_key_id(signer.mldsa), signer.mldsa))
        complete = True
        for kid, public in keys:
            sig = _signature(signatures, kid, obj)
            if sig is None:
                complete = False
                missing.append(kid)
                continue
            if isinstance(public, Ed25519PublicKey):
                dsse.refuse_weak_key(public, kid, obj)
            try:
                public.verify(sig, message)
            except InvalidSignature:
                raise IntegrityError(f"signature by key {kid} does not verify", obj=obj) from None
        counted += complete
    if counted < threshold:
        lacking = f" (no signature by {', '.join(missing)})" if missing else ""
        raise IntegrityError(
            f"signed by {counted} pinned signer(s) with all their keys, {threshold} required"
            f"{lacking}",
            obj=obj, remedy="the statement lacks a required Ed25519 or ML-DSA-65 signature; "
                            "do not use it")
    statement = json.loads(payload)
    if not isinstance(statement, dict):
        raise IntegrityError("signed payload is not a JSON object", obj=obj)
    return statement


def verify_pinned(envelope: str | bytes, payload_type: str,
                  trusted: Mapping[str, Ed25519PublicKey], *,
                  pq: Mapping[str, MLDSA65PublicKey] | None = None, threshold: int = 1,
                  obj: str = "statement") -> dict[str, Any]:
    """The statement if ``threshold`` of ``trusted`` signed it: the one rule for pinned signers.

    ``pq`` pins the ML-DSA-65 keys of some of the ``trusted`` key ids (hybrid
    signers): such a signer counts only when both its signatures verify; the
    others count on Ed25519 alone. With no ML-DSA key pinned this is
    :func:`dsse.verify_statement`.
    """
    pins = {kid: key for kid, key in (pq or {}).items() if kid in trusted}
    if not pins:
        return dsse.verify_statement(envelope, payload_type, trusted, threshold=threshold,
                                     obj=obj)
    return verify_hybrid_statement(
        envelope, payload_type,
        [PinnedSigner(public, pins.get(kid)) for kid, public in trusted.items()],
        threshold=threshold, obj=obj)


def _note_key_id(name: str, public_key: MLDSA65PublicKey) -> int:
    return note.key_id(name, SIG_MLDSA65, _NOTE_TAG + public_key.public_bytes_raw())


class MLDSANoteSigner:
    """Signs a note's text with ML-DSA-65 under ``name`` (an extra signer line)."""

    def __init__(self, name: str, key: MLDSA65PrivateKey) -> None:
        if not name or any(c.isspace() or c == "+" for c in name):
            raise InvalidInput("invalid note key name", obj=name)
        self._name = name
        self._key = key
        self._kid = _note_key_id(name, key.public_key())

    @property
    def name(self) -> str:
        """The key name on the signature line."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 4-byte key ID."""
        return self._kid

    def sign(self, text: str) -> bytes:
        """ML-DSA-65 over the note text."""
        return self._key.sign(text.encode())


class MLDSANoteVerifier:
    """Verifies an ML-DSA-65 signer line made by :class:`MLDSANoteSigner`."""

    def __init__(self, name: str, public_key: MLDSA65PublicKey) -> None:
        self._name = name
        self._public = public_key
        self._kid = _note_key_id(name, public_key)

    @property
    def name(self) -> str:
        """The key name on the signature line."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 4-byte key ID."""
        return self._kid

    def verify(self, text: str, sig: bytes) -> bool:
        """True when ``sig`` is this key's ML-DSA-65 signature of ``text``."""
        try:
            self._public.verify(sig, text.encode())
        except InvalidSignature:
            return False
        return True

"""Signed statements: canonical JSON inside DSSE envelopes, signed with Ed25519.

Use :func:`sign_statement` to sign a JSON-able mapping and
:func:`verify_statement` to get it back only if a trusted key signed it::

    env = sign_statement({"name": "minilm"}, PAYLOAD_TYPE, key)
    statement = verify_statement(env, PAYLOAD_TYPE, {key_id(pub): pub})

Never read ``payload`` out of an envelope without verifying it: the database
that stores envelopes is untrusted. The signature covers DSSE's
pre-authentication encoding (``DSSEv1 <len> <type> <len> <body>``), so a
statement of one type can never be replayed as another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import json.scanner
from collections.abc import Callable, Mapping
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto import ed25519
from strongroom.errors import IntegrityError, InvalidInput

__all__ = [
    "ExternalKey",
    "canonical_json",
    "key_id",
    "loads",
    "pae",
    "parse_envelope",
    "refuse_weak_key",
    "sign_statement",
    "verify_statement",
]


def canonical_json(value: Any, *, checked: bool = False) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8; floats are refused.

    The one canonical encoding of signed statements and audit entries (the
    audit log checks its entries' stricter types itself and passes ``checked``).
    """

    def check(obj: Any) -> None:
        if isinstance(obj, float):
            raise InvalidInput("floats are not allowed in signed statements", obj="statement")
        if isinstance(obj, Mapping):
            for v in obj.values():
                check(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                check(v)

    if not checked:
        check(value)
    return _CANONICAL.encode(value).encode("utf-8")


def _reject(obj: Any) -> Any:
    raise InvalidInput(f"cannot canonicalise a {type(obj).__name__}", obj="statement")


# One encoder for every call (its encode() keeps no state between calls): json.dumps
# with these options built a new one each time, a third of an audit entry's encoding.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_reject,
)


# json.loads' own scanner, called directly: json.loads goes through JSONDecoder.decode and
# raw_decode (whitespace regexes, a BOM check, the bytes' encoding sniffed), ~1.2 us a call
# of the ~2.5 a release evidence's envelope costs; the key agent parses three documents
# a release (evidence, envelope, payload). The same scanner json.loads uses, shared the same
# way (the C scanner runs under the GIL and clears its memo each call).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder()))  # typeshed types the argument as the scanner itself


def loads(data: str | bytes) -> Any:
    """``json.loads(data)``, the same value or the same ValueError, faster for the usual input.

    The fast path takes UTF-8 text that is exactly one JSON document (nothing before
    or after it); anything else (whitespace around it, a BOM, UTF-16/32 bytes,
    surrogate escapes, malformed JSON) is decided by ``json.loads`` itself.
    """
    text = data
    if not isinstance(text, str):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return json.loads(data)
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return json.loads(data)
    if end != len(text):
        return json.loads(data)
    return value


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable identifier of an Ed25519 public key (hex of SHA-256, 16 chars)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


#: A signing key held elsewhere (a key agent): its public key and a function signing bytes.
ExternalKey = tuple[Ed25519PublicKey, Callable[[bytes], bytes]]


def sign_statement(
    statement: Mapping[str, Any], payload_type: str, *keys: Ed25519PrivateKey | ExternalKey
) -> str:
    """Sign ``statement`` with every key; returns the DSSE envelope as JSON text."""
    if not keys:
        raise InvalidInput("at least one signing key is needed", obj=payload_type)
    payload = canonical_json(statement)
    message = pae(payload_type, payload)
    signatures = []
    for k in keys:
        public, sign = k if isinstance(k, tuple) else (k.public_key(), k.sign)
        signature = sign(message)
        public.verify(signature, message)  # a key holder that signs wrongly is caught here
        signatures.append({"keyid": key_id(public), "sig": base64.b64encode(signature).decode()})
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": signatures,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"))


def parse_envelope(envelope: str | bytes, payload_type: str, *,
                   obj: str = "statement") -> tuple[bytes, list[Any]]:
    """The payload (unverified!) and signature entries of a DSSE envelope of ``payload_type``."""
    try:
        env = loads(envelope)
        if env["payloadType"] != payload_type:
            raise IntegrityError(
                f"envelope has payload type {env['payloadType']!r}, expected {payload_type!r}",
                obj=obj,
            )
        payload = base64.b64decode(env["payload"], validate=True)
        signatures = env["signatures"]
        if not isinstance(signatures, list):
            raise TypeError("signatures is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"malformed signed envelope ({type(exc).__name__})", obj=obj) from exc
    return payload, signatures


def refuse_weak_key(public: Ed25519PublicKey, kid: str, obj: str) -> None:
    """IntegrityError if a trusted key is one no key generation makes (a key row written
    by hand: under a small-order key OpenSSL accepts a forged signature for any message)."""
    reason = ed25519.weakness(public.public_bytes_raw())
    if reason is not None:
        raise IntegrityError(f"trusted key {kid} is refused: it {reason}", obj=obj,
                             remedy="the key was not made by key generation; treat where it "
                                    "is stored as tampered with and restore it from a "
                                    "trusted copy")


def verify_statement(
    envelope: str | bytes,
    payload_type: str,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    threshold: int = 1,
    obj: str = "statement",
) -> dict[str, Any]:
    """Return the statement if at least ``threshold`` distinct trusted keys signed it.

    Signatures from unknown keys are ignored; a bad signature from a trusted
    key id is an error (something tampered with the envelope).
    """
    payload, signatures = parse_envelope(envelope, payload_type, obj=obj)
    message = pae(payload_type, payload)
    good: set[str] = set()
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("keyid")
        public = trusted.get(kid) if isinstance(kid, str) else None
        if public is None or kid in good:
            continue
        refuse_weak_key(public, str(kid), obj)
        try:
            public.verify(base64.b64decode(entry.get("sig", ""), validate=True), message)
        except (InvalidSignature, ValueError) as exc:
            raise IntegrityError(f"signature by key {kid} does not verify", obj=obj) from exc
        good.add(kid)  # type: ignore[arg-type]
    if len(good) < threshold:
        raise IntegrityError(
            f"signed by {len(good)} trusted key(s), {threshold} required",
            obj=obj,
            remedy="the statement was not signed by a trusted key; do not use it",
        )
    try:
        statement = loads(payload)
    except ValueError as exc:
        raise IntegrityError("signed payload is not JSON", obj=obj) from exc
    if not isinstance(statement, dict):
        raise IntegrityError("signed payload is not a JSON object", obj=obj)
    return statement

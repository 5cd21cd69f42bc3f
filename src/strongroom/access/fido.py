"""Security-key (FIDO2/WebAuthn) signatures on access statements.

An approver who approves in the web console signs the *same* approval
statement a CLI approval carries, but with a security key instead of an
Ed25519 identity key. The WebAuthn challenge is the statement's digest::

    challenge = SHA-256(PAE(payloadType, payload))      # DSSE pre-authentication encoding

and the envelope stores the assertion where a DSSE signature would go::

    {"payload": "<base64 statement>", "payloadType": "application/vnd.strongroom.access.approval.v1+json",
     "signatures": [{"keyid": "<approver's Ed25519 key id>",
                     "webauthn": {"credential_id": "<b64url>", "authenticator_data": "<b64url>",
                                  "client_data_json": "<b64url>", "signature": "<b64url>"}}]}

:func:`verify_envelope` accepts such a signature only when the credential is
listed in the signer's **officer-signed enrollment** (:class:`SecurityKey`:
credential id, COSE public key, algorithm, RP id and allowed origins), the
client data is a ``webauthn.get`` for exactly that challenge from an allowed
origin, the authenticator data carries the RP id's hash with user presence and
user verification, and the signature verifies over ``authenticatorData ||
SHA-256(clientDataJSON)``. A database administrator cannot add a key: the
enrollment's officers' signatures cover it. Sign counts are returned for the
console to track; they are not a gate check (clones and counter-less keys).

ES256 (-7), EdDSA/Ed25519 (-8) and RS256 (-257) keys are supported.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.access import statements
from strongroom.crypto.dsse import canonical_json, pae
from strongroom.crypto.ed25519 import checked
from strongroom.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from strongroom.access.directory import Enrollment

__all__ = [
    "ALGORITHMS",
    "Assertion",
    "SecurityKey",
    "WebAuthnVerified",
    "b64url",
    "challenge",
    "envelope",
    "is_webauthn",
    "unb64url",
    "unsigned_payload",
    "verify_assertion",
    "verify_envelope",
]

#: COSE algorithm identifiers accepted for security keys.
ALGORITHMS = {-7: "ES256", -8: "EdDSA", -257: "RS256"}
_FLAG_UP = 0x01
_FLAG_UV = 0x04
_MAX_CREDENTIAL_ID = 1023
_CACHE_SIZE = 10_000
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
NOT_REGISTERED = "an approval made with a security key not registered to the approver"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as WebAuthn writes binary values."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode unpadded (or padded) base64url strictly (ValueError when malformed)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


def unsigned_payload(kind: str, statement: Mapping[str, Any]) -> tuple[str, bytes]:
    """The payload type and canonical payload bytes ``statements.sign`` would sign."""
    body = {**statement, "_type": f"strongroom.access.{kind}/v1"}
    return statements.payload_type(kind), canonical_json(body)


def challenge(payload_type: str, payload: bytes) -> bytes:
    """The WebAuthn challenge for a statement: SHA-256 of its DSSE PAE (32 bytes)."""
    return hashlib.sha256(pae(payload_type, payload)).digest()


# -- security keys as officers enroll them -------------------------------------------


def _check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("",) \
            or parts.query or parts.fragment or parts.username:
        raise InvalidInput(f"invalid WebAuthn origin {origin!r}", obj="security key",
                           remedy="write an origin like https://console.example.org")
    if parts.scheme == "http" and parts.hostname != "localhost":
        raise InvalidInput(f"origin {origin!r} is not https", obj="security key",
                           remedy="browsers allow WebAuthn over http only on localhost")
    return origin


def _public_key(cose: bytes, alg: int) -> Ed25519PublicKey | ec.EllipticCurvePublicKey \
        | rsa.RSAPublicKey:
    """The cryptography key of a COSE_Key, checked against ``alg``."""
    import cbor2

    try:
        key = cbor2.loads(cose)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise InvalidInput(f"security key's COSE public key does not decode ({exc})",
                           obj="security key") from None
    if not isinstance(key, dict) or key.get(3) != alg:
        raise InvalidInput("security key's COSE public key is not for its algorithm",
                           obj="security key")
    try:
        if alg == -7 and key.get(1) == 2 and key.get(-1) == 1:
            x, y = key[-2], key[-3]
            if not (isinstance(x, bytes) and isinstance(y, bytes) and len(x) == len(y) == 32):
                raise ValueError("P-256 coordinates are not 32 bytes")
            return ec.EllipticCurvePublicNumbers(int.from_bytes(x), int.from_bytes(y),
                                                 ec.SECP256R1()).public_key()
        if alg == -8 and key.get(1) == 1 and key.get(-1) == 6:
            x = key[-2]
            if not isinstance(x, bytes) or len(x) != 32:
                raise ValueError("Ed25519 key is not 32 bytes")
            return checked(Ed25519PublicKey.from_public_bytes(x), obj="security key")
        if alg == -257 and key.get(1) == 3:
            n, e = key[-1], key[-2]
            if not isinstance(n, bytes) or not isinstance(e, bytes) or len(n) < 256:
                raise ValueError("RSA key shorter than 2048 bits")
            return rsa.RSAPublicNumbers(int.from_bytes(e), int.from_bytes(n)).public_key()
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"security key's COSE public key is malformed ({exc})",
                           obj="security key") from None
    raise InvalidInput(f"unsupported security key type for algorithm {alg}", obj="security key",
                       remedy="use an ES256, EdDSA or RS256 credential")


@dataclass(frozen=True)
class SecurityKey:
    """A WebAuthn credential as officers enroll it for a person."""

    credential_id: bytes
    public_key: bytes
    alg: int
    rp_id: str
    origins: tuple[str, ...]
    label: str = ""

    def __post_init__(self) -> None:
        if not 16 <= len(self.credential_id) <= _MAX_CREDENTIAL_ID:
            raise InvalidInput("a credential id is 16..1023 bytes", obj="security key")
        if self.alg not in ALGORITHMS:
            raise InvalidInput(f"unsupported security key algorithm {self.alg}",
                               obj="security key", remedy="use ES256, EdDSA or RS256")
        if not self.rp_id or "/" in self.rp_id or ":" in self.rp_id:
            raise InvalidInput(f"invalid relying-party id {self.rp_id!r}", obj="security key",
                               remedy="use the console's host name, e.g. console.example.org")
        if not self.origins:
            raise InvalidInput("a security key needs at least one allowed origin",
                               obj="security key")
        for o in self.origins:
            _check_origin(o)
        if len(self.label) > 100:
            raise InvalidInput("a security key label is at most 100 characters",
                               obj="security key")
        self.verifier  # noqa: B018 - the COSE key must decode now, not at first use

    @property
    def id(self) -> str:
        """The credential id, base64url (as browsers write it)."""
        return b64url(self.credential_id)

    @functools.cached_property
    def verifier(self) -> Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The public key as a cryptography object."""
        return _public_key(self.public_key, self.alg)

    def to_statement(self) -> dict[str, Any]:
        """The signed form (inside an enrollment)."""
        return {"id": self.id, "public_key": b64url(self.public_key), "alg": self.alg,
                "rp_id": self.rp_id, "origins": sorted(self.origins), "label": self.label}

    @classmethod
    def from_statement(cls, st: Mapping[str, Any]) -> SecurityKey:
        """Parse one entry of an enrollment's ``security_keys`` (ValueError/InvalidInput)."""
        origins = st["origins"]
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ValueError("origins is not a list of strings")
        alg = st["alg"]
        if not isinstance(alg, int) or isinstance(alg, bool):
            raise ValueError("alg is not an integer")
        return cls(unb64url(st["id"]), unb64url(st["public_key"]), alg, str(st["rp_id"]),
                   tuple(sorted(set(origins))), str(st.get("label", "")))


# -- assertions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Assertion:
    """The parts of a WebAuthn ``get()`` response that a verifier needs."""

    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        """The ``webauthn`` member of an envelope signature."""
        return {"credential_id": b64url(self.credential_id),
                "authenticator_data": b64url(self.authenticator_data),
                "client_data_json": b64url(self.client_data_json),
                "signature": b64url(self.signature)}

    @classmethod
    def from_json(cls, data: Any) -> Assertion:
        """Parse the ``webauthn`` member of an envelope signature (IntegrityError if malformed)."""
        try:
            if not isinstance(data, dict):
                raise ValueError("not an object")
            out = cls(unb64url(data["credential_id"]), unb64url(data["authenticator_data"]),
                      unb64url(data["client_data_json"]), unb64url(data["signature"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise IntegrityError(f"malformed security-key signature ({exc})",
                                 obj="security key") from None
        if not out.credential_id or len(out.credential_id) > _MAX_CREDENTIAL_ID:
            raise IntegrityError("malformed security-key signature (credential id)",
                                 obj="security key")
        return out

    @classmethod
    def from_browser(cls, credential: Any) -> Assertion:
        """Parse ``PublicKeyCredential.toJSON()`` of a ``get()`` (InvalidInput if malformed)."""
        try:
            resp = credential["response"]
            if credential.get("type") != "public-key" or not isinstance(resp, dict):
                raise ValueError("not a public-key credential")
            raw = unb64url(credential["rawId"])
            if credential.get("id") != b64url(raw):
                raise ValueError("id and rawId differ")
            return cls(raw, unb64url(resp["authenticatorData"]), unb64url(resp["clientDataJSON"]),
                       unb64url(resp["signature"]))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"malformed security-key response ({exc})",
                               obj="security key") from None


def verify_assertion(assertion: Assertion, key: SecurityKey, expected_challenge: bytes, *,
                     obj: str = "security key", require_uv: bool = True) -> int:
    """Check one assertion against an enrolled key and a challenge; its sign count.

    Raises IntegrityError naming the first check that fails.
    """
    if not hmac.compare_digest(assertion.credential_id, key.credential_id):
        raise IntegrityError("the assertion is by another credential", obj=obj)
    try:
        client = json.loads(assertion.client_data_json)
        if not isinstance(client, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("the security key's client data is not JSON", obj=obj) from None
    if client.get("type") != "webauthn.get":
        raise IntegrityError("the security key's client data is not a webauthn.get", obj=obj)
    try:
        got = unb64url(str(client.get("challenge", "")))
    except ValueError:
        got = b""
    if not hmac.compare_digest(got, expected_challenge):
        raise IntegrityError("the security key signed another challenge than this statement's "
                             "digest", obj=obj)
    if client.get("origin") not in key.origins:
        raise IntegrityError(f"the security key was used from origin {client.get('origin')!r}, "
                             "not an allowed one", obj=obj)
    if client.get("crossOrigin") is True:
        raise IntegrityError("the security key was used from a cross-origin frame", obj=obj)
    data = assertion.authenticator_data
    if len(data) < 37:
        raise IntegrityError("the security key's authenticator data is truncated", obj=obj)
    if not hmac.compare_digest(data[:32], hashlib.sha256(key.rp_id.encode()).digest()):
        raise IntegrityError(f"the assertion is for another relying party than {key.rp_id}",
                             obj=obj)
    flags = data[32]
    if not flags & _FLAG_UP:
        raise IntegrityError("the security key did not see the user's presence", obj=obj)
    if require_uv and not flags & _FLAG_UV:
        raise IntegrityError("the security key did not verify the user (PIN or biometric)",
                             obj=obj)
    signed = data + hashlib.sha256(assertion.client_data_json).digest()
    public = key.verifier
    try:
        if isinstance(public, Ed25519PublicKey):
            public.verify(assertion.signature, signed)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(assertion.signature, signed, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(assertion.signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise IntegrityError("the security key's signature does not verify", obj=obj) from None
    return int.from_bytes(data[33:37])


# -- envelopes ---------------------------------------------------------------------------


def envelope(payload_type: str, payload: bytes, signer: str, assertion: Assertion) -> str:
    """A DSSE envelope whose signature by ``signer`` (a key id) is a WebAuthn assertion."""
    return json.dumps({"payload": base64.b64encode(payload).decode("ascii"),
                       "payloadType": payload_type,
                       "signatures": [{"keyid": signer, "webauthn": assertion.to_json()}]},
                      sort_keys=True, separators=(",", ":"))


def is_webauthn(env: str) -> bool:
    """True if ``env`` may carry a security-key signature (a cheap test: verify to be sure)."""
    return '"webauthn"' in env


@dataclass(frozen=True)
class WebAuthnVerified:
    """A statement whose security-key signature verified, and by whom."""

    statement: dict[str, Any]
    signer: str
    credential_id: str
    sign_count: int


_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str], WebAuthnVerified] = OrderedDict()


def verify_envelope(env: str, kind: str, signers: Mapping[str, Enrollment], *,
                    obj: str = "statement") -> WebAuthnVerified:
    """The statement of ``kind`` in ``env`` if a signer's enrolled security key signed it.

    ``signers`` maps key ids to verified enrollments; a signature entry naming
    one of them must be a WebAuthn assertion by a credential in *that*
    enrollment. IntegrityError otherwise (a credential not enrolled for the
    signer: :data:`NOT_REGISTERED`).
    """
    expected_type = statements.payload_type(kind)
    try:
        data = json.loads(env)
        if data["payloadType"] != expected_type:
            raise IntegrityError(f"envelope has payload type {data['payloadType']!r}, expected "
                                 f"{expected_type!r}", obj=obj)
        payload = base64.b64decode(data["payload"], validate=True)
        entries = data["signatures"]
        if not isinstance(entries, list):
            raise TypeError("signatures is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"malformed signed envelope ({type(exc).__name__})", obj=obj) from None
    digest = challenge(expected_type, payload)
    for entry in entries:
        if not isinstance(entry, dict) or "webauthn" not in entry:
            continue
        kid = entry.get("keyid")
        who = signers.get(kid) if isinstance(kid, str) else None
        if who is None:
            continue
        assertion = Assertion.from_json(entry["webauthn"])
        key = next((k for k in who.security_keys
                    if hmac.compare_digest(k.credential_id, assertion.credential_id)), None)
        if key is None:
            raise IntegrityError(f"{NOT_REGISTERED} ({who.name}, credential "
                                 f"{b64url(assertion.credential_id)[:16]})", obj=obj,
                                 remedy="approve with a security key your officers enrolled")
        cache_key = (hashlib.sha256(env.encode()).hexdigest(), who.key_id,
                     hashlib.sha256(json.dumps(key.to_statement(), sort_keys=True).encode())
                     .hexdigest())
        with _cache_lock:
            hit = _cache.get(cache_key)
            if hit is not None:
                _cache.move_to_end(cache_key)
                return WebAuthnVerified(dict(hit.statement), hit.signer, hit.credential_id,
                                        hit.sign_count)
        count = verify_assertion(assertion, key, digest, obj=obj)
        try:
            statement = json.loads(payload)
        except ValueError:
            raise IntegrityError("signed payload is not JSON", obj=obj) from None
        if not isinstance(statement, dict) or statement.get("_type") != \
                f"strongroom.access.{kind}/v1":
            raise IntegrityError(f"signed statement is not a {kind}", obj=obj)
        out = WebAuthnVerified(statement, who.key_id, key.id, count)
        with _cache_lock:
            _cache[cache_key] = out
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return WebAuthnVerified(dict(statement), who.key_id, key.id, count)
    raise IntegrityError("no security-key signature by a trusted signer", obj=obj,
                         remedy="the statement was not signed by a trusted key; do not use it")

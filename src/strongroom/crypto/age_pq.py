"""age's hybrid post-quantum recipient: ML-KEM-768 + X25519 (``age1pq1…`` keys).

The C2SP age specification's ``mlkem768x25519`` recipient type, so that a file
recorded today cannot be opened by whoever later owns a quantum computer ("harvest
now, decrypt later") unless they also break X25519. Nothing here is new
cryptography; it is the spec's composition of standards:

- the KEM is MLKEM768-X25519 (X-Wing, HPKE KEM id 0x647a): ML-KEM-768 and
  X25519 combined with SHA3-256, as ``cryptography``'s HPKE implements it;
- the file key is sealed with HPKE (RFC 9180) base mode, HKDF-SHA256 and
  ChaCha20-Poly1305, info ``age-encryption.org/mlkem768x25519``, empty aad;
- a stanza is ``-> mlkem768x25519 <base64 enc>`` (enc: 1088-byte ML-KEM
  ciphertext then the 32-byte X25519 share) with a 32-byte body (the 16-byte
  file key and its tag);
- an identity is a 32-byte seed, Bech32 under ``AGE-SECRET-KEY-PQ-``; SHAKE256
  expands it to 96 bytes: the ML-KEM-768 seed (d || z) and the X25519 secret;
- a recipient is the 1216-byte encapsulation key (ML-KEM-768 public key then
  the X25519 public key), Bech32 under ``age1pq`` (longer than BIP 173 allows,
  as age writes it).

Use it like any other age key::

    identity = HybridIdentity.generate()
    blob = age.encrypt(data, [identity.recipient])
    assert age.decrypt(blob, [identity]) == data

``age.parse_recipient("age1pq1…")`` and ``age.parse_identities`` return these
types. Errors follow the testkit: a malformed stanza of this type (wrong
argument count, enc of the wrong length, a body that is not 32 bytes, an X25519
share that gives the all-zero secret) is a :class:`~strongroom.errors.HeaderError`;
a stanza that does not open under this key (a wrong tag, a corrupted ML-KEM or
X25519 half) is "not mine", so another identity may try.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from strongroom.crypto import bech32
from strongroom.crypto.age import FILE_KEY_SIZE, Stanza, b64decode_canonical, b64encode_unpadded
from strongroom.crypto.stream import TAG_SIZE
from strongroom.errors import HeaderError, InvalidInput

__all__ = [
    "ENC_SIZE",
    "HYBRID_TYPE",
    "IDENTITY_PREFIX",
    "PUBLIC_KEY_SIZE",
    "RECIPIENT_PREFIX",
    "HybridIdentity",
    "HybridRecipient",
]

HYBRID_TYPE = "mlkem768x25519"
_INFO = b"age-encryption.org/mlkem768x25519"
_RECIPIENT_HRP = "age1pq"
_IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
#: How the two key strings begin (the Bech32 human-readable part and its separator).
RECIPIENT_PREFIX = _RECIPIENT_HRP + "1"
IDENTITY_PREFIX = _IDENTITY_HRP + "1"
_SEED_SIZE = 32
_MLKEM_PUBLIC_SIZE = 1184
_MLKEM_CIPHERTEXT_SIZE = 1088
_X25519_SIZE = 32
PUBLIC_KEY_SIZE = _MLKEM_PUBLIC_SIZE + _X25519_SIZE
ENC_SIZE = _MLKEM_CIPHERTEXT_SIZE + _X25519_SIZE
_BODY_SIZE = FILE_KEY_SIZE + TAG_SIZE
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class HybridRecipient:
    """An ``age1pq1…`` public key: ML-KEM-768 and X25519 together."""

    __slots__ = ("_key", "_raw")

    def __init__(self, raw: bytes) -> None:
        """Build from the 1216-byte encapsulation key; prefer :meth:`parse`."""
        if len(raw) != PUBLIC_KEY_SIZE:
            raise InvalidInput(f"a hybrid public key is {PUBLIC_KEY_SIZE} bytes",
                               obj="age1pq recipient")
        try:
            mlkem = MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC_SIZE])
        except ValueError:
            raise InvalidInput("the ML-KEM-768 half is not a valid public key",
                               obj="age1pq recipient") from None
        x25519 = X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC_SIZE:])
        self._raw = bytes(raw)
        self._key = hpke.MLKEM768X25519PublicKey(mlkem, x25519)

    @classmethod
    def parse(cls, s: str) -> HybridRecipient:
        """Parse an ``age1pq1…`` string."""
        where = f"recipient {s[:16]}…" if len(s) > 16 else f"recipient {s!r}"
        try:
            hrp, data = bech32.decode(s)
        except ValueError as exc:
            raise InvalidInput(f"malformed recipient: {exc}", obj=where) from None
        if hrp != _RECIPIENT_HRP or s != s.lower():
            raise InvalidInput("not an age1pq hybrid recipient", obj=where)
        if len(data) != PUBLIC_KEY_SIZE:
            raise InvalidInput(f"wrong public key length ({len(data)} bytes, "
                               f"{PUBLIC_KEY_SIZE} expected)", obj=where)
        return cls(data)

    @property
    def public_bytes(self) -> bytes:
        """The raw 1216-byte encapsulation key."""
        return self._raw

    def __str__(self) -> str:
        return bech32.encode(_RECIPIENT_HRP, self._raw)

    def __repr__(self) -> str:
        return f"HybridRecipient({str(self)[:24]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRecipient) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Seal ``file_key`` to this key in one ``mlkem768x25519`` stanza (HPKE base mode)."""
        sealed = _SUITE.encrypt(bytes(file_key), self._key, info=_INFO)
        enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
        return [Stanza(type=HYBRID_TYPE, args=(b64encode_unpadded(enc).decode(),), body=body)]


class HybridIdentity:
    """An ``AGE-SECRET-KEY-PQ-1…`` secret key (a 32-byte seed); decrypts what its recipient can."""

    __slots__ = ("_key", "_public", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        """Expand a 32-byte seed into the two key pairs; prefer :meth:`generate` or :meth:`parse`."""
        if len(seed) != _SEED_SIZE:
            raise InvalidInput(f"a hybrid identity seed is {_SEED_SIZE} bytes", obj="age identity")
        expanded = hashlib.shake_256(seed).digest(96)
        mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519 = X25519PrivateKey.from_private_bytes(expanded[64:])
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem, self._x25519)
        self._seed = bytes(seed)
        self._public = (mlkem.public_key().public_bytes_raw()
                        + self._x25519.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> HybridIdentity:
        """A new random identity."""
        return cls(os.urandom(_SEED_SIZE))

    @classmethod
    def parse(cls, s: str) -> HybridIdentity:
        """Parse an ``AGE-SECRET-KEY-PQ-1…`` string (the string never appears in errors)."""
        try:
            hrp, data = bech32.decode(s)
        except ValueError as exc:
            raise InvalidInput(f"malformed secret key: {exc}", obj="age identity") from None
        if hrp != _IDENTITY_HRP.lower() or s != s.upper():
            raise InvalidInput("not an AGE-SECRET-KEY-PQ-1 identity", obj="age identity")
        if len(data) != _SEED_SIZE:
            raise InvalidInput("wrong secret key length", obj="age identity")
        return cls(data)

    @property
    def recipient(self) -> HybridRecipient:
        """The ``age1pq1…`` recipient that encrypts to this identity."""
        return HybridRecipient(self._public)

    def __str__(self) -> str:
        return bech32.encode(_IDENTITY_HRP, self._seed).upper()

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={str(self.recipient)[:24]}…)"

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first ``mlkem768x25519`` stanza that opens under this key."""
        for index, stanza in enumerate(stanzas):
            if stanza.type != HYBRID_TYPE:
                continue
            where = f"mlkem768x25519 stanza {index}"
            if len(stanza.args) != 1:
                raise HeaderError("wrong number of arguments", obj=where)
            enc = b64decode_canonical(stanza.args[0].encode("ascii"), "the encapsulated key")
            if len(enc) != ENC_SIZE:
                raise HeaderError(f"the encapsulated key is {len(enc)} bytes, {ENC_SIZE} expected",
                                  obj=where)
            if len(stanza.body) != _BODY_SIZE:
                raise HeaderError("the wrapped file key has the wrong length", obj=where)
            # The X25519 half must not be a low-order point (an all-zero shared secret):
            # HPKE would only fail to open, but the spec calls it a malformed stanza.
            try:
                self._x25519.exchange(X25519PublicKey.from_public_bytes(enc[_MLKEM_CIPHERTEXT_SIZE:]))
            except ValueError:
                raise HeaderError("the X25519 share is a low-order point", obj=where) from None
            try:
                return _SUITE.decrypt(enc + stanza.body, self._key, info=_INFO)
            except InvalidTag:
                continue  # addressed to another key, or corrupted
        return None

"""The ristretto255 prime-order group, through libsodium, with canonical encodings enforced.

Everything threshold key release computes lives in this group: shares and
polynomial coefficients are :data:`Scalar` values (Python ints reduced mod
:data:`ORDER`), public shares, commitments and partial decryptions are
:class:`Element` values (their canonical 32-byte ristretto255 encoding, checked
on the way in). libsodium (``libsodium23``, reached through ``pysodium``'s
loaded library) does the point arithmetic; scalar arithmetic is plain integer
arithmetic mod the group order, which is exact and fast enough for the few
operations a release needs.

Use it like this::

    x = random_scalar()
    X = base_mult(x)                     # x·G
    P = Element.decode(untrusted_bytes)  # InvalidInput unless canonical and not the identity
    Q = P.mult(x) + X

Hashing to the group and to scalars follows RFC 9380 (``expand_message_xmd``
with SHA-512, ``hash_to_ristretto255``) as RFC 9497 uses it; the conformance
tests check both against RFC 9497's ristretto255-SHA512 vectors.
"""

from __future__ import annotations

import ctypes
import hashlib
import secrets
from dataclasses import dataclass
from typing import Final

from strongroom.errors import InvalidInput

__all__ = [
    "ELEMENT_LEN",
    "GENERATOR",
    "IDENTITY",
    "ORDER",
    "SCALAR_LEN",
    "Element",
    "Scalar",
    "base_mult",
    "decode_scalar",
    "encode_scalar",
    "expand_message_xmd",
    "hash_to_group",
    "hash_to_scalar",
    "random_scalar",
]

#: The prime order of ristretto255 (RFC 9496 §4): 2^252 + 27742317777372353535851937790883648493.
ORDER: Final = 2**252 + 27742317777372353535851937790883648493
ELEMENT_LEN: Final = 32
SCALAR_LEN: Final = 32

#: A scalar mod :data:`ORDER`, as a Python int in ``[0, ORDER)``.
Scalar = int


def _libsodium() -> ctypes.CDLL:
    try:
        import pysodium  # type: ignore[import-untyped]  # no stubs; only its loaded library is used
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise InvalidInput(
            "pysodium is not installed",
            obj="threshold key release",
            remedy="install strongroom with its dependencies (pysodium, and Debian's libsodium23)",
        ) from exc
    lib = pysodium.sodium
    if not isinstance(lib, ctypes.CDLL):  # pragma: no cover
        raise InvalidInput("pysodium did not load libsodium", obj="threshold key release",
                           remedy="install Debian's libsodium23")
    return lib


_LIB: Final = _libsodium()
_IDENTITY_BYTES: Final = bytes(ELEMENT_LEN)


def encode_scalar(s: Scalar) -> bytes:
    """The 32-byte little-endian encoding of ``s`` mod the order."""
    return (s % ORDER).to_bytes(SCALAR_LEN, "little")


def decode_scalar(raw: bytes, *, what: str = "scalar") -> Scalar:
    """A canonical scalar encoding (32 bytes, little-endian, below the order); InvalidInput otherwise."""
    if len(raw) != SCALAR_LEN:
        raise InvalidInput(f"a scalar is {SCALAR_LEN} bytes, got {len(raw)}", obj=what,
                           remedy="send the canonical 32-byte encoding")
    value = int.from_bytes(raw, "little")
    if value >= ORDER:
        raise InvalidInput("scalar is not reduced below the group order", obj=what,
                           remedy="send the canonical encoding (reduced mod the order)")
    return value


def random_scalar() -> Scalar:
    """A uniformly random non-zero scalar (64 random bytes reduced, RFC 9497 §4.7)."""
    while True:
        s = int.from_bytes(secrets.token_bytes(64), "little") % ORDER
        if s:
            return s


@dataclass(frozen=True, slots=True)
class Element:
    """A ristretto255 group element, held as its canonical 32-byte encoding."""

    raw: bytes

    @classmethod
    def decode(cls, raw: bytes, *, what: str = "group element", allow_identity: bool = False) -> Element:
        """Check and wrap an untrusted encoding: canonical, on the group, and not the identity."""
        if len(raw) != ELEMENT_LEN:
            raise InvalidInput(f"a group element is {ELEMENT_LEN} bytes, got {len(raw)}", obj=what,
                               remedy="send the canonical ristretto255 encoding")
        if raw == _IDENTITY_BYTES:
            if allow_identity:
                return IDENTITY
            raise InvalidInput("group element is the identity", obj=what,
                               remedy="the sender is broken or hostile; do not use its value")
        if _LIB.crypto_core_ristretto255_is_valid_point(raw) != 1:
            raise InvalidInput("not a canonical ristretto255 encoding", obj=what,
                               remedy="the sender is broken or hostile; do not use its value")
        return cls(raw)

    def __add__(self, other: Element) -> Element:
        if self.raw == _IDENTITY_BYTES:
            return other
        if other.raw == _IDENTITY_BYTES:
            return self
        out = ctypes.create_string_buffer(ELEMENT_LEN)
        _LIB.crypto_core_ristretto255_add(out, self.raw, other.raw)
        return Element(out.raw)

    def __sub__(self, other: Element) -> Element:
        if other.raw == _IDENTITY_BYTES:
            return self
        out = ctypes.create_string_buffer(ELEMENT_LEN)
        _LIB.crypto_core_ristretto255_sub(out, self.raw, other.raw)
        return Element(out.raw)

    def mult(self, s: Scalar) -> Element:
        """``s·self``; the identity when ``s`` is zero or ``self`` is the identity."""
        s %= ORDER
        if s == 0 or self.raw == _IDENTITY_BYTES:
            return IDENTITY
        out = ctypes.create_string_buffer(ELEMENT_LEN)
        # libsodium refuses (-1) only when the result is the identity, impossible in a prime-order
        # group for s != 0 and self != identity; checked anyway rather than trusted.
        if _LIB.crypto_scalarmult_ristretto255(out, encode_scalar(s), self.raw) != 0:
            return IDENTITY
        return Element(out.raw)

    @property
    def is_identity(self) -> bool:
        """Whether this is the group's identity element."""
        return self.raw == _IDENTITY_BYTES

    def hex(self) -> str:
        """Lower-case hex of the encoding."""
        return self.raw.hex()


IDENTITY: Final = Element(_IDENTITY_BYTES)


def base_mult(s: Scalar) -> Element:
    """``s·G`` for the ristretto255 generator G; the identity for ``s == 0``."""
    s %= ORDER
    if s == 0:
        return IDENTITY
    out = ctypes.create_string_buffer(ELEMENT_LEN)
    if _LIB.crypto_scalarmult_ristretto255_base(out, encode_scalar(s)) != 0:
        return IDENTITY
    return Element(out.raw)


#: The ristretto255 generator G (RFC 9496).
GENERATOR: Final = base_mult(1)


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 §5.3.1 ``expand_message_xmd`` with SHA-512 (b = 64, s = 128 bytes)."""
    b_len, s_len = 64, 128
    if len(dst) > 255:
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    ell = -(-length // b_len)
    if ell > 255 or length > 65535:
        raise InvalidInput("expand_message_xmd output too long", obj="hash to group",
                           remedy="ask for at most 255 hash blocks")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(bytes(s_len) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha512(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(msg: bytes, dst: bytes) -> Element:
    """RFC 9380 ``hash_to_ristretto255``: 64 uniform bytes through the ristretto255 one-way map."""
    uniform = expand_message_xmd(msg, dst, 64)
    out = ctypes.create_string_buffer(ELEMENT_LEN)
    _LIB.crypto_core_ristretto255_from_hash(out, uniform)
    return Element(out.raw)


def hash_to_scalar(msg: bytes, dst: bytes) -> Scalar:
    """RFC 9497's HashToScalar for ristretto255: 64 uniform bytes, little-endian, reduced mod the order."""
    return int.from_bytes(expand_message_xmd(msg, dst, 64), "little") % ORDER

"""Ed25519 public keys that verify through libsodium: half the CPU of OpenSSL's verify.

Every key release verifies two Ed25519 signatures: the worker's RFC 9421
request signature and the key agent's release evidence. Through
``cryptography`` (OpenSSL) a verification costs ~118 us on the reference EPYC;
libsodium's ``crypto_sign_open`` through PyNaCl (PyCA; the library is in its
wheel, pinned by hash in ``requirements.lock``) costs ~61 us::

    public = public_key(raw)              # once per key; the caller caches it
    public.verify(signature, message)     # raises cryptography's InvalidSignature

:func:`public_key` returns an :class:`Ed25519PublicKey` (the same type, errors
and encodings as ``Ed25519PublicKey.from_public_bytes``, which parses the key
first, so a malformed key is refused exactly as before) whose ``verify`` is
libsodium's. libsodium is stricter than OpenSSL, never looser: it also refuses
public keys and signature ``R`` values of small order and non-canonical key
encodings, for which a signature proves nothing about a message. Both accept
and refuse Wycheproof's Ed25519 vectors alike (tests/crypto/test_ed25519.py).

Without PyNaCl importable (it is a required dependency; ``strongroom doctor``
names it missing) verification falls back to OpenSSL, with one warning in the
log: same answers, twice the CPU. :data:`BACKEND` says which one runs.

:func:`check_public_key` refuses a public key no key generation produces (a
non-canonical encoding, ``y >= p``; a point off the curve; one of the 8
small-order points, in any encoding; a point with a small-order component),
with :class:`~strongroom.errors.WeakPublicKey`. Under a small-order key
OpenSSL's verify accepts a forged signature (``R`` = identity, ``S`` = 0) for
*any* message, so the check runs wherever a key enters (a ``.pub`` file, an
enrollment, officer and witness keys) and again on a key read from the store
before a signature under it counts (:func:`dsse.verify_statement`): a key row
written by hand proves nothing either. :func:`public_key` checks its key too.
Results are cached per key (about 50 us the first time, through libsodium).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.errors import WeakPublicKey

__all__ = ["BACKEND", "SIGNATURE_BYTES", "SodiumEd25519PublicKey", "check_public_key",
           "checked", "public_key", "weakness"]

SIGNATURE_BYTES = 64

_log = logging.getLogger(__name__)

#: ``crypto_sign_open(signature || message, public key)``; raises on a bad signature.
_Open = Callable[[bytes, bytes], bytes]


def _load_libsodium() -> tuple[_Open, type[Exception]] | None:
    """PyNaCl's binding of libsodium's ``crypto_sign_open`` and its error, or None."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
    except ImportError:
        return None
    return crypto_sign_open, BadSignatureError


_SODIUM = _load_libsodium()
if _SODIUM is None:
    _log.warning("PyNaCl is not installed: Ed25519 signatures are verified with OpenSSL "
                 "(about twice the CPU); install strongroom's dependencies from "
                 "requirements.lock")
#: Which library verifies: "libsodium" (PyNaCl) or "openssl" (the fallback).
BACKEND = "openssl" if _SODIUM is None else "libsodium"


class SodiumEd25519PublicKey(Ed25519PublicKey):
    """An Ed25519 public key whose :meth:`verify` is libsodium's (see the module)."""

    __slots__ = ("_key", "_raw", "_sodium")

    def __init__(self, key: Ed25519PublicKey,
                 sodium: tuple[_Open, type[Exception]] | None) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()
        self._sodium = sodium

    def verify(self, signature: Any, data: Any) -> None:
        """Return if ``signature`` is this key's over ``data``; else raise InvalidSignature."""
        if self._sodium is None:
            self._key.verify(signature, data)
            return
        sig = bytes(signature)
        if len(sig) != SIGNATURE_BYTES:
            raise InvalidSignature
        sign_open, bad = self._sodium
        try:
            sign_open(sig + bytes(data), self._raw)
        except bad:
            raise InvalidSignature from None

    def public_bytes(self, encoding: serialization.Encoding,
                     format: serialization.PublicFormat) -> bytes:
        return self._key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SodiumEd25519PublicKey):
            other = other._key
        return self._key == other

    def __hash__(self) -> int:
        return hash(self._raw)

    def __copy__(self) -> SodiumEd25519PublicKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> SodiumEd25519PublicKey:
        return self

    def __repr__(self) -> str:
        return f"<SodiumEd25519PublicKey {self._raw.hex()}>"


def public_key(raw: bytes, *, obj: str | None = None) -> SodiumEd25519PublicKey:
    """The Ed25519 public key ``raw`` (32 bytes), verifying through libsodium.

    Raises ValueError for a malformed key, as ``Ed25519PublicKey.from_public_bytes``,
    and :class:`WeakPublicKey` (a ValueError too) for one :func:`check_public_key` refuses.
    """
    check_public_key(raw, obj=obj)
    return SodiumEd25519PublicKey(Ed25519PublicKey.from_public_bytes(raw), _SODIUM)


# -- public key validation ---------------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # the prime order of the base point
_D = -121665 * pow(121666, _P - 2, _P) % _P
_D2 = 2 * _D % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
_IDENTITY: _Point = (0, 1, 1, 0)


def _add(a: _Point, b: _Point) -> _Point:
    """RFC 8032 section 5.1.4 (complete: also doubles)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = t1 * _D2 * t2 % _P
    dd = z1 * 2 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _times(n: int, point: _Point) -> _Point:
    out = _IDENTITY
    for bit in bin(n)[2:]:
        out = _add(out, out)
        if bit == "1":
            out = _add(out, point)
    return out


def _is_identity(point: _Point) -> bool:
    x, y, z, _ = point
    return x % _P == 0 and (y - z) % _P == 0


def _decode(y: int, sign: int) -> _Point | None:
    """The point of ``y`` (< p) and x's sign bit (RFC 8032 5.1.3), or None off the curve."""
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    if v * x * x % _P != u:
        return None
    if x & 1 != sign:
        x = (_P - x) % _P
    return x, y, 1, x * y % _P


def _small_order(point: _Point) -> bool:
    return _is_identity(_times(8, point))


def _reason(raw: bytes) -> str | None:
    """Why ``raw`` is not a valid Ed25519 public key (pure Python), or None."""
    if len(raw) != 32:
        return f"is {len(raw)} bytes, not 32"
    encoded = int.from_bytes(raw, "little")
    y, sign = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= _P:
        point = _decode(y - _P, sign)
        of = " of a small-order point" if point is not None and _small_order(point) else ""
        return f"is a non-canonical encoding{of} (y >= 2^255 - 19)"
    point = _decode(y, sign)
    if point is None:
        return "is not a point on the Ed25519 curve"
    if point[0] == 0 and sign:
        small = " of a small-order point" if _small_order(point) else ""
        return f"is a non-canonical encoding{small} (x = 0 with the sign bit set)"
    if _small_order(point):
        return ("is a point of small order: a forged signature verifies under it for "
                "any message")
    if not _is_identity(_times(_L, point)):
        return "has a small-order component (it is not in the prime-order subgroup)"
    return None


def _load_is_valid_point() -> Callable[[bytes], bool] | None:
    """libsodium's ``crypto_core_ed25519_is_valid_point`` (the checks of :func:`_reason`)."""
    try:
        from nacl.bindings import crypto_core_ed25519_is_valid_point, has_crypto_core_ed25519
    except ImportError:
        return None
    return crypto_core_ed25519_is_valid_point if has_crypto_core_ed25519 else None


_IS_VALID_POINT = _load_is_valid_point()


@functools.lru_cache(maxsize=8192)
def weakness(raw: bytes) -> str | None:
    """Why ``raw`` cannot be an honest Ed25519 public key, or None when it is sound.

    Refused: not 32 bytes, a non-canonical encoding (``y >= p``, or ``x = 0``
    with the sign bit set), a point off the curve, a point of small order (the
    8-torsion) or one outside the prime-order subgroup. libsodium answers the
    common case (~50 us); the reason is worked out in Python (a few ms), which
    also answers alone without PyNaCl. Cached per key.
    """
    raw = bytes(raw)
    if _IS_VALID_POINT is not None and len(raw) == 32 and _IS_VALID_POINT(raw):
        return None
    return _reason(raw)


def check_public_key(raw: bytes, *, obj: str | None = None) -> bytes:
    """``raw`` if it is a sound Ed25519 public key; else raise :class:`WeakPublicKey`.

    ``obj`` names where the key came from (a file, a principal); the message
    gives the key's id (16 hex digits of SHA-256 of the key, as ``dsse.key_id``).
    """
    reason = weakness(bytes(raw))
    if reason is None:
        return raw
    kid = hashlib.sha256(bytes(raw)).hexdigest()[:16]
    raise WeakPublicKey(f"Ed25519 public key {kid} is refused: it {reason}", obj=obj)


def checked(key: Ed25519PublicKey, *, obj: str | None = None) -> Ed25519PublicKey:
    """``key`` if :func:`check_public_key` accepts its bytes; else raise :class:`WeakPublicKey`."""
    check_public_key(key.public_bytes_raw(), obj=obj)
    return key

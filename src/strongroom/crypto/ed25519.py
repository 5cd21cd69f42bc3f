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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["BACKEND", "SIGNATURE_BYTES", "SodiumEd25519PublicKey", "public_key"]

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


def public_key(raw: bytes) -> SodiumEd25519PublicKey:
    """The Ed25519 public key ``raw`` (32 bytes), verifying through libsodium.

    Raises ValueError for a malformed key, as ``Ed25519PublicKey.from_public_bytes``.
    """
    return SodiumEd25519PublicKey(Ed25519PublicKey.from_public_bytes(raw), _SODIUM)

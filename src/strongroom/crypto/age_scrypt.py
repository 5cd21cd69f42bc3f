"""age's scrypt passphrase recipient and identity (C2SP age spec, "scrypt recipient stanza").

A stanza ``-> scrypt <base64 salt> <log2 N>`` whose body is the file key sealed
with ChaCha20-Poly1305 (zero nonce) under
``scrypt(passphrase, "age-encryption.org/v1/scrypt" || salt, N, r=8, p=1, 32)``.
The spec's rules, all enforced here and in :mod:`strongroom.crypto.age`:

- an scrypt stanza must be the only stanza of its header (a passphrase file
  has no other way in); encrypting to a :class:`ScryptRecipient` and another
  recipient is refused, and so is reading such a file;
- the salt is 16 bytes in canonical unpadded base64; the work factor is a
  decimal without sign or leading zero;
- the reader bounds the work factor: **at most** :data:`MAX_WORK_FACTOR` (20,
  i.e. N = 2^20: 1 GiB of memory and a few seconds of one core), so a hostile
  file cannot make a reader spin or swap. Above it the stanza is a
  :class:`~strongroom.errors.HeaderError` naming the bound. Writers use
  :data:`DEFAULT_WORK_FACTOR` (18, as the ``age`` tool does).

Use it like this::

    blob = age.encrypt(data, [ScryptRecipient("correct horse")])
    age.decrypt(blob, [ScryptIdentity("correct horse")])

``ScryptIdentity`` also takes a callable that returns the passphrase, called
only when the file actually holds an scrypt stanza (the CLI prompts then).
Passphrases never appear in errors or reprs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from strongroom.crypto.age import FILE_KEY_SIZE, Stanza, b64decode_canonical, b64encode_unpadded
from strongroom.crypto.stream import TAG_SIZE
from strongroom.errors import HeaderError, InvalidInput

__all__ = [
    "DEFAULT_WORK_FACTOR",
    "MAX_WORK_FACTOR",
    "SCRYPT_TYPE",
    "ScryptIdentity",
    "ScryptRecipient",
]

SCRYPT_TYPE = "scrypt"
_LABEL = b"age-encryption.org/v1/scrypt"
_SALT_SIZE = 16
#: The work factor (log2 N) strongroom writes: age's default.
DEFAULT_WORK_FACTOR = 18
#: The largest work factor strongroom reads or writes: N = 2^20, 1 GiB with r = 8.
MAX_WORK_FACTOR = 20
_R = 8
_WORK_FACTOR_SYNTAX = re.compile(r"[1-9][0-9]*", re.ASCII)
_ZERO_NONCE = bytes(12)

Passphrase = str | bytes


def _as_bytes(passphrase: Passphrase) -> bytes:
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not data:
        raise InvalidInput("the passphrase is empty", obj="passphrase",
                           remedy="give a non-empty passphrase")
    return data


def _derive(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    n = 1 << work_factor
    return hashlib.scrypt(passphrase, salt=_LABEL + salt, n=n, r=_R, p=1, dklen=32,
                          maxmem=128 * _R * n + (16 << 20))


class ScryptRecipient:
    """Encrypts to a passphrase; must be the file's only recipient."""

    __slots__ = ("_passphrase", "work_factor")

    def __init__(self, passphrase: Passphrase, *, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise InvalidInput(f"the scrypt work factor must be 1..{MAX_WORK_FACTOR}",
                               obj="scrypt recipient")
        self._passphrase = _as_bytes(passphrase)
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Seal ``file_key`` under a key derived from the passphrase and a fresh salt."""
        salt = os.urandom(_SALT_SIZE)
        key = _derive(self._passphrase, salt, self.work_factor)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, bytes(file_key), None)
        args = (b64encode_unpadded(salt).decode(), str(self.work_factor))
        return [Stanza(type=SCRYPT_TYPE, args=args, body=body)]


class ScryptIdentity:
    """Decrypts a passphrase-encrypted file; the passphrase may be asked for lazily."""

    __slots__ = ("_get", "_passphrase", "max_work_factor")

    def __init__(self, passphrase: Passphrase | Callable[[], Passphrase], *,
                 max_work_factor: int = MAX_WORK_FACTOR) -> None:
        if not 1 <= max_work_factor <= MAX_WORK_FACTOR:
            raise InvalidInput(f"the largest scrypt work factor strongroom reads is "
                               f"{MAX_WORK_FACTOR}", obj="scrypt identity")
        self._get = passphrase if callable(passphrase) else None
        self._passphrase = None if callable(passphrase) else _as_bytes(passphrase)
        self.max_work_factor = max_work_factor

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"

    def _secret(self) -> bytes:
        if self._passphrase is None:
            assert self._get is not None
            self._passphrase = _as_bytes(self._get())
        return self._passphrase

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from an ``scrypt`` stanza this passphrase opens, else None."""
        for index, stanza in enumerate(stanzas):
            if stanza.type != SCRYPT_TYPE:
                continue
            where = f"scrypt stanza {index}"
            if len(stanza.args) != 2:
                raise HeaderError("wrong number of arguments", obj=where)
            salt = b64decode_canonical(stanza.args[0].encode("ascii"), "the scrypt salt")
            if len(salt) != _SALT_SIZE:
                raise HeaderError(f"the salt is {len(salt)} bytes, {_SALT_SIZE} expected", obj=where)
            if not _WORK_FACTOR_SYNTAX.fullmatch(stanza.args[1]):
                raise HeaderError("the work factor is not a decimal number without sign "
                                  "or leading zero", obj=where)
            # More than three digits is above any bound (and int() of thousands is slow).
            work_factor = int(stanza.args[1]) if len(stanza.args[1]) <= 3 else 1000
            if work_factor > self.max_work_factor:
                raise HeaderError(
                    f"work factor {stanza.args[1][:8]} is above the bound of {self.max_work_factor} "
                    "(a hostile file could make the reader spin)", obj=where,
                    remedy=f"re-encrypt with a work factor of at most {self.max_work_factor}")
            if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
                raise HeaderError("the wrapped file key has the wrong length", obj=where)
            key = _derive(self._secret(), salt, work_factor)
            try:
                return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue  # another passphrase
        return None

"""age v1 file encryption (C2SP age specification), fast and with random access.

One module because it implements the age v1 spec end to end (header, stanzas,
STREAM payload, random-access reader), which its test vectors exercise as one unit.

An age file is a text header that wraps a random 16-byte *file key* once per
recipient (one *stanza* each) and authenticates itself with an HMAC, followed
by a binary payload: a 16-byte nonce and 64 KiB ChaCha20-Poly1305 chunks
(STREAM). Files written here are read by the ``age`` tool and vice versa.

``cipher="aes-256-gcm"`` writes strongroom's FIPS-approved payload mode
instead: the same header and STREAM with AES-256-GCM chunks, under the first
line ``strongroom/aes-256-gcm/v1`` (so the ``age`` tool refuses it as not age);
readers here take the cipher from that line (docs/formats.md).

Use it like this::

    identity = X25519Identity.generate()
    blob = encrypt(data, [identity.recipient])
    assert decrypt(blob, [identity]) == data

    # big files: streams in, streams out, chunks sealed in parallel threads
    encrypt_stream(src_file, dst_file, [parse_recipient("age1...")])
    decrypt_stream(src_file, dst_file, parse_identities(identity_file_text))

    # random access, e.g. over an mmap or an S3 ranged reader
    with AgeReader.open(BufferSource(mm), identities) as reader:
        reader.read(start, end)      # decrypts only the chunks covering the range
        reader.decrypt_into(buffer)  # whole payload into a preallocated buffer

New kinds of keys plug in as a :class:`Recipient` (wraps a file key into
stanzas) and an :class:`AgeIdentity` (unwraps one, returning None for "not mine").
The rest of the age v1 spec lives beside this module on those interfaces:
:mod:`strongroom.crypto.age_pq` (the hybrid ML-KEM-768 + X25519 ``age1pq1…``
keys, which :func:`parse_recipient` and :func:`parse_identities` also return),
:mod:`strongroom.crypto.age_scrypt` (passphrases; an scrypt stanza stands alone)
and :mod:`strongroom.crypto.age_armor` (ASCII armor).

What not to do:

- Do not use plaintext that a failed call has produced. ``decrypt_stream``
  writes only authenticated chunks, but a file that fails part-way has
  written a prefix of its plaintext: treat the whole output as void.
- Do not reuse a file key for two files, and do not pass ``file_key`` unless
  a key service manages it; the default draws a fresh random one.
- Do not trust ``AgeReader`` for a source that may change under it: each read
  is authenticated, but two reads may come from different versions.
- Never log or print identities, file keys or plaintext; error messages here
  name objects and chunk indices only.

Errors: :class:`~strongroom.errors.HeaderError` (malformed header),
:class:`~strongroom.errors.HmacError` (header altered or wrong key),
:class:`~strongroom.errors.PayloadError` (a chunk failed authentication, or the
file is truncated or extended), :class:`~strongroom.errors.NoIdentityMatched`,
and :class:`~strongroom.errors.InvalidInput` for bad keys and arguments.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto import bech32
from strongroom.crypto.stream import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    CHUNK_SIZE,
    CIPHERS,
    ENCRYPTED_CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    BlockReader,
    PayloadCipher,
    PayloadGeometry,
    _frozen_delattr,
    _frozen_setattr,
    _init_frozen,
    first_failure,
    io_buffer,
    payload_key,
    sealed_size,
)
from strongroom.errors import HeaderError, HmacError, InvalidInput, NoIdentityMatched, PayloadError

if TYPE_CHECKING:
    from types import ModuleType

    from typing_extensions import Buffer

__all__ = [
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "CHUNK_SIZE",
    "CIPHERS",
    "FILE_KEY_SIZE",
    "MAX_HEADER_SIZE",
    "MAX_LINE_SIZE",
    "MAX_STANZAS",
    "TAG_SIZE",
    "AgeIdentity",
    "AgeReader",
    "BufferSource",
    "ByteSource",
    "Header",
    "Recipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "b64decode_canonical",
    "b64encode_unpadded",
    "build_header",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "new_file_key",
    "parse_header",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "read_header",
]

FILE_KEY_SIZE = 16
#: Limits on what a header may hold; beyond them the file is refused as malformed.
MAX_HEADER_SIZE = 1024 * 1024
MAX_LINE_SIZE = 16 * 1024
MAX_STANZAS = 4096

_INTRO = b"age-encryption.org/v1\n"
#: strongroom's AES-256-GCM payload mode: an age header in every other respect, under its
#: own first line, so an age tool refuses the file as "not age" instead of failing on a chunk.
AES_INTRO = b"strongroom/aes-256-gcm/v1\n"
_INTROS = {_INTRO: CHACHA20_POLY1305, AES_INTRO: AES_256_GCM}
_INTRO_OF = {cipher: intro for intro, cipher in _INTROS.items()}
_VERSION_PREFIX = b"age-encryption.org/"
_STANZA_PREFIX = b"-> "
_FOOTER_PREFIX = b"---"
_MAC_SIZE = 32
#: What follows "---" on the closing line: a space, 43 base64 characters, a newline.
_MAC_LINE_TAIL = 1 + 43 + 1
_COLUMNS_PER_LINE = 64
_BYTES_PER_LINE = _COLUMNS_PER_LINE // 4 * 3
_HEADER_LABEL = b"header"
_X25519_TYPE = "X25519"
_SCRYPT_TYPE = "scrypt"
_X25519_LABEL = b"age-encryption.org/v1/X25519"
_X25519_SIZE = 32
_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "AGE-SECRET-KEY-"
_ZERO_NONCE = bytes(12)
_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_READ_STEP = 64 * 1024
#: First read when looking for a header in a random-access source (headers are small).
_HEADER_PROBE = 4096
#: Chunks per block in the streaming paths (4 MiB of plaintext per block).
_STREAM_BLOCK_CHUNKS = 64
#: Chunks per block on the regular-file paths (1 MiB of plaintext): a worker reads a
#: block and seals or opens it while the block is still in its core's cache (4 MiB L2
#: here: a 4 MiB block read on one core and sealed on another cost ~10% more CPU).
#: An input of one block or less is done inline, without starting the worker pool.
_FILE_BLOCK_CHUNKS = 16
#: Blocks in flight per worker on those paths (reused buffers, written in order).
_FILE_BLOCKS_PER_WORKER = 2


# -- stanzas and the two interfaces -------------------------------------------


class Stanza:
    """One recipient stanza of an age header: a type, its arguments and a body (immutable).

    A plain class, not a dataclass: ``dataclasses`` imports ``inspect`` (with ``ast``
    and ``dis``), ~10 ms of every ``strongroom encrypt`` start-up.
    """

    __slots__ = ("args", "body", "type")
    type: str
    args: tuple[str, ...]
    body: bytes

    def __init__(self, type: str, args: tuple[str, ...], body: bytes) -> None:
        _init_frozen(self, type=type, args=args, body=body)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Stanza)
        return (self.type, self.args, self.body) == (other.type, other.args, other.body)

    def __hash__(self) -> int:
        return hash((self.type, self.args, self.body))

    def __repr__(self) -> str:
        return f"Stanza(type={self.type!r}, args={self.args!r}, body={self.body!r})"

    __setattr__ = _frozen_setattr
    __delattr__ = _frozen_delattr


@runtime_checkable
class Recipient(Protocol):
    """Something a file can be encrypted to: wraps a file key into stanzas."""

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return the stanzas that carry ``file_key`` for this recipient."""
        ...


@runtime_checkable
class AgeIdentity(Protocol):
    """Something that can decrypt: unwraps the file key from a header's stanzas."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key, None if no stanza is for this identity.

        Raise :class:`HeaderError` for a malformed stanza of this identity's type.
        """
        ...


# -- base64 as the header uses it: unpadded, canonical --------------------------


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes, what: str) -> bytes:
    """Decode unpadded, canonical standard base64; anything else is a HeaderError."""
    if not _B64_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise HeaderError(f"{what} is not valid unpadded base64", obj="age header")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise HeaderError(f"{what} is not valid base64", obj="age header") from None
    if _b64encode(data) != text:
        raise HeaderError(f"{what} is not canonical base64", obj="age header")
    return data


#: Header base64 (unpadded, canonical) for recipient types defined in other modules.
b64encode_unpadded = _b64encode
b64decode_canonical = _b64decode


def _is_valid_arg(s: str) -> bool:
    return bool(s) and all(33 <= ord(c) <= 126 for c in s)


# -- the header -----------------------------------------------------------------


class Header:
    """A parsed age header; ``size`` is its length in bytes (the payload starts there).

    ``cipher`` is the payload's AEAD, named by the first line: ``chacha20-poly1305``
    (``age-encryption.org/v1``) or ``aes-256-gcm`` (``strongroom/aes-256-gcm/v1``).
    Immutable, compared by value (a plain class for start-up, like :class:`Stanza`).
    """

    __slots__ = ("cipher", "mac", "size", "stanzas")
    stanzas: tuple[Stanza, ...]
    mac: bytes
    size: int
    cipher: str

    def __init__(self, stanzas: tuple[Stanza, ...], mac: bytes, size: int,
                 cipher: str = CHACHA20_POLY1305) -> None:
        _init_frozen(self, stanzas=stanzas, mac=mac, size=size, cipher=cipher)

    def _key(self) -> tuple[tuple[Stanza, ...], bytes, int, str]:
        return (self.stanzas, self.mac, self.size, self.cipher)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Header)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Header(stanzas={self.stanzas!r}, mac={self.mac!r}, size={self.size!r}, "
                f"cipher={self.cipher!r})")

    __setattr__ = _frozen_setattr
    __delattr__ = _frozen_delattr

    @property
    def mac_input_size(self) -> int:
        """Length of the prefix the MAC covers: everything up to and including ``---``."""
        return self.size - _MAC_LINE_TAIL


def _header_error(message: str) -> HeaderError:
    return HeaderError(message, obj="age header")


def parse_header(data: bytes | bytearray | memoryview, *, complete: bool = True) -> Header | None:
    """Parse the header at the start of ``data``.

    Returns None when ``data`` ends before the header does and ``complete`` is
    false (read more and call again); raises :class:`HeaderError` when the
    header is malformed, too large, or (``complete``) truncated.
    """
    buf = bytes(data[: MAX_HEADER_SIZE + 1]) if len(data) > MAX_HEADER_SIZE else bytes(data)
    pos = 0

    def next_line() -> bytes | None:
        nonlocal pos
        end = buf.find(b"\n", pos, pos + MAX_LINE_SIZE + 1)
        if end < 0:
            if len(buf) - pos > MAX_LINE_SIZE:
                raise _header_error(f"header line longer than {MAX_LINE_SIZE} bytes")
            if len(buf) > MAX_HEADER_SIZE:
                raise _header_error(f"header larger than {MAX_HEADER_SIZE} bytes")
            if complete:
                raise _header_error("the header is truncated")
            return None
        line = buf[pos:end]
        pos = end + 1
        if pos > MAX_HEADER_SIZE:
            raise _header_error(f"header larger than {MAX_HEADER_SIZE} bytes")
        return line

    intro = next_line()
    if intro is None:
        if not any(known.startswith(buf) for known in _INTROS):
            raise _header_error("not an age file (unknown first line)")
        return None
    cipher = _INTROS.get(intro + b"\n")
    if cipher is None:
        if intro.startswith(_VERSION_PREFIX):
            raise _header_error("unsupported age format version")
        raise _header_error("not an age file (unknown first line)")

    stanzas: list[Stanza] = []
    while True:
        start = pos
        line = next_line()
        if line is None:
            return None
        if line.startswith(_FOOTER_PREFIX):
            parts = line.split(b" ")
            if parts[0] != _FOOTER_PREFIX or len(parts) != 2:
                raise _header_error("malformed closing (MAC) line")
            mac = _b64decode(parts[1], "the header MAC")
            if len(mac) != _MAC_SIZE:
                raise _header_error("the header MAC has the wrong length")
            return Header(stanzas=tuple(stanzas), mac=mac, size=pos, cipher=cipher)
        if not line.startswith(_STANZA_PREFIX):
            raise _header_error(f"malformed line at byte {start}: expected a stanza or the MAC")
        if len(stanzas) >= MAX_STANZAS:
            raise _header_error(f"too many stanzas (more than {MAX_STANZAS})")
        try:
            args = line[len(_STANZA_PREFIX) :].decode("ascii").split(" ")
        except UnicodeDecodeError:
            raise _header_error(f"stanza {len(stanzas)} has a non-ASCII argument") from None
        if not all(_is_valid_arg(a) for a in args):
            raise _header_error(f"stanza {len(stanzas)} has an empty or invalid argument")
        body = bytearray()
        while True:
            body_line = next_line()
            if body_line is None:
                return None
            chunk = _b64decode(body_line, f"body of stanza {len(stanzas)}")
            if len(chunk) > _BYTES_PER_LINE:
                raise _header_error(f"body of stanza {len(stanzas)} has a line over 64 columns")
            body += chunk
            if len(chunk) < _BYTES_PER_LINE:  # a short line ends the body
                break
        stanzas.append(Stanza(type=args[0], args=tuple(args[1:]), body=bytes(body)))


def _marshal_stanza(stanza: Stanza) -> bytes:
    words = (stanza.type, *stanza.args)
    if not all(_is_valid_arg(w) for w in words):
        raise InvalidInput(
            "a recipient produced a stanza with an empty or invalid argument",
            obj=f"stanza {stanza.type!r}",
        )
    encoded = _b64encode(stanza.body)
    lines = [encoded[i : i + _COLUMNS_PER_LINE] for i in range(0, len(encoded), 64)]
    if not lines or len(lines[-1]) == _COLUMNS_PER_LINE:
        lines.append(b"")  # the body always ends with a short (possibly empty) line
    return b"-> " + " ".join(words).encode("ascii") + b"\n" + b"\n".join(lines) + b"\n"


def _header_hmac(file_key: bytes | bytearray, mac_input: bytes | memoryview) -> hmac.HMAC:
    """HMAC-SHA256 of ``mac_input`` under the header key, not yet finalized.

    cryptography's HMAC, not the standard library's: ``hashlib`` loads a second
    OpenSSL (``_hashlib``, ~9 ms of every ``strongroom encrypt`` start-up).
    """
    hmac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HEADER_LABEL).derive(
        file_key
    )
    mac = hmac.HMAC(hmac_key, hashes.SHA256())
    mac.update(mac_input)
    return mac


def _header_mac(file_key: bytes | bytearray, mac_input: bytes | memoryview) -> bytes:
    return _header_hmac(file_key, mac_input).finalize()


def _check_cipher(cipher: str) -> None:
    if cipher not in CIPHERS:
        raise InvalidInput(f"unknown payload cipher {cipher!r}", obj="cipher",
                           remedy=f"use one of {', '.join(CIPHERS)}")


def build_header(file_key: bytes | bytearray, recipients: Sequence[Recipient], *,
                 cipher: str = CHACHA20_POLY1305) -> bytes:
    """Serialize a header that wraps ``file_key`` for every recipient, with its MAC.

    ``cipher`` picks the first line: age's for ChaCha20-Poly1305, strongroom's
    AES-256-GCM mode otherwise (the MAC covers it, and manifests pin it).
    """
    _check_cipher(cipher)
    if len(file_key) != FILE_KEY_SIZE:
        raise InvalidInput(f"a file key must be {FILE_KEY_SIZE} bytes", obj="file key")
    if not recipients:
        raise InvalidInput("no recipients given", remedy="pass at least one recipient")
    parts = [_INTRO_OF[cipher]]
    count = 0
    for recipient in recipients:
        for stanza in recipient.wrap(bytes(file_key)):
            parts.append(_marshal_stanza(stanza))
            count += 1
    if count > MAX_STANZAS:
        raise InvalidInput(f"too many stanzas (more than {MAX_STANZAS})", obj="recipients")
    if count > 1 and any(p.startswith(b"-> " + _SCRYPT_TYPE.encode() + b" ") for p in parts):
        raise InvalidInput("a passphrase (scrypt) must be the file's only recipient",
                           obj="recipients", remedy="encrypt with -p alone, or to keys alone")
    parts.append(_FOOTER_PREFIX)
    signed = b"".join(parts)
    if len(signed) > MAX_HEADER_SIZE - 64:
        raise InvalidInput(f"header larger than {MAX_HEADER_SIZE} bytes", obj="recipients")
    return signed + b" " + _b64encode(_header_mac(file_key, signed)) + b"\n"


def _verify_mac(header: Header, header_bytes: bytes | memoryview, file_key: bytes) -> None:
    try:  # verify() compares in constant time
        _header_hmac(file_key, header_bytes[: header.mac_input_size]).verify(header.mac)
    except InvalidSignature:
        raise HmacError(
            "bad header MAC: the header was altered or the file key is wrong", obj="age header"
        ) from None


def _unwrap(header: Header, identities: Sequence[AgeIdentity]) -> bytes:
    if not identities:
        raise InvalidInput("no identities given", remedy="pass at least one identity")
    # A passphrase file must have no other way in (spec: scrypt stanzas stand alone).
    if len(header.stanzas) > 1 and any(st.type == _SCRYPT_TYPE for st in header.stanzas):
        raise _header_error("an scrypt stanza must be the only stanza in the header")
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            if len(file_key) != FILE_KEY_SIZE:
                raise _header_error("an identity unwrapped a file key of the wrong length")
            return file_key
    raise NoIdentityMatched(
        f"no identity matched any of the {len(header.stanzas)} recipient stanza(s)",
        obj="age file",
    )


def new_file_key() -> bytes:
    """A fresh random 16-byte file key."""
    return os.urandom(FILE_KEY_SIZE)


# -- X25519 recipients and identities -------------------------------------------


def _x25519_binding() -> ModuleType | None:
    """cryptography's X25519 functions, called directly where that is safe, else None.

    ``X25519PublicKey.from_public_bytes`` and ``X25519PrivateKey.generate`` /
    ``from_private_bytes`` import cryptography's OpenSSL backend module (RSA, EC,
    padding: ~10 ms of CPU, a tenth of ``strongroom encrypt``'s start-up) only to
    refuse X25519 when OpenSSL runs in FIPS mode. The same refusal is kept: in FIPS
    mode, or if a cryptography release moves the binding, the public API is used.
    """
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        binding: ModuleType = rust_openssl.x25519
        return None if rust_openssl.is_fips_enabled() else binding
    except (ImportError, AttributeError):
        return None


_X25519 = _x25519_binding()


def _x25519_public_key(data: bytes) -> X25519PublicKey:
    if _X25519 is None:
        return X25519PublicKey.from_public_bytes(data)
    key: X25519PublicKey = _X25519.from_public_bytes(data)
    return key


def _x25519_private_key(data: bytes | None = None) -> X25519PrivateKey:
    """The private key of these 32 bytes, or a new random one."""
    if _X25519 is None:
        return (X25519PrivateKey.generate() if data is None
                else X25519PrivateKey.from_private_bytes(data))
    key: X25519PrivateKey = (_X25519.generate_key() if data is None
                             else _X25519.from_private_bytes(data))
    return key


def _x25519_wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=share + recipient, info=_X25519_LABEL
    ).derive(shared)


class X25519Recipient:
    """An ``age1...`` public key: the standard age recipient."""

    __slots__ = ("_key",)

    def __init__(self, public_key: X25519PublicKey) -> None:
        self._key = public_key

    @classmethod
    def parse(cls, s: str) -> X25519Recipient:
        """Parse an ``age1...`` recipient string."""
        try:
            hrp, data = bech32.decode(s)
        except ValueError as exc:
            raise InvalidInput(f"malformed recipient: {exc}", obj=f"recipient {s!r}") from None
        if hrp != _RECIPIENT_HRP or s != s.lower():
            raise InvalidInput("not an age1 X25519 recipient", obj=f"recipient {s!r}")
        if len(data) != _X25519_SIZE:
            raise InvalidInput("wrong public key length", obj=f"recipient {s!r}")
        return cls(_x25519_public_key(data))

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_bytes_raw()

    def __str__(self) -> str:
        return bech32.encode(_RECIPIENT_HRP, self.public_bytes)

    def __repr__(self) -> str:
        return f"X25519Recipient({self!s})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and self.public_bytes == other.public_bytes

    def __hash__(self) -> int:
        return hash(self.public_bytes)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Wrap ``file_key`` in one ``X25519`` stanza under a fresh ephemeral key."""
        ephemeral = _x25519_private_key()
        share = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(self._key)
        except ValueError:
            raise InvalidInput("the recipient is a low-order point", obj=str(self)) from None
        wrap_key = _x25519_wrap_key(shared, share, self.public_bytes)
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, bytes(file_key), None)
        return [Stanza(type=_X25519_TYPE, args=(_b64encode(share).decode(),), body=body)]


class X25519Identity:
    """An ``AGE-SECRET-KEY-1...`` secret key: decrypts what its recipient can."""

    __slots__ = ("_key", "_public")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> X25519Identity:
        """A new random identity."""
        return cls(_x25519_private_key())

    @classmethod
    def parse(cls, s: str) -> X25519Identity:
        """Parse an ``AGE-SECRET-KEY-1...`` string (the string never appears in errors)."""
        try:
            hrp, data = bech32.decode(s)
        except ValueError as exc:
            raise InvalidInput(f"malformed secret key: {exc}", obj="age identity") from None
        if hrp != _IDENTITY_HRP.lower() or s != s.upper():
            raise InvalidInput("not an AGE-SECRET-KEY-1 identity", obj="age identity")
        if len(data) != _X25519_SIZE:
            raise InvalidInput("wrong secret key length", obj="age identity")
        return cls(_x25519_private_key(data))

    @property
    def recipient(self) -> X25519Recipient:
        """The public recipient that encrypts to this identity."""
        return X25519Recipient(self._key.public_key())

    def __str__(self) -> str:
        return bech32.encode(_IDENTITY_HRP, self._key.private_bytes_raw()).upper()

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient!s})"

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first ``X25519`` stanza addressed to this key."""
        for index, stanza in enumerate(stanzas):
            if stanza.type != _X25519_TYPE:
                continue
            where = f"X25519 stanza {index}"
            if len(stanza.args) != 1:
                raise HeaderError("wrong number of arguments", obj=where)
            share = _b64decode(stanza.args[0].encode("ascii"), "the ephemeral share")
            if len(share) != _X25519_SIZE:
                raise HeaderError("the ephemeral share has the wrong length", obj=where)
            if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
                raise HeaderError("the wrapped file key has the wrong length", obj=where)
            try:
                shared = self._key.exchange(_x25519_public_key(share))
            except ValueError:
                shared = bytes(_X25519_SIZE)
            if not any(shared):
                raise HeaderError("the ephemeral share is a low-order point", obj=where)
            wrap_key = _x25519_wrap_key(shared, share, self._public)
            try:
                return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue  # addressed to another key
        return None


#: How hybrid key strings begin (:mod:`strongroom.crypto.age_pq`'s ``RECIPIENT_PREFIX`` and
#: ``IDENTITY_PREFIX``), known here so an X25519 key is parsed without loading ML-KEM,
#: HPKE and ``hashlib`` (~10 ms of a ``strongroom encrypt`` start-up).
_PQ_RECIPIENT_PREFIX = "age1pq1"
_PQ_IDENTITY_PREFIX = "AGE-SECRET-KEY-PQ-1"


def parse_recipient(s: str) -> Recipient:
    """Parse a recipient string: ``age1pq1...`` (hybrid ML-KEM-768 + X25519) or ``age1...``."""
    s = s.strip()
    if s.startswith(_PQ_RECIPIENT_PREFIX):
        from strongroom.crypto import age_pq  # it builds on this module

        return age_pq.HybridRecipient.parse(s)
    if s.startswith(_RECIPIENT_HRP + "1"):
        return X25519Recipient.parse(s)
    raise InvalidInput(
        "unknown recipient type", obj=f"recipient {s[:16]!r}",
        remedy="use an age1pq1... (hybrid) or age1... public key",
    )


def parse_identity(s: str) -> AgeIdentity:
    """Parse one secret key: ``AGE-SECRET-KEY-PQ-1...`` (hybrid) or ``AGE-SECRET-KEY-1...``."""
    if s.startswith(_PQ_IDENTITY_PREFIX):
        from strongroom.crypto import age_pq  # it builds on this module

        return age_pq.HybridIdentity.parse(s)
    if s.startswith(_IDENTITY_HRP + "1"):
        return X25519Identity.parse(s)
    raise InvalidInput("not an AGE-SECRET-KEY-1 or AGE-SECRET-KEY-PQ-1 identity",
                       obj="age identity")


def parse_identities(text: str) -> list[AgeIdentity]:
    """Parse identity-file text: one key a line; ``#`` comments and blank lines ignored."""
    identities: list[AgeIdentity] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(parse_identity(line))
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.message}", obj="identity file") from None
    if not identities:
        raise InvalidInput("no identities found", obj="identity file")
    return identities


# -- random-access sources -------------------------------------------------------


class ByteSource(Protocol):
    """Random-access ciphertext: a local buffer or mmap, or a remote ranged reader.

    A source may also have ``release(offset, size)``: the reader calls it once it
    has opened the chunks in that range, so a source that maps a file can drop
    them from the process's resident set.
    """

    def __len__(self) -> int:
        """Total size in bytes."""
        ...

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end)."""
        ...


class BufferSource:
    """A :class:`ByteSource` over any buffer, handing out zero-copy memoryview slices.

    Over an mmap, release the reader (and its slices) before closing the mmap.
    """

    __slots__ = ("_view",)

    def __init__(self, buffer: bytes | bytearray | memoryview | mmap.mmap) -> None:
        view = memoryview(buffer)
        self._view = view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def __len__(self) -> int:
        return len(self._view)

    def read_at(self, offset: int, size: int) -> memoryview:
        """A view of up to ``size`` bytes at ``offset``."""
        return self._view[offset : offset + size]


def _as_source(source: ByteSource | bytes | bytearray | memoryview | mmap.mmap) -> ByteSource:
    if isinstance(source, bytes | bytearray | memoryview | mmap.mmap):
        return BufferSource(source)
    return source


def read_header(source: ByteSource) -> tuple[Header, bytes | memoryview]:
    """The header at the start of ``source`` and the bytes that hold it (read a little, then more)."""
    total = len(source)
    want = _HEADER_PROBE
    while True:
        data = source.read_at(0, min(want, total))
        header = parse_header(data, complete=want >= total)
        if header is not None:
            return header, data
        want *= 4


# -- random access ---------------------------------------------------------------


class AgeReader:
    """Random access to one age file."""

    header: Header
    plaintext_size: int
    num_chunks: int

    def __init__(
        self,
        source: ByteSource,
        header: Header,
        header_bytes: bytes | memoryview,
        file_key: bytes,
        *,
        plaintext_size: int | None = None,
    ) -> None:
        """Check the header MAC and the final chunk; prefer :meth:`open`."""
        _verify_mac(header, header_bytes, file_key)
        nonce = bytes(source.read_at(header.size, NONCE_SIZE))
        if len(nonce) != NONCE_SIZE:
            raise _header_error("the file ends before the payload nonce")
        self._source = source
        self._start = header.size + NONCE_SIZE
        self._geometry = PayloadGeometry(len(source) - self._start)
        problem = self._geometry.problem()
        if problem is not None:
            raise PayloadError(problem, obj="age payload")
        self._cipher = PayloadCipher(payload_key(file_key, nonce, header.cipher), header.cipher)
        self._closed = False
        self.header = header
        self.num_chunks = self._geometry.num_chunks
        self._last_plain: bytearray | None = None
        if plaintext_size is not None:
            # The caller knows the size from an authenticated source (a signed
            # manifest): a length that disagrees is truncation or extension, and
            # the final chunk is authenticated, with its flag, when it is read.
            if self._geometry.plaintext_size != plaintext_size:
                self._cipher.wipe()
                raise PayloadError(
                    f"the file holds {self._geometry.plaintext_size} bytes of plaintext, "
                    f"{plaintext_size} expected (truncated or extended)",
                    obj="age payload",
                )
        else:
            # The size is derived from the length; it is trusted only once the final
            # chunk (with its last-chunk flag) authenticates, so truncation fails here.
            try:
                self._last_chunk()
            except BaseException:
                self._cipher.wipe()
                raise
        self.plaintext_size = self._geometry.plaintext_size

    def _last_chunk(self) -> bytearray:
        if self._last_plain is None:
            last = bytearray(self._geometry.last_chunk_size - TAG_SIZE)
            self._open(memoryview(last), self.num_chunks - 1, 1, threads=1)
            self._last_plain = last
        return self._last_plain

    @classmethod
    def open(
        cls,
        source: ByteSource | bytes | bytearray | memoryview | mmap.mmap,
        identities: Sequence[AgeIdentity],
        *,
        plaintext_size: int | None = None,
        check_header: Callable[[Header, bytes | memoryview], None] | None = None,
    ) -> AgeReader:
        """Open ``source`` with the first identity that unwraps its file key.

        The header is read and parsed once. ``check_header`` sees it (and the
        bytes that hold it) before any identity is asked, e.g. to compare it with
        a digest pinned in a signed manifest; it raises to refuse the file.
        ``plaintext_size`` is as for :meth:`with_file_key`.
        """
        src = _as_source(source)
        header, header_bytes = read_header(src)
        if check_header is not None:
            check_header(header, header_bytes)
        return cls(src, header, header_bytes, _unwrap(header, identities),
                   plaintext_size=plaintext_size)

    @classmethod
    def with_file_key(
        cls,
        source: ByteSource | bytes | bytearray | memoryview | mmap.mmap,
        file_key: bytes,
        *,
        plaintext_size: int | None = None,
    ) -> AgeReader:
        """Open ``source`` with a file key released elsewhere; verifies the header MAC.

        Pass ``plaintext_size`` only when it comes from an authenticated source
        (a signed manifest): the file's length must then match it exactly, and
        the final chunk is not read until it is needed.
        """
        if len(file_key) != FILE_KEY_SIZE:
            raise InvalidInput(f"a file key must be {FILE_KEY_SIZE} bytes", obj="file key")
        src = _as_source(source)
        header, header_bytes = read_header(src)
        return cls(src, header, header_bytes, file_key, plaintext_size=plaintext_size)

    def close(self) -> None:
        """Zero the payload key held by this reader; later reads raise InvalidInput."""
        self._cipher.wipe()
        if self._last_plain is not None:
            self._last_plain[:] = bytes(len(self._last_plain))
        self._closed = True

    def __enter__(self) -> AgeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("the reader is closed", obj="age payload")

    @property
    def cipher(self) -> str:
        """The payload's AEAD: ``chacha20-poly1305`` (age) or ``aes-256-gcm``."""
        return self.header.cipher

    def _fetch(self, first: int, stop: int) -> bytes | memoryview:
        start = self._start + first * ENCRYPTED_CHUNK_SIZE
        size = min(stop * ENCRYPTED_CHUNK_SIZE, self._geometry.ciphertext_size) - (
            first * ENCRYPTED_CHUNK_SIZE
        )
        data = self._source.read_at(start, size)
        if len(data) != size:
            raise PayloadError(
                f"the source returned {len(data)} of {size} bytes for chunks {first}..{stop - 1}",
                obj="age payload",
            )
        return data

    def _done(self, first: int, stop: int) -> None:
        """Chunks ``first..stop-1`` were opened: a source that maps its file may drop them."""
        release = getattr(self._source, "release", None)
        if release is not None:
            start = self._start + first * ENCRYPTED_CHUNK_SIZE
            release(start, min(stop * ENCRYPTED_CHUNK_SIZE, self._geometry.ciphertext_size)
                    - first * ENCRYPTED_CHUNK_SIZE)

    def _open(self, out: memoryview, first: int, count: int, *, threads: int,
              skip: int = 0) -> None:
        self._check_open()
        failed = self._cipher.open(
            self._fetch, out, first, count, last=self.num_chunks - 1, threads=threads, skip=skip,
            done=self._done,
        )
        if failed is not None:
            raise PayloadError(failed.describe(), obj="age payload")

    def decrypt_chunk(self, index: int) -> bytes:
        """The plaintext of chunk ``index`` (0-based)."""
        if not 0 <= index < self.num_chunks:
            raise InvalidInput(
                f"chunk {index} out of range (the file has {self.num_chunks})", obj="age payload"
            )
        if index == self.num_chunks - 1:
            self._check_open()
            return bytes(self._last_chunk())
        out = bytearray(CHUNK_SIZE)
        self._open(memoryview(out), index, 1, threads=1)
        return bytes(out)

    def read(self, start: int, end: int, *, threads: int = 1) -> bytes:
        """Plaintext bytes ``[start, end)``, decrypting only the chunks that cover them.

        For large ranges prefer :meth:`decrypt_into` on a buffer you keep (no copy).
        """
        if not 0 <= start <= end <= self.plaintext_size:
            raise InvalidInput(
                f"range [{start}, {end}) outside the plaintext of {self.plaintext_size} bytes",
                obj="age payload",
            )
        out = bytearray(end - start)
        self.decrypt_into(out, start, threads=threads)
        return bytes(out)

    def decrypt_into(self, out: Buffer, offset: int = 0, *, threads: int = 2) -> None:
        """Decrypt plaintext bytes ``[offset, offset + len(out))`` straight into ``out``.

        Only the chunks covering the range are read, in ``threads`` threads, each
        chunk wholly inside the range opened in place; at most two edge chunks
        (when ``offset`` or the end is not on a 64 KiB boundary) go through a
        64 KiB per-thread buffer, zeroed after the copy. Pass a buffer of exactly
        ``plaintext_size`` bytes and offset 0 to decrypt the whole payload.
        """
        view = memoryview(out)
        if view.readonly:
            raise InvalidInput("the output buffer is read-only", obj="decrypt_into")
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        end = offset + len(view)
        if not 0 <= offset <= end <= self.plaintext_size:
            raise InvalidInput(
                f"range [{offset}, {end}) outside the plaintext of {self.plaintext_size} bytes",
                obj="decrypt_into",
            )
        if threads < 1:
            raise InvalidInput("threads must be at least 1", obj="decrypt_into")
        if offset == end:
            self._check_open()
            return
        first = offset // CHUNK_SIZE
        stop = (end - 1) // CHUNK_SIZE + 1
        self._open(view, first, stop - first, threads=threads, skip=offset - first * CHUNK_SIZE)


# -- whole buffers ----------------------------------------------------------------


def _check_threads(threads: int) -> None:
    if threads < 1:
        raise InvalidInput("threads must be at least 1")


def encrypt(
    plaintext: bytes | bytearray | memoryview,
    recipients: Sequence[Recipient],
    *,
    file_key: bytes | None = None,
    threads: int = 1,
    cipher: str = CHACHA20_POLY1305,
) -> bytes:
    """Encrypt ``plaintext`` to every recipient; returns the age file.

    ``cipher="aes-256-gcm"`` writes strongroom's AES-256-GCM payload mode instead.
    """
    _check_threads(threads)
    plain = memoryview(plaintext).cast("B")
    with _file_key(file_key) as key:
        header = build_header(key, recipients, cipher=cipher)
        nonce = os.urandom(NONCE_SIZE)
        sealer = PayloadCipher(payload_key(key, nonce, cipher), cipher)
    start = len(header) + NONCE_SIZE
    out = bytearray(start + sealed_size(len(plain)))
    out[: len(header)] = header
    out[len(header) : start] = nonce
    try:
        sealer.seal(plain, memoryview(out)[start:], 0, final=True, threads=threads)
    finally:
        sealer.wipe()
    return bytes(out)


@contextlib.contextmanager
def _file_key(given: bytes | None) -> Iterator[bytes | bytearray]:
    """The caller's file key, or a fresh one held in a bytearray and zeroed afterwards."""
    if given is not None:
        if len(given) != FILE_KEY_SIZE:
            raise InvalidInput(f"a file key must be {FILE_KEY_SIZE} bytes", obj="file key")
        yield given
        return
    key = bytearray(new_file_key())
    try:
        yield key
    finally:
        key[:] = bytes(FILE_KEY_SIZE)


def decrypt(data: bytes | bytearray | memoryview, identities: Sequence[AgeIdentity]) -> bytes:
    """Decrypt a whole age file with the first identity that matches."""
    with AgeReader.open(data, identities) as reader:
        out = bytearray(reader.plaintext_size)
        reader.decrypt_into(out, threads=2 if reader.num_chunks > 8 else 1)
    return bytes(out)


# -- streams ----------------------------------------------------------------------


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    file_key: bytes | None = None,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
    cipher: str = CHACHA20_POLY1305,
) -> int:
    """Encrypt ``src`` into ``dst`` for every recipient; returns the plaintext size.

    Reads 4 MiB blocks into reused buffers and seals each block's chunks in
    ``threads`` threads while the previous block is written and the next read.
    ``progress(n)`` is called with each increment of plaintext written.
    ``cipher="aes-256-gcm"`` writes strongroom's AES-256-GCM payload mode.
    """
    _check_threads(threads)
    with _file_key(file_key) as key:
        nonce = os.urandom(NONCE_SIZE)
        head = build_header(key, recipients, cipher=cipher) + nonce
        sealer = PayloadCipher(payload_key(key, nonce, cipher), cipher)
    try:
        with _preallocated(src, dst, lambda n: len(head) + sealed_size(n)):
            dst.write(head)
            fd = _regular_fd(src)
            if fd is not None:
                start = src.tell()
                size = os.fstat(fd).st_size - start
                if size > 0:  # else empty, or a /proc file whose size reads 0: streamed
                    return _seal_file(sealer, _InputFile(fd, start, size), dst, threads,
                                      progress)
            return _seal_stream(sealer, src, dst, threads, progress)
    finally:
        sealer.wipe()


def _seal_stream(
    cipher: PayloadCipher,
    src: BinaryIO,
    dst: BinaryIO,
    threads: int,
    progress: Callable[[int], None] | None,
) -> int:
    reader = BlockReader(src, CHUNK_SIZE, _STREAM_BLOCK_CHUNKS)
    outs = [io_buffer(_STREAM_BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE) for _ in range(2)]
    total = index = turn = 0

    def emit(sealed: memoryview, plain_size: int) -> None:
        nonlocal total
        dst.write(sealed)
        total += plain_size
        if progress is not None:
            progress(plain_size)

    pending: tuple[memoryview, int] | None = None
    following: tuple[memoryview, bool] | None = reader.next()
    while following is not None:
        block, final = following
        out = outs[turn][: sealed_size(len(block))]  # non-final blocks are whole chunks
        if final and pending is None and len(block) <= _FILE_BLOCK_CHUNKS * CHUNK_SIZE:
            # A small input: sealed inline, the worker pool never started (CLI start-up).
            cipher.seal(block, out, index, final=True, threads=1)
            emit(out, len(block))
            return total
        futures = cipher.submit_seal(block, out, index, final=final, threads=threads)
        if pending is not None:  # overlap: write the previous block while this one seals
            emit(*pending)
        following = None if final else reader.next()
        for fut in futures:
            fut.result()
        pending = (out, len(block))
        index += len(block) // CHUNK_SIZE
        turn = 1 - turn
    assert pending is not None  # the reader always yields at least a final block
    emit(*pending)
    return total


class _InputFile:
    """``size`` bytes of a regular file from offset ``start``, read at absolute offsets.

    Any thread may read (``os.preadv`` releases the GIL); the file object's own
    position is left alone. The size is taken once, at the start: a file that
    shrinks or grows while it is read is refused (``changed``), never encrypted
    or decrypted as a mix of two versions.
    """

    __slots__ = ("fd", "payload", "size", "start")

    def __init__(self, fd: int, start: int, size: int, *, payload: bool = False) -> None:
        self.fd, self.start, self.size = fd, start, size
        self.payload = payload  # an age file being decrypted (else a plaintext input)

    def changed(self, how: str) -> Exception:
        if self.payload:
            return PayloadError(f"the file {how} while it was read", obj="age payload")
        return InvalidInput(f"the input file {how} while it was read",
                            remedy="run again on a file nobody is writing to")

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the bytes at ``offset`` (relative to ``start``)."""
        got = 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], self.start + offset + got)
            if n == 0:
                raise self.changed("shrank")
            got += n

    def check_end(self) -> None:
        """Refuse a file that grew since its size was taken."""
        if os.pread(self.fd, 1, self.start + self.size):
            raise self.changed("grew")


def _in_order(
    blocks: int, threads: int, work: Callable[[int, int], memoryview],
    emit: Callable[[int, memoryview], None],
) -> None:
    """Run ``work(block, slot)`` for each block on ``threads`` workers; ``emit`` them in order.

    ``slot`` names one of ``threads * _FILE_BLOCKS_PER_WORKER`` buffer sets, reused only
    after the block that had it was emitted. One block runs inline (no pool started).
    """
    if blocks <= 1 or threads == 1:
        for b in range(blocks):
            emit(b, work(b, 0))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    depth = min(blocks, threads * _FILE_BLOCKS_PER_WORKER)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="age-file") as pool:
        queued = deque(pool.submit(work, b, b) for b in range(depth))
        try:
            for b in range(blocks):
                done = queued.popleft().result()
                emit(b, done)
                if b + depth < blocks:
                    queued.append(pool.submit(work, b + depth, (b + depth) % depth))
        finally:
            for fut in queued:
                fut.cancel()


def _slots(threads: int, blocks: int, in_size: int, out_size: int
           ) -> list[tuple[memoryview, memoryview]]:
    count = 1 if blocks <= 1 or threads == 1 else min(blocks, threads * _FILE_BLOCKS_PER_WORKER)
    return [(io_buffer(in_size), io_buffer(out_size)) for _ in range(count)]


def _seal_file(
    cipher: PayloadCipher, src: _InputFile, dst: BinaryIO, threads: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Seal a regular file's ``src.size`` (> 0) bytes into ``dst``: the STREAM of ``_seal_stream``.

    Each worker reads its own 1 MiB block and seals it while it is hot in its
    core's cache; this thread only writes the sealed blocks, in order. The
    final chunk is known from the size, so no block is held back.
    """
    block = _FILE_BLOCK_CHUNKS * CHUNK_SIZE
    blocks = -(-src.size // block)
    slots = _slots(threads, blocks, block, sealed_size(block))

    def work(b: int, slot: int) -> memoryview:
        plain_buf, sealed_buf = slots[slot]
        size = min(block, src.size - b * block)
        plain = plain_buf[:size]
        src.read_into(plain, b * block)
        out = sealed_buf[: sealed_size(size)]
        cipher.seal(plain, out, b * _FILE_BLOCK_CHUNKS, final=b == blocks - 1, threads=1)
        return out

    def emit(b: int, sealed: memoryview) -> None:
        dst.write(sealed)
        if progress is not None:
            progress(min(block, src.size - b * block))

    _in_order(blocks, threads, work, emit)
    src.check_end()
    return src.size


class _Release:
    """Writes opened plaintext to ``dst`` in order, counting it and telling ``progress``."""

    def __init__(self, dst: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self._dst, self._progress = dst, progress
        self.total = 0

    def __call__(self, plain: memoryview) -> None:
        if len(plain):
            self._dst.write(plain)
            self.total += len(plain)
            if self._progress is not None:
                self._progress(len(plain))


class _Opened(Exception):
    """A block's chunk failed; ``plain`` is what may still be released before it."""

    def __init__(self, plain: memoryview, failure: str) -> None:
        super().__init__(failure)
        self.plain, self.failure = plain, failure


def _open_file(
    cipher: PayloadCipher, src: _InputFile, dst: BinaryIO, threads: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Open a regular file's payload (``src.size`` bytes from its first chunk) into ``dst``.

    The same outcomes as :func:`_open_stream`: only authenticated chunks are
    written, in order; at a bad chunk (or a bad length, found from the size
    but reported after the chunks before it) the chunks before it have been
    written and :class:`PayloadError` is raised. Each worker reads and opens
    its own 1 MiB block; this thread writes them.
    """
    geometry = PayloadGeometry(src.size)
    problem = geometry.problem()
    count = max(0, geometry.num_chunks - (problem is not None))
    last = geometry.num_chunks - 1 if problem is None else -1
    per = _FILE_BLOCK_CHUNKS
    blocks = -(-count // per)
    slots = _slots(threads, blocks, per * ENCRYPTED_CHUNK_SIZE, per * CHUNK_SIZE)
    release = _Release(dst, progress)

    def work(b: int, slot: int) -> memoryview:
        sealed_buf, plain_buf = slots[slot]
        first = b * per
        n = min(per, count - first)
        lo = first * ENCRYPTED_CHUNK_SIZE
        sealed = sealed_buf[: min((first + n) * ENCRYPTED_CHUNK_SIZE, src.size) - lo]
        src.read_into(sealed, lo)
        out = plain_buf[: len(sealed) - n * TAG_SIZE]

        def fetch(a: int, z: int) -> memoryview:
            return sealed[(a - first) * ENCRYPTED_CHUNK_SIZE : (z - first) * ENCRYPTED_CHUNK_SIZE]

        bad = cipher.open(fetch, out, first, n, last=last, threads=1)
        if bad is not None:
            # A misflagged chunk is authentic; release it, as a sequential reader would.
            raise _Opened(out[: (bad.index - first + bad.misflagged) * CHUNK_SIZE],
                          bad.describe())
        return out

    try:
        _in_order(blocks, threads, work, lambda _, plain: release(plain))
    except _Opened as exc:
        release(exc.plain)
        raise PayloadError(exc.failure, obj="age payload") from None
    if problem is not None:
        raise PayloadError(problem, obj="age payload")
    src.check_end()
    return release.total


def _regular_fd(f: BinaryIO) -> int | None:
    try:
        fd = f.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _preallocated(src: BinaryIO, dst: BinaryIO, size: Callable[[int], int]) -> Iterator[None]:
    """Reserve the output's blocks when both ends are regular files.

    ``size(n)`` gives the output size for ``n`` input bytes left to read.
    Writing into reserved blocks skips the filesystem's per-page allocation,
    which otherwise costs about as much as the cipher. If less is written
    (the input shrank, or decryption failed), the unused tail is cut off.
    """
    src_fd, dst_fd = _regular_fd(src), _regular_fd(dst)
    end = None
    if src_fd is not None and dst_fd is not None:
        try:
            start = dst.tell()
            end = start + size(max(0, os.fstat(src_fd).st_size - src.tell()))
            os.posix_fallocate(dst_fd, start, end - start)
        except OSError:
            end = None
    try:
        yield
    finally:
        if end is not None and dst.tell() < end:
            dst.truncate()


def _read_stream_header(src: BinaryIO) -> tuple[Header, bytes]:
    data = b""
    while True:
        piece = src.read(_READ_STEP)
        data += piece
        header = parse_header(data, complete=not piece)
        if header is not None:
            return header, data


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[AgeIdentity],
    *,
    progress: Callable[[int], None] | None = None,
    threads: int = 2,
) -> int:
    """Decrypt ``src`` into ``dst``; returns the plaintext size.

    Only authenticated chunks are written. On a failure (a bad chunk, a
    truncated or extended file) the chunks before it have been written and
    :class:`PayloadError` is raised: discard the output.
    """
    _check_threads(threads)
    header, data = _read_stream_header(src)
    file_key = _unwrap(header, identities)
    _verify_mac(header, data, file_key)
    while len(data) < header.size + NONCE_SIZE:
        piece = src.read(header.size + NONCE_SIZE - len(data))
        if not piece:
            raise _header_error("the file ends before the payload nonce")
        data += piece
    nonce = data[header.size : header.size + NONCE_SIZE]
    cipher = PayloadCipher(payload_key(file_key, nonce, header.cipher), header.cipher)
    prefix = data[header.size + NONCE_SIZE :]
    try:
        with _preallocated(src, dst, lambda n: _opened_size(n + len(prefix))):
            fd = _regular_fd(src)
            if fd is not None:
                start = src.tell() - len(prefix)  # where the payload's chunks begin
                size = os.fstat(fd).st_size - start
                if size >= len(prefix):
                    return _open_file(cipher, _InputFile(fd, start, size, payload=True), dst,
                                      threads, progress)
            return _open_stream(cipher, src, dst, prefix, threads, progress)
    finally:
        cipher.wipe()


def _opened_size(ciphertext_size: int) -> int:
    """Plaintext size of a payload of this many ciphertext bytes (nonce excluded)."""
    return max(0, PayloadGeometry(ciphertext_size).plaintext_size)


def _open_stream(
    cipher: PayloadCipher,
    src: BinaryIO,
    dst: BinaryIO,
    prefix: bytes,
    threads: int,
    progress: Callable[[int], None] | None,
) -> int:
    reader = BlockReader(src, ENCRYPTED_CHUNK_SIZE, _STREAM_BLOCK_CHUNKS, prefix)
    outs = [memoryview(bytearray(_STREAM_BLOCK_CHUNKS * CHUNK_SIZE)) for _ in range(2)]
    index = turn = 0
    emit = _Release(dst, progress)

    pending: memoryview | None = None
    following: tuple[memoryview, bool] | None = reader.next()
    while following is not None:
        block, final = following
        count = -(-len(block) // ENCRYPTED_CHUNK_SIZE)
        # A bad length shows only at the end; the chunks before it are still opened
        # (and released) first, as a sequential reader would.
        problem = None
        if final:
            problem = PayloadGeometry(index * ENCRYPTED_CHUNK_SIZE + len(block)).problem()
        if problem is not None:
            count = max(0, count - 1)
            out = outs[turn][: count * CHUNK_SIZE]
        else:
            out = outs[turn][: len(block) - count * TAG_SIZE]

        def fetch(
            first: int, stop: int, block: memoryview = block, base: int = index
        ) -> memoryview:
            return block[
                (first - base) * ENCRYPTED_CHUNK_SIZE : (stop - base) * ENCRYPTED_CHUNK_SIZE
            ]

        last = index + count - 1 if final and problem is None else -1
        if final and pending is None and count <= _FILE_BLOCK_CHUNKS:
            # A small input: opened inline, the worker pool never started (CLI start-up).
            bad = cipher.open(fetch, out, index, count, last=last, threads=1)
            following = None
        else:
            futures = cipher.submit_open(fetch, out, index, count, last=last, threads=threads)
            if pending is not None:  # overlap: write the previous block while this one opens
                emit(pending)
            following = None if final else reader.next()
            bad = first_failure(futures)
        if bad is not None:
            # A misflagged chunk is authentic; release it, as a sequential reader would.
            emit(out[: (bad.index - index + bad.misflagged) * CHUNK_SIZE])
            raise PayloadError(bad.describe(), obj="age payload")
        if problem is not None:
            emit(out)
            raise PayloadError(problem, obj="age payload")
        pending = out
        index += count
        turn = 1 - turn
    assert pending is not None  # the reader always yields at least a final block
    emit(pending)
    return emit.total

"""C2SP signed notes (the format of Go's ``golang.org/x/mod/sumdb/note``).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. Two signature types are
implemented:

* ``0x01`` Ed25519 over the note text (:class:`Ed25519Signer`), what logs sign
  checkpoints with;
* ``0x04`` tlog-cosignature/v1 (:class:`CosignatureSigner`), a witness's
  timestamped Ed25519 signature over ``cosignature/v1\\ntime <t>\\n`` + text.

Keys travel as strings: a verifier key ``<name>+<8 hex key ID>+<base64(type ||
public key)>`` and a signer key ``PRIVATE+KEY+<name>+<8 hex>+<base64(type ||
seed)>``. The key ID is ``SHA-256(name || 0x0A || type || public key)[:4]``::

    skey, vkey = generate_key("example.com/log")
    signed = sign("hello\\n", new_signer(skey))
    note = open_note(signed, [new_verifier(vkey)])   # raises NoteError

:func:`open_note` follows the spec and Go: signatures from unknown keys are
ignored (kept in ``note.unverified``), a known key whose signature fails
rejects the whole note, and a note with no verified signature is rejected.
Never read ``text`` from a note you did not open with trusted verifiers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from strongroom.crypto.ed25519 import check_public_key, weakness
from strongroom.errors import InvalidInput, NoteError

__all__ = [
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "ExternalEd25519Signer",
    "Note",
    "NoteError",
    "NoteSignature",
    "Signer",
    "Verifier",
    "cosignature_message",
    "generate_key",
    "key_id",
    "new_signer",
    "new_verifier",
    "open_note",
    "parse_note",
    "sign",
    "signature_line",
]

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
SIG_PREFIX = "— "
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
COSIGNATURE_HEADER = "cosignature/v1\n"
#: The most signature lines :func:`open_note` reads (the spec asks for at least 16).
MAX_SIGNATURES = 100
_ALGORITHMS = {SIG_ED25519: "Ed25519", SIG_COSIGNATURE_V1: "cosignature/v1"}


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or unicodedata.category(c) == "Zs" for c in name)
    )


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || alg || public key)[:4]`` as a big-endian integer."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The bytes a tlog-cosignature/v1 signs: header, time line, then the note text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


class Verifier(Protocol):
    """Checks signatures of one key, identified by name and key ID."""

    @property
    def name(self) -> str:
        """The key name."""
        ...

    @property
    def key_id(self) -> int:
        """The 32-bit key ID."""
        ...

    def verify(self, text: str, sig: bytes) -> bool:
        """True when ``sig`` (without the key ID) is valid over ``text``."""
        ...


class Signer(Protocol):
    """Signs note texts with one key."""

    @property
    def name(self) -> str:
        """The key name."""
        ...

    @property
    def key_id(self) -> int:
        """The 32-bit key ID."""
        ...

    def sign(self, text: str) -> bytes:
        """The signature over ``text`` (without the key ID)."""
        ...


@dataclass(frozen=True)
class _Key:
    name: str
    public: Ed25519PublicKey
    alg: ClassVar[int]

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, _raw_public(self.public))

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex ID>+<base64(type || key)>``."""
        material = base64.b64encode(bytes([self.alg]) + _raw_public(self.public)).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def _check(self, message: bytes, sig: bytes) -> bool:
        if weakness(_raw_public(self.public)) is not None:
            return False  # under a small-order key OpenSSL accepts forgeries (crypto.ed25519)
        try:
            self.public.verify(sig, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Ed25519Verifier(_Key):
    """Verifies ``0x01`` Ed25519 note signatures."""

    alg: ClassVar[int] = SIG_ED25519

    def verify(self, text: str, sig: bytes) -> bool:
        """True when ``sig`` is this key's Ed25519 signature over ``text``."""
        return len(sig) == 64 and self._check(text.encode(), sig)


@dataclass(frozen=True)
class CosignatureVerifier(_Key):
    """Verifies ``0x04`` tlog-cosignature/v1 signatures (8-byte timestamp, then Ed25519)."""

    alg: ClassVar[int] = SIG_COSIGNATURE_V1

    def verify(self, text: str, sig: bytes) -> bool:
        """True when ``sig`` is this witness's cosignature over the checkpoint ``text``."""
        if len(sig) != 72:
            return False
        (timestamp,) = struct.unpack(">Q", sig[:8])
        if timestamp >= 1 << 63:
            return False
        return self._check(cosignature_message(text, timestamp), sig[8:])

    @staticmethod
    def timestamp(sig: bytes) -> int:
        """The POSIX time a cosignature (without key ID) was made at."""
        return int(struct.unpack(">Q", sig[:8])[0])


class _Ed25519NoteSigner:
    """What an Ed25519 note signer derives from its key name and public key."""

    name: str
    alg: ClassVar[int] = SIG_ED25519

    def _public_key(self) -> Ed25519PublicKey:
        raise NotImplementedError

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise InvalidInput(
                "key name must be non-empty, without spaces or '+'", obj=repr(self.name)
            )

    @property
    def verifier(self) -> Ed25519Verifier:
        """The matching verifier."""
        return Ed25519Verifier(self.name, self._public_key())

    @property
    def key_id(self) -> int:
        """The 32-bit key ID."""
        return key_id(self.name, self.alg, _raw_public(self._public_key()))

    @property
    def vkey(self) -> str:
        """The verifier key string to give to whoever checks this key's signatures."""
        return self.verifier.vkey


@dataclass(frozen=True)
class Ed25519Signer(_Ed25519NoteSigner):
    """Signs notes with an Ed25519 key (type ``0x01``): a log's checkpoint key."""

    name: str
    private: Ed25519PrivateKey = field(repr=False)

    def _public_key(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def skey(self) -> str:
        """The signer key string ``PRIVATE+KEY+...`` (secret: store it like a key)."""
        seed = self.private.private_bytes_raw()
        material = base64.b64encode(bytes([self.alg]) + seed).decode()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{material}"

    def sign(self, text: str) -> bytes:
        """The Ed25519 signature over ``text``."""
        return self.private.sign(text.encode())


@dataclass(frozen=True)
class ExternalEd25519Signer(_Ed25519NoteSigner):
    """An Ed25519 note signer whose private key is held elsewhere (a key agent, an HSM).

    ``sign_message`` signs raw bytes with the private key matching ``public``;
    the key itself never enters this process.
    """

    name: str
    public: Ed25519PublicKey
    sign_message: Callable[[bytes], bytes] = field(repr=False)

    def _public_key(self) -> Ed25519PublicKey:
        return self.public

    def sign(self, text: str) -> bytes:
        """The Ed25519 signature over ``text``, made by the key's holder."""
        return self.sign_message(text.encode())


@dataclass(frozen=True)
class CosignatureSigner(Ed25519Signer):
    """A witness key: tlog-cosignature/v1 signatures (type ``0x04``) with a timestamp."""

    alg: ClassVar[int] = SIG_COSIGNATURE_V1
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    @property
    def verifier(self) -> CosignatureVerifier:  # type: ignore[override]
        """The matching verifier."""
        return CosignatureVerifier(self.name, self.private.public_key())

    def sign(self, text: str) -> bytes:
        """``timestamp (8 bytes, big-endian) || Ed25519 signature`` over the cosigned message."""
        timestamp = int(self.clock())
        message = cosignature_message(text, timestamp)
        return struct.pack(">Q", timestamp) + self.private.sign(message)


def generate_key(name: str, alg: int = SIG_ED25519) -> tuple[str, str]:
    """A fresh key: ``(signer key string, verifier key string)``."""
    signer = _signer_for(name, alg, Ed25519PrivateKey.generate())
    return signer.skey, signer.vkey


def _signer_for(name: str, alg: int, private: Ed25519PrivateKey) -> Ed25519Signer:
    if alg == SIG_ED25519:
        return Ed25519Signer(name, private)
    if alg == SIG_COSIGNATURE_V1:
        return CosignatureSigner(name, private)
    raise InvalidInput(f"unsupported signature type 0x{alg:02x}", obj=name)


def _split_key(text: str, what: str) -> tuple[str, int, bytes]:
    # The base64 key material may itself contain '+': split at the first two only.
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise InvalidInput(f"malformed {what}: expected <name>+<key ID>+<key>", obj=what)
    name, hex_id, material = parts
    try:
        if len(hex_id) != 8:
            raise ValueError(hex_id)
        kid = int(hex_id, 16)
        key = base64.b64decode(material, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput(f"malformed {what}: bad key ID or base64", obj=name) from exc
    if not _valid_name(name) or not key:
        raise InvalidInput(f"malformed {what}: bad key name or empty key", obj=name)
    return name, kid, key


def new_verifier(vkey: str) -> Ed25519Verifier | CosignatureVerifier:
    """Parse a verifier key string (type ``0x01`` or ``0x04``)."""
    name, kid, key = _split_key(vkey, "verifier key")
    if key_id(name, key[0], key[1:]) != kid:
        raise InvalidInput("verifier key ID does not match its key", obj=name)
    if key[0] not in _ALGORITHMS or len(key) != 33:
        raise InvalidInput(f"unsupported verifier key type 0x{key[0]:02x}", obj=name)
    check_public_key(key[1:], obj=f"verifier key {name}")  # a small-order key signs anything
    public = Ed25519PublicKey.from_public_bytes(key[1:])
    if key[0] == SIG_ED25519:
        return Ed25519Verifier(name, public)
    return CosignatureVerifier(name, public)


def new_signer(skey: str) -> Ed25519Signer:
    """Parse a signer key string ``PRIVATE+KEY+<name>+<hex ID>+<base64(type || seed)>``."""
    if not skey.startswith(PRIVATE_KEY_PREFIX):
        raise InvalidInput("malformed signer key: missing PRIVATE+KEY+ prefix", obj="signer key")
    name, kid, key = _split_key(skey[len(PRIVATE_KEY_PREFIX) :], "signer key")
    if key[0] not in _ALGORITHMS or len(key) != 33:
        raise InvalidInput(f"unsupported signer key type 0x{key[0]:02x}", obj=name)
    signer = _signer_for(name, key[0], Ed25519PrivateKey.from_private_bytes(key[1:]))
    if signer.key_id != kid:
        raise InvalidInput("signer key ID does not match its key", obj=name)
    return signer


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and signature bytes (after the key ID)."""

    name: str
    key_id: int
    sig: bytes

    @property
    def line(self) -> str:
        """The signature line, with its newline."""
        return signature_line(self.name, self.key_id, self.sig)


def signature_line(name: str, kid: int, sig: bytes) -> str:
    """``— <name> <base64(key ID || sig)>\\n``."""
    return f"{SIG_PREFIX}{name} {base64.b64encode(kid.to_bytes(4, 'big') + sig).decode()}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures that verified, and those ignored."""

    text: str
    sigs: list[NoteSignature]
    unverified: list[NoteSignature]

    def signed_by(self, name: str) -> bool:
        """True when a verified signature from key ``name`` is on the note."""
        return any(s.name == name for s in self.sigs)


def _malformed(why: str) -> NoteError:
    return NoteError(f"malformed signed note: {why}")


def parse_note(msg: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, without verifying."""
    if isinstance(msg, bytes):
        try:
            msg = msg.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _malformed("not UTF-8") from exc
    for ch in msg:
        if ch < " " and ch != "\n":
            raise _malformed(f"control character 0x{ord(ch):02x}")
    split = msg.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs.endswith("\n"):
        raise _malformed("signature block does not end in a newline")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    out: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise _malformed("signature line does not start with '— '")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise _malformed(f"bad base64 in signature from {name!r}") from exc
        if not _valid_name(name) or not b64 or len(raw) < 5:
            raise _malformed(f"bad signature line from {name!r}")
        out.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, out


def open_note(msg: str | bytes, verifiers: Iterable[Verifier]) -> Note:
    """Verify a signed note against trusted keys; unknown signers are ignored.

    Raises :class:`NoteError` when the note is malformed, when a known key's
    signature fails, or when no known key signed it.
    """
    text, sigs = parse_note(msg)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for s in sigs:
        v = known.get((s.name, s.key_id))
        if v is None:
            if s not in unverified:
                unverified.append(s)
            continue
        if (s.name, s.key_id) in seen:
            continue
        seen.add((s.name, s.key_id))
        if not v.verify(text, s.sig):
            raise NoteError(f"invalid signature from key {s.name}+{s.key_id:08x}")
        verified.append(s)
    if not verified:
        names = ", ".join(sorted({s.name for s in sigs})) or "none"
        raise NoteError(f"note is not signed by any trusted key (signers present: {names})")
    return Note(text, verified, unverified)


def sign(text: str, *signers: Signer) -> str:
    """Sign ``text`` (which must end in a newline) with each signer; return the note."""
    if not text.endswith("\n"):
        raise InvalidInput("note text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        # Legal in the spec, but a checkpoint never has one and it would make
        # the split ambiguous to a reader that splits at the first blank line.
        raise InvalidInput("note text must not contain blank lines")
    for ch in text:
        if ch < " " and ch != "\n":
            raise InvalidInput(f"note text contains control character 0x{ord(ch):02x}")
    lines = "".join(signature_line(s.name, s.key_id, s.sign(text)) for s in signers)
    return f"{text}\n{lines}"

"""Ed25519 signing identities of people: officers, approvers, custodians' signing keys.

An identity file (secret, mode 0600) holds comment lines and one key line::

    # strongroom identity (Ed25519): keep this file secret
    # name: alice
    # public key: sr-ed25519-pub1...
    SR-ED25519-SECRET-1...

A public key file holds the ``sr-ed25519-pub1...`` line (Bech32 of the raw
32-byte key, like age's ``age1...`` recipients) and optionally ``# name:``.
Both are Bech32 with a checksum, so a mistyped key is refused, not misread.

Use it like this::

    ident = Identity.generate("alice"); ident.save(path)       # 0600, never overwrites
    ident = Identity.load(path)                                 # InvalidInput if malformed
    pub = PublicIdentity.load(pub_path)                         # what officers publish

Do not print or log :attr:`Identity.private_key` or the secret line; errors here
name the file, never its contents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto import bech32
from strongroom.crypto.dsse import key_id
from strongroom.errors import InvalidInput, NotFound
from strongroom.outputs import write_output

__all__ = ["PUBLIC_HRP", "SECRET_HRP", "Identity", "PublicIdentity", "write_private_file"]

#: Bech32 human-readable parts of public keys and secret keys.
PUBLIC_HRP = "sr-ed25519-pub"
SECRET_HRP = "sr-ed25519-secret-"
_NAME = re.compile(r"^#\s*name:\s*(\S.*?)\s*$")
_VALID_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never overwriting), write ``data`` and fsync it."""
    write_output(path, data, overwrite=False)


def _check_name(name: str) -> str:
    if not _VALID_NAME.fullmatch(name):
        raise InvalidInput(f"identity name {name!r} must be 1..64 of A-Z a-z 0-9 . _ @ + -")
    return name


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{what} file not found", obj=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {what} file ({type(exc).__name__})", obj=str(path)) from exc


def _parse(text: str, hrp: str, what: str, obj: str) -> tuple[bytes, str | None]:
    name: str | None = None
    found: bytes | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        match = _NAME.match(line)
        if match:
            name = _check_name(match.group(1))
            continue
        if not line or line.startswith("#"):
            continue
        try:
            got_hrp, data = bech32.decode(line)
        except ValueError as exc:
            raise InvalidInput(f"line {number} is not a valid {what} ({exc})", obj=obj) from None
        if got_hrp != hrp or len(data) != 32:
            raise InvalidInput(f"line {number} is not a {what}", obj=obj,
                               remedy=f"expected a line starting with {hrp}1")
        if found is not None:
            raise InvalidInput(f"more than one {what} in the file", obj=obj)
        found = data
    if found is None:
        raise InvalidInput(f"no {what} found", obj=obj)
    return found, name


@dataclass(frozen=True)
class PublicIdentity:
    """A person's Ed25519 public key and an optional name."""

    public_bytes: bytes
    name: str | None = None

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key as a ``cryptography`` object."""
        return Ed25519PublicKey.from_public_bytes(self.public_bytes)

    @property
    def key_id(self) -> str:
        """DSSE key id (16 hex characters of SHA-256 of the raw key)."""
        return key_id(self.public_key)

    @property
    def principal(self) -> str:
        """How audit entries name this key's holder: ``name`` or ``ed25519:<key id>``."""
        return self.name or f"ed25519:{self.key_id}"

    def __str__(self) -> str:
        return bech32.encode(PUBLIC_HRP, self.public_bytes)

    def to_text(self) -> str:
        """Public key file contents."""
        name = f"# name: {self.name}\n" if self.name else ""
        return f"# strongroom public key (Ed25519)\n{name}{self}\n"

    @classmethod
    def parse(cls, text: str, obj: str = "public key") -> PublicIdentity:
        """Parse public key file text (an ``sr-ed25519-pub1...`` line)."""
        data, name = _parse(text, PUBLIC_HRP, "strongroom Ed25519 public key", obj)
        return cls(data, name)

    @classmethod
    def load(cls, path: Path) -> PublicIdentity:
        """Read a public key file."""
        return cls.parse(_read(path, "public key"), str(path))


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing key with an optional name; its file is secret."""

    private_key: Ed25519PrivateKey = field(repr=False)
    name: str | None = None

    @classmethod
    def generate(cls, name: str | None = None) -> Identity:
        """A new random identity."""
        return cls(Ed25519PrivateKey.generate(), _check_name(name) if name else None)

    @property
    def public(self) -> PublicIdentity:
        """The public half."""
        return PublicIdentity(self.private_key.public_key().public_bytes_raw(), self.name)

    def to_text(self) -> str:
        """Identity file contents (secret)."""
        secret = bech32.encode(SECRET_HRP, self.private_key.private_bytes_raw()).upper()
        name = f"# name: {self.name}\n" if self.name else ""
        return (f"# strongroom identity (Ed25519): keep this file secret\n{name}"
                f"# public key: {self.public}\n{secret}\n")

    @classmethod
    def parse(cls, text: str, obj: str = "identity") -> Identity:
        """Parse identity file text."""
        data, name = _parse(text, SECRET_HRP, "strongroom Ed25519 identity", obj)
        return cls(Ed25519PrivateKey.from_private_bytes(data), name)

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read an identity file."""
        return cls.parse(_read(path, "identity"), str(path))

    def save(self, path: Path) -> None:
        """Write the identity file with mode 0600; never overwrites."""
        write_private_file(path, self.to_text().encode("utf-8"))

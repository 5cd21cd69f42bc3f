"""Ed25519 signing identities of people (optionally with ML-DSA-65 beside): officers, approvers, custodians.

An identity file (secret, mode 0600) holds comment lines and one key line::

    # strongroom identity (Ed25519): keep this file secret
    # name: alice
    # public key: sr-ed25519-pub1...
    SR-ED25519-SECRET-1...

A public key file holds the ``sr-ed25519-pub1...`` line (Bech32 of the raw
32-byte key, like age's ``age1...`` recipients) and optionally ``# name:``.
Both are Bech32 with a checksum, so a mistyped key is refused, not misread.

A *hybrid* identity (``keys new-identity --pq``) also holds an ML-DSA-65 key,
for statements that must stay verifiable for years (approvals, Grants, transfer
manifests; see :mod:`strongroom.crypto.hybrid_sig`): one more line in each file,
``SR-MLDSA65-SECRET-1...`` (the 32-byte seed) and ``sr-mldsa65-pub1...`` (the
1952-byte public key). Files without those lines are classical identities and
parse exactly as before.

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
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.crypto import bech32
from strongroom.crypto.dsse import key_id
from strongroom.crypto.ed25519 import check_public_key
from strongroom.errors import InvalidInput, NotFound
from strongroom.outputs import write_output

__all__ = ["MLDSA_PUBLIC_HRP", "MLDSA_SECRET_HRP", "PUBLIC_HRP", "SECRET_HRP", "Identity",
           "PublicIdentity", "write_private_file"]

#: Bech32 human-readable parts of public keys and secret keys.
PUBLIC_HRP = "sr-ed25519-pub"
SECRET_HRP = "sr-ed25519-secret-"
#: Bech32 human-readable parts of a hybrid identity's ML-DSA-65 public key and seed.
MLDSA_PUBLIC_HRP = "sr-mldsa65-pub"
MLDSA_SECRET_HRP = "sr-mldsa65-secret-"
_MLDSA_PUBLIC_LEN = 1952
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


def _parse(text: str, hrp: str, what: str, obj: str,
           pq: tuple[str, int] = ("", 0)) -> tuple[bytes, str | None, bytes]:
    """The key of ``hrp``, the name and the optional ML-DSA key of ``pq`` (HRP, length)."""
    name: str | None = None
    found: bytes | None = None
    extra = b""
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
        if pq[0] and got_hrp == pq[0]:
            if len(data) != pq[1] or extra:
                raise InvalidInput(f"line {number} is not one ML-DSA-65 key of {pq[1]} bytes",
                                   obj=obj, remedy="use the file keys new-identity --pq wrote")
            extra = data
            continue
        if got_hrp != hrp or len(data) != 32:
            raise InvalidInput(f"line {number} is not a {what}", obj=obj,
                               remedy=f"expected a line starting with {hrp}1")
        if found is not None:
            raise InvalidInput(f"more than one {what} in the file", obj=obj)
        found = data
    if found is None:
        raise InvalidInput(f"no {what} found", obj=obj)
    return found, name, extra


@dataclass(frozen=True)
class PublicIdentity:
    """A person's Ed25519 public key, an optional name and an optional ML-DSA-65 public key."""

    public_bytes: bytes
    name: str | None = None
    #: Raw ML-DSA-65 public key of a hybrid identity; empty for a classical one.
    mldsa_bytes: bytes = b""

    def __post_init__(self) -> None:
        # a small-order key would "sign" anything (crypto.ed25519.check_public_key)
        check_public_key(self.public_bytes, obj=self.name or "public key")

    @property
    def mldsa_key(self) -> MLDSA65PublicKey | None:
        """The ML-DSA-65 public key, or None for a classical identity."""
        return MLDSA65PublicKey.from_public_bytes(self.mldsa_bytes) if self.mldsa_bytes else None

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
        if not self.mldsa_bytes:
            return f"# strongroom public key (Ed25519)\n{name}{self}\n"
        pq = bech32.encode(MLDSA_PUBLIC_HRP, self.mldsa_bytes)
        return f"# strongroom public key (Ed25519 + ML-DSA-65)\n{name}{self}\n{pq}\n"

    @classmethod
    def parse(cls, text: str, obj: str = "public key") -> PublicIdentity:
        """Parse public key file text (an ``sr-ed25519-pub1...`` line)."""
        data, name, pq = _parse(text, PUBLIC_HRP, "strongroom Ed25519 public key", obj,
                                (MLDSA_PUBLIC_HRP, _MLDSA_PUBLIC_LEN))
        check_public_key(data, obj=obj)  # names the file, not only the key's name
        if pq:
            try:
                MLDSA65PublicKey.from_public_bytes(pq)
            except ValueError:
                raise InvalidInput("the ML-DSA-65 public key is not valid", obj=obj) from None
        return cls(data, name, pq)

    @classmethod
    def load(cls, path: Path) -> PublicIdentity:
        """Read a public key file."""
        return cls.parse(_read(path, "public key"), str(path))


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing key with an optional name (and ML-DSA-65 key); its file is secret."""

    private_key: Ed25519PrivateKey = field(repr=False)
    name: str | None = None
    #: The ML-DSA-65 key of a hybrid identity (``--pq``); None for a classical one.
    mldsa_key: MLDSA65PrivateKey | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, name: str | None = None, *, pq: bool = False) -> Identity:
        """A new random identity; with ``pq`` it also holds an ML-DSA-65 key."""
        return cls(Ed25519PrivateKey.generate(), _check_name(name) if name else None,
                   MLDSA65PrivateKey.generate() if pq else None)

    @property
    def public(self) -> PublicIdentity:
        """The public half."""
        pq = self.mldsa_key.public_key().public_bytes_raw() if self.mldsa_key else b""
        return PublicIdentity(self.private_key.public_key().public_bytes_raw(), self.name, pq)

    def to_text(self) -> str:
        """Identity file contents (secret)."""
        secret = bech32.encode(SECRET_HRP, self.private_key.private_bytes_raw()).upper()
        name = f"# name: {self.name}\n" if self.name else ""
        if self.mldsa_key is None:
            return (f"# strongroom identity (Ed25519): keep this file secret\n{name}"
                    f"# public key: {self.public}\n{secret}\n")
        seed = bech32.encode(MLDSA_SECRET_HRP, self.mldsa_key.private_bytes_raw()).upper()
        return (f"# strongroom identity (Ed25519 + ML-DSA-65): keep this file secret\n{name}"
                f"# public key: {self.public}\n{secret}\n{seed}\n")

    @classmethod
    def parse(cls, text: str, obj: str = "identity") -> Identity:
        """Parse identity file text."""
        data, name, seed = _parse(text, SECRET_HRP, "strongroom Ed25519 identity", obj,
                                  (MLDSA_SECRET_HRP, 32))
        return cls(Ed25519PrivateKey.from_private_bytes(data), name,
                   MLDSA65PrivateKey.from_seed_bytes(seed) if seed else None)

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read an identity file."""
        return cls.parse(_read(path, "identity"), str(path))

    def save(self, path: Path) -> None:
        """Write the identity file with mode 0600; never overwrites."""
        write_private_file(path, self.to_text().encode("utf-8"))

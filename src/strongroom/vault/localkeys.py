"""Interim key custody: a KEK and signing keys kept in the data directory.

**This is a stand-in, documented as such in docs/key-custody-interim.md.** Until
the sealed keyring (k-of-n unseal, HSM) lands, the key-encryption key that wraps
every file key and the Ed25519 keys that sign manifests and audit checkpoints
live as files under ``$STRONGROOM_HOME/keys/`` with mode 0600. Anyone who can
read that directory can decrypt every artifact: protect it accordingly.

The KEK is used only through :class:`KekRecipient` and :class:`KekIdentity`,
the same ``Recipient``/``Identity`` protocols as age's X25519 keys, so the
keyring replaces this module without touching the vault's encryption code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.crypto.age import FILE_KEY_SIZE, Stanza
from strongroom.errors import ConfigError, HeaderError, IntegrityError

__all__ = ["KEK_STANZA", "KekIdentity", "KekRecipient", "LocalKeys"]

#: age stanza type of a file key wrapped by a strongroom KEK.
KEK_STANZA = "strongroom-kek"
_NONCE = 12


def _aad(args: Sequence[str]) -> bytes:
    return " ".join((KEK_STANZA, *args)).encode("ascii")


@dataclass(frozen=True)
class KekRecipient:
    """Wraps a file key under the KEK (AES-256-GCM, the stanza's args as AAD)."""

    kek_id: str
    version: int
    key: bytes

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """One ``strongroom-kek`` stanza holding the wrapped file key."""
        args = (self.kek_id, str(self.version))
        nonce = secrets.token_bytes(_NONCE)
        body = nonce + AESGCM(self.key).encrypt(nonce, bytes(file_key), _aad(args))
        return [Stanza(KEK_STANZA, args, body)]


@dataclass(frozen=True)
class KekIdentity:
    """Unwraps ``strongroom-kek`` stanzas made by this KEK."""

    kek_id: str
    version: int
    key: bytes

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key, or None when no stanza is addressed to this KEK."""
        for stanza in stanzas:
            if stanza.type != KEK_STANZA:
                continue
            if len(stanza.args) != 2:
                raise HeaderError("strongroom-kek stanza must have 2 arguments", obj="age header")
            if stanza.args != (self.kek_id, str(self.version)):
                continue
            if len(stanza.body) != _NONCE + FILE_KEY_SIZE + 16:
                raise HeaderError("strongroom-kek stanza body has the wrong size", obj="age header")
            nonce, sealed = stanza.body[:_NONCE], stanza.body[_NONCE:]
            try:
                return AESGCM(self.key).decrypt(nonce, sealed, _aad(stanza.args))
            except InvalidTag as exc:
                raise IntegrityError(
                    f"file key wrapped by KEK {self.kek_id} v{self.version} fails authentication",
                    obj="age header",
                ) from exc
        return None


def _write_secret_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalKeys:
    """The interim KEK and signing keys under ``<home>/keys``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        kek = json.loads((directory / "kek.json").read_text())
        key = base64.b64decode(kek["key"])
        self.kek_recipient = KekRecipient(kek["id"], int(kek["version"]), key)
        self.kek_identity = KekIdentity(kek["id"], int(kek["version"]), key)
        self.vault_signing_key = self._load_ed25519(directory / "vault-signing.pem")
        self.log_signing_key = self._load_ed25519(directory / "log-signing.pem")

    @staticmethod
    def _load_ed25519(path: Path) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("not an Ed25519 private key", obj=str(path))
        return key

    @classmethod
    def load_or_create(cls, directory: Path) -> LocalKeys:
        """Load the keys, creating any that do not exist yet (0600 files in a 0700 dir)."""
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            kek_path = directory / "kek.json"
            if not kek_path.exists():
                kek = {
                    "id": secrets.token_hex(8),
                    "version": 1,
                    "key": base64.b64encode(secrets.token_bytes(32)).decode(),
                }
                with contextlib.suppress(FileExistsError):  # another process won the race
                    _write_secret_file(kek_path, json.dumps(kek).encode())
            for name in ("vault-signing.pem", "log-signing.pem"):
                path = directory / name
                if not path.exists():
                    pem = Ed25519PrivateKey.generate().private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                    with contextlib.suppress(FileExistsError):
                        _write_secret_file(path, pem)
            return cls(directory)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cannot read or create the interim key files ({type(exc).__name__})",
                obj=str(directory),
                remedy="check the data directory's permissions; restore keys/ from backup if it was lost",
            ) from exc

"""Audit settings from the environment (``STRONGROOM_*``) and the interim log key.

* ``STRONGROOM_LOG_ORIGIN``: the log's origin (default ``strongroom.local/<key hash>``;
  an existing log keeps the origin it was created with).
* ``STRONGROOM_WITNESSES``: witnesses as ``<url> <verifier key>`` pairs separated
  by commas or newlines, e.g.
  ``http://127.0.0.1:7380 witness.example/w1+1234abcd+BAbc...``.
* ``STRONGROOM_WITNESS_QUORUM``: how many of them must cosign for a checkpoint
  to count as published (default 0).

The log's checkpoint key is the interim Ed25519 key ``<home>/keys/log-signing.pem``
(shared with the vault) until the key-custody work lands.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import ConfigError
from strongroom.store.db import Store

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

__all__ = ["AuditSettings", "load_log_key"]

LOG_KEY_FILE = Path("keys") / "log-signing.pem"


class AuditSettings(BaseSettings):
    """Where checkpoints go and how many witnesses must cosign."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    log_origin: str | None = Field(default=None, description="log origin (key name)")
    witnesses: str = Field(default="", description="'<url> <vkey>' pairs, comma separated")
    witness_quorum: int = Field(default=0, ge=0, description="cosignatures needed to publish")

    def witness_list(self) -> list[tuple[str, str]]:
        """The configured ``(url, verifier key)`` pairs."""
        out = []
        for item in re.split(r"[,\n]", self.witnesses):
            parts = item.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ConfigError(
                    f"bad witness entry {item.strip()!r}", obj="STRONGROOM_WITNESSES",
                    remedy="write '<url> <verifier key>' pairs separated by commas",
                )
            out.append((parts[0], parts[1]))
        return out

    def default_origin(self, key: Ed25519PrivateKey) -> str:
        """The configured origin, or one derived from the log key."""
        if self.log_origin:
            return self.log_origin
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return f"strongroom.local/{hashlib.sha256(raw).hexdigest()[:16]}"

    def open_log(self, store: Store, key: Ed25519PrivateKey, **kwargs: Any) -> AuditLog:
        """An :class:`~strongroom.audit.log.AuditLog` on ``store`` signing with ``key``."""
        from sqlalchemy import select

        from strongroom.audit.log import AuditLog
        from strongroom.audit.witness import WitnessClient
        from strongroom.store.tables.audit import AuditHead

        origin = self.log_origin
        if origin is None:
            with store.engine.connect() as conn:
                origin = conn.execute(
                    select(AuditHead.origin).where(AuditHead.id == 1)
                ).scalar_one_or_none()
        origin = origin or self.default_origin(key)
        witnesses = [WitnessClient(url, vkey) for url, vkey in self.witness_list()]
        kwargs.setdefault("witnesses", witnesses)
        kwargs.setdefault("quorum", self.witness_quorum)
        return AuditLog(store, Ed25519Signer(origin, key), origin, **kwargs)


def load_log_key(home: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The interim log signing key ``<home>/keys/log-signing.pem`` (created 0600 if absent)."""
    path = home / LOG_KEY_FILE
    try:
        if not path.exists() and create:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, pem)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the log signing key ({type(exc).__name__})", obj=str(path),
            remedy="check the data directory (STRONGROOM_HOME) and its permissions",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("the log signing key is not an Ed25519 key", obj=str(path))
    return key

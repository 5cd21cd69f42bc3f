"""Audit settings from the environment (``STRONGROOM_*``) and the interim log key.

* ``STRONGROOM_LOG_ORIGIN``: the log's origin (default ``strongroom.local/<key hash>``;
  an existing log keeps the origin it was created with).
* ``STRONGROOM_WITNESSES``: witnesses as ``<url> <verifier key>`` pairs separated
  by commas or newlines, e.g.
  ``http://127.0.0.1:7380 witness.example/w1+1234abcd+BAbc...``.
* ``STRONGROOM_WITNESS_QUORUM``: how many of them must cosign for a checkpoint
  to count as published (default 0).
* ``STRONGROOM_AUDIT_COMMIT_DELAY_MS``: how long the writer may hold a batch open
  for key releases already under way so that they share one commit (default 2;
  0 commits every batch at once). Bounded at 50.
* ``STRONGROOM_DB_LOCK_TIMEOUT_S``: how long an audit append (with the egress
  charge of a key release) waits for the database's locks before the decision
  is refused with ``AuditUnavailable`` (default 5; SQLite busy timeout,
  PostgreSQL ``lock_timeout`` and ``statement_timeout``). The refusal is
  appended to the log once it can write again.
* ``STRONGROOM_CHECKPOINT_INTERVAL_S``: the longest a new entry waits before the
  process holding the unsealed log signs a checkpoint over it and pushes it to
  the witnesses (default 2; a tail deletion inside this window, plus the
  witnesses' answer time, is the one that goes unseen: see docs/audit.md).

The log's checkpoint key lives in the sealed keyring's barrier; processes other
than the key agent sign checkpoints through it (``(public key, sign)``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.crypto.note import Ed25519Signer, ExternalEd25519Signer
from strongroom.errors import ConfigError
from strongroom.store.db import Store

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

__all__ = ["AuditSettings", "LogKey"]

#: A log's checkpoint key: a private key, or (public key, sign bytes) held elsewhere.
LogKey = Ed25519PrivateKey | tuple[Ed25519PublicKey, Callable[[bytes], bytes]]



class AuditSettings(BaseSettings):
    """Where checkpoints go and how many witnesses must cosign."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    log_origin: str | None = Field(default=None, description="log origin (key name)")
    witnesses: str = Field(default="", description="'<url> <vkey>' pairs, comma separated")
    witness_quorum: int = Field(default=0, ge=0, description="cosignatures needed to publish")
    audit_commit_delay_ms: float = Field(default=2.0, ge=0, le=50,
                                         description="group-commit delay for announced appends")
    db_lock_timeout_s: float = Field(default=5.0, gt=0, le=600,
                                     description="longest wait for the database's locks")
    checkpoint_interval_s: float = Field(default=2.0, gt=0, le=3600,
                                         description="sign and publish new entries this often")

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

    def default_origin(self, key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
        """The configured origin, or one derived from the log key."""
        if self.log_origin:
            return self.log_origin
        public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"strongroom.local/{hashlib.sha256(raw).hexdigest()[:16]}"

    def open_log(self, store: Store, key: LogKey, **kwargs: Any) -> AuditLog:
        """An :class:`~strongroom.audit.log.AuditLog` on ``store`` signing with ``key``.

        ``key`` is a private key, or ``(public key, sign)`` where ``sign`` signs
        bytes with a key held elsewhere (the key agent: the barrier's checkpoint key).
        """
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
        public = key[0] if isinstance(key, tuple) else key.public_key()
        origin = origin or self.default_origin(public)
        witnesses = [WitnessClient(url, vkey) for url, vkey in self.witness_list()]
        kwargs.setdefault("witnesses", witnesses)
        kwargs.setdefault("quorum", self.witness_quorum)
        kwargs.setdefault("commit_delay", self.audit_commit_delay_ms / 1000)
        kwargs.setdefault("lock_timeout", self.db_lock_timeout_s)
        signer: Ed25519Signer | ExternalEd25519Signer
        if isinstance(key, tuple):
            signer = ExternalEd25519Signer(origin, key[0], key[1])
        else:
            signer = Ed25519Signer(origin, key)
        return AuditLog(store, signer, origin, **kwargs)

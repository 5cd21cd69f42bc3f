"""Tables of the keyring (owned by ``strongroom.keys``).

``keyring_state`` is one row (id 1) with the public facts needed while sealed:
backend, vault id, threshold, custodians' age recipients and the published
share commitments, plus the keyring check (a known plaintext sealed under the
root key) and, for the HSM backend, the root key wrapped by the token.
``keyring_entries`` is the barrier: every secret (KEK versions, signing keys,
officers' keys) AES-256-GCM encrypted under a key derived from the root key,
with the path and entry version as associated data. ``wrapped_keys`` holds
each blob's file key wrapped by one KEK version (several rows during a
rewrap). Nothing here is trusted: the keyring authenticates every read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["KeyringEntry", "KeyringState", "WrappedKey"]


class KeyringState(Base):
    """The keyring's public state (one row, id 1); present once ``init`` committed."""

    __tablename__ = "keyring_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    vault_id: Mapped[str] = mapped_column(String(64), nullable=False)
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    threshold: Mapped[int] = mapped_column(Integer, nullable=False)
    shares: Mapped[int] = mapped_column(Integer, nullable=False)
    ceremony_json: Mapped[str] = mapped_column(Text, nullable=False)
    check: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    wrapped_root: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class KeyringEntry(Base):
    """One barrier entry: ``nonce ‖ AES-256-GCM(ciphertext ‖ tag)`` of a JSON value."""

    __tablename__ = "keyring_entries"

    path: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class WrappedKey(Base):
    """A blob's file key wrapped by one KEK version (AAD binds vault, version, blob)."""

    __tablename__ = "wrapped_keys"

    blob_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kek_version: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, index=True
    )
    wrapped: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

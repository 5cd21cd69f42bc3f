"""Tables of the audit log (owned by ``strongroom.audit``).

``audit_entries`` holds each event's canonical JSON and its RFC 9162 leaf
hash; ``audit_nodes`` holds every completed perfect subtree hash above the
leaves (so proofs are O(log n) reads); ``audit_head`` is a single row (id 1)
that appenders lock to assign indices without gaps or forks;
``audit_checkpoints`` keeps every signed checkpoint with the cosignatures
collected for it. None of it is trusted: ``AuditLog.verify`` recomputes it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["AuditCheckpoint", "AuditEntry", "AuditHead", "AuditNode"]


class AuditHead(Base):
    """The log's head: its size and root, the latest signed checkpoint, its origin."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    origin: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hmac_salt: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)


class AuditEntry(Base):
    """One event: its index, canonical JSON bytes and leaf hash.

    On SQLite ``idx`` is ``INTEGER PRIMARY KEY``, the rowid itself (one b-tree,
    migration ``0015_audit_rowid``); ``BIGINT`` elsewhere.
    """

    __tablename__ = "audit_entries"

    idx: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                     primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class AuditNode(Base):
    """A perfect subtree hash: ``2**level`` leaves starting at ``idx << level``.

    ``WITHOUT ROWID`` on SQLite: the rows live in their primary key's b-tree alone.
    """

    __tablename__ = "audit_nodes"
    __table_args__ = ({"sqlite_with_rowid": False},)

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP signed note, with collected cosignatures)."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

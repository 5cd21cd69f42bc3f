"""Tables of the access part (owned by ``strongroom.access``).

``access_statements`` holds every signed access statement as a DSSE envelope:
officers' enrollments, key revocations, resource labels and policies; people's
requests, approvals, denials, grants, grant revocations, break-glass statements
and their reviews. The row's other columns (kind, subject, resource, signer,
expiry) are an index for lookups only: nothing here is believed without
verifying the envelope's signatures against keys that lead back to the
officers pinned in the sealed keyring. Writing a row grants nothing.

Secret documents are artifacts (``artifacts.kind = "document"``) and live in
the vault's tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["AccessGeneration", "AccessStatement"]


class AccessStatement(Base):
    """One signed access statement (DSSE envelope) and its lookup keys."""

    __tablename__ = "access_statements"
    __table_args__ = (
        Index("ix_access_statements_kind_subject", "kind", "subject"),
        Index("ix_access_statements_kind_resource", "kind", "resource"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: enrollment, revocation, label, policy, request, approval, denial, grant,
    #: grant-revocation, break-glass, review, draft
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    #: key id of the person concerned, a request/grant/break-glass id, or "policy"
    subject: Mapped[str] = mapped_column(String(128), nullable=False)
    #: resource name the statement concerns (empty when none)
    resource: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    #: key id of the first signer (display only)
    signer: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    #: SHA-256 of the payload: one row per distinct statement
    digest: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    envelope: Mapped[str] = mapped_column(Text, nullable=False)
    #: Unix seconds after which the statement is of no use (0: none); display and pruning only
    expires: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AccessGeneration(Base):
    """One row (``id`` 1) whose ``generation`` every write to ``access_statements`` bumps.

    :func:`strongroom.access.statements.put` increments it in the same
    transaction as the insert or merge, so readers that cached verified
    statements learn from one cheap query that they must read again.
    """

    __tablename__ = "access_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

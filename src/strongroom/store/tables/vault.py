"""Tables of the vault: artifacts (weights, documents) and their encrypted files.

The signed manifest (``manifest_json`` + ``manifest_sig``) is the authority;
the ``artifact_files`` rows are an index for listing and lookups, and are
re-checked against the manifest before use.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from strongroom.store.base import Base

__all__ = ["Artifact", "ArtifactFile"]


class Artifact(Base):
    """One version of a named artifact, described by a signed manifest."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_artifacts_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, default="weights")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    total_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    manifest_json: Mapped[str] = mapped_column(Text, nullable=False)
    manifest_sig: Mapped[str] = mapped_column(Text, nullable=False)

    files: Mapped[list[ArtifactFile]] = relationship(
        back_populates="artifact", cascade="all, delete-orphan", order_by="ArtifactFile.path"
    )


class ArtifactFile(Base):
    """One file of an artifact, stored as its own age-encrypted blob."""

    __tablename__ = "artifact_files"
    __table_args__ = (UniqueConstraint("artifact_id", "path", name="uq_artifact_files_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    blob_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    ct_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ct_sha256: Mapped[str] = mapped_column(String(64), nullable=False)

    artifact: Mapped[Artifact] = relationship(back_populates="files")

"""Vault: artifacts and their encrypted files.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total_size", sa.BigInteger(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("manifest_sig", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
    )
    op.create_index("ix_artifacts_name", "artifacts", ["name"])
    op.create_table(
        "artifact_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("blob_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("ct_size", sa.BigInteger(), nullable=False),
        sa.Column("ct_sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_files"),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name="fk_artifact_files_artifact_id_artifacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("artifact_id", "path", name="uq_artifact_files_path"),
        sa.UniqueConstraint("blob_id", name="uq_artifact_files_blob_id"),
    )
    op.create_index("ix_artifact_files_artifact_id", "artifact_files", ["artifact_id"])


def downgrade() -> None:
    op.drop_table("artifact_files")
    op.drop_table("artifacts")

"""Keyring: public state, barrier entries and wrapped file keys.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyring_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("vault_id", sa.String(64), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("shares", sa.Integer(), nullable=False),
        sa.Column("ceremony_json", sa.Text(), nullable=False),
        sa.Column("check", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_root", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_keyring_state"),
    )
    op.create_table(
        "keyring_entries",
        sa.Column("path", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("path", name="pk_keyring_entries"),
    )
    op.create_table(
        "wrapped_keys",
        sa.Column("blob_id", sa.String(100), nullable=False),
        sa.Column("kek_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "kek_version", name="pk_wrapped_keys"),
    )
    op.create_index("ix_wrapped_keys_kek_version", "wrapped_keys", ["kek_version"])


def downgrade() -> None:
    op.drop_index("ix_wrapped_keys_kek_version", table_name="wrapped_keys")
    op.drop_table("wrapped_keys")
    op.drop_table("keyring_entries")
    op.drop_table("keyring_state")

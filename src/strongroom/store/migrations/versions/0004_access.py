"""Access: signed access statements (enrollments, policies, requests, approvals, grants).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_statements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(200), nullable=False),
        sa.Column("signer", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_statements"),
        sa.UniqueConstraint("digest", name="uq_access_statements_digest"),
    )
    op.create_index("ix_access_statements_kind_subject", "access_statements",
                    ["kind", "subject"])
    op.create_index("ix_access_statements_kind_resource", "access_statements",
                    ["kind", "resource"])


def downgrade() -> None:
    op.drop_index("ix_access_statements_kind_resource", table_name="access_statements")
    op.drop_index("ix_access_statements_kind_subject", table_name="access_statements")
    op.drop_table("access_statements")

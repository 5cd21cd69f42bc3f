"""Access generation: one row whose counter every write to ``access_statements`` bumps.

The release gate caches what it verified from the access statements (directory
view, policy, a principal's grants, cap holders) and re-reads this counter on
every release: a new statement or a merged cosignature changes it, so the
cache is rebuilt before the next decision.

Revision ID: 0007_access_gen
Revises: 0006_egress
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_access_gen"
down_revision = "0006_egress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "access_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_generation"),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("access_generation")

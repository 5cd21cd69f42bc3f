"""Egress ledger: the Grant (or break-glass) byte budget each charge counts against.

A Grant's lifetime byte budget is charged in ``egress_charges`` with the
release, inside the audit log's group-commit transaction, so every gate on the
database shares it. Rows written before this revision keep ``budget_id`` NULL
and count against no Grant budget.

Revision ID: 0009_egress_budget
Revises: 0008_nonces
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_egress_budget"
down_revision = "0008_nonces"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("egress_charges", sa.Column("budget_id", sa.String(128), nullable=True))
    # (budget_id, nbytes) covers the per-batch SUM: no table rows are read.
    op.create_index("ix_egress_charges_budget_id", "egress_charges", ["budget_id", "nbytes"])


def downgrade() -> None:
    op.drop_index("ix_egress_charges_budget_id", table_name="egress_charges")
    with op.batch_alter_table("egress_charges") as batch:
        batch.drop_column("budget_id")

"""Egress ledger state: one row whose generation every change to charges or budgets bumps.

A process keeps running totals of the egress windows in memory; the generation
tells it when another process (or a rolled-back batch) changed the ledger, and
the row is what PostgreSQL transactions lock to serialise charges.

Revision ID: 0006_egress
Revises: 0006c
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_egress"
down_revision = "0006c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "egress_ledger",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_egress_ledger"),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("egress_ledger")

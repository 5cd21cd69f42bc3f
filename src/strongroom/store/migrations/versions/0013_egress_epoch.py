"""Egress ledger state: an epoch that only changes which are not appends bump.

Every ledger transaction that changes it bumps ``generation``. Charges decided
under the ledger lock are appends: each is stamped at or after every charge
already held, so a process whose cached totals are a few generations old
catches up by reading only the rows stamped since its newest one (and finding
none is suspect: only a transaction that added rows moves the generation). A
refund, a repair that puts back old rows, or a budget change also bumps
``epoch``; a process that sees another epoch reloads its totals from the rows
(and compares them with what it knew).
Before this, every host's commit made every other host reload whole windows,
so CPU per release grew with the number of hosts.

Revision ID: 0013_egress_epoch
Revises: 0012_alert_assignee
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_egress_epoch"
down_revision = "0012_alert_assignee"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("egress_ledger") as batch:
        batch.add_column(sa.Column("epoch", sa.BigInteger(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("egress_ledger") as batch:
        batch.drop_column("epoch")

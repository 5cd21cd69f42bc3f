"""Monitor: the lease that elects one monitor loop per database, with its cursor.

Every host of a deployment runs a monitor loop at unseal; the one holding
``monitor_leases`` (renewed every interval, taken over when it lapses) runs
the detectors over the shared audit log and records how far it has read, so a
takeover resumes where the last holder stopped.

Revision ID: 0010_monitor_lease
Revises: 0009_egress_budget
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_monitor_lease"
down_revision = "0009_egress_budget"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("caught_up_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_monitor_leases"),
    )


def downgrade() -> None:
    op.drop_table("monitor_leases")

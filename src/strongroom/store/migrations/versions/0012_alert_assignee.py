"""Monitor: who an alert is assigned to, and when (the console's triage).

``monitor_alerts.assigned_to`` names the security officer handling the alert
(NULL: nobody yet); ``assigned_at`` is when it was assigned. Each assignment is
also an ``alert.assign`` audit entry: the columns are the triage view, the log
the record.

Revision ID: 0012_alert_assignee
Revises: 0011_alert_routes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_alert_assignee"
down_revision = "0011_alert_routes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_alerts") as batch:
        batch.add_column(sa.Column("assigned_to", sa.String(200), nullable=True))
        batch.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_monitor_alerts_assigned_to", ["assigned_to"])


def downgrade() -> None:
    with op.batch_alter_table("monitor_alerts") as batch:
        batch.drop_index("ix_monitor_alerts_assigned_to")
        batch.drop_column("assigned_at")
        batch.drop_column("assigned_to")

"""Monitor: the outbox of the alert routes of ``alerts.yaml`` and each route's starting point.

``alert_deliveries`` holds one row per alert and route (unique): ``pending``
until the receiver accepted it (``delivered``), ``failed`` when it refused it
for good, or ``skipped`` by the route's filter. ``alert_routes`` records, per
route name, the alert id above which it is fed, and its back-off: the monitor
loop's leader claims a route by moving ``retry_at`` before it sends and backs
it off (``failures``) while the receiver is away.

Revision ID: 0011_alert_routes
Revises: 0010_monitor_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_alert_routes"
down_revision = "0010_monitor_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_attempt_at", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["monitor_alerts.id"], ondelete="CASCADE",
                                name="fk_alert_deliveries_alert_id_monitor_alerts"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.UniqueConstraint("alert_id", "route", name="uq_alert_deliveries_alert_route"),
    )
    op.create_index("ix_alert_deliveries_route_state", "alert_deliveries",
                    ["route", "state", "id"])
    op.create_table(
        "alert_routes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("floor", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_alert_routes"),
    )


def downgrade() -> None:
    op.drop_table("alert_routes")
    op.drop_index("ix_alert_deliveries_route_state", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")

"""Monitor: egress ledger and budgets, alerts and their delivery queue, canaries, cursors.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "egress_charges",
        sa.Column("charge_id", sa.String(100), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("artifact", sa.String(200), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("charge_id", name="pk_egress_charges"),
    )
    op.create_index("ix_egress_charges_principal_at", "egress_charges", ["principal", "at"])
    op.create_index("ix_egress_charges_artifact_at", "egress_charges", ["artifact", "at"])
    op.create_index("ix_egress_charges_at", "egress_charges", ["at"])
    op.create_table(
        "egress_budgets",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("window_s", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cap_bytes", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject", "window_s", name="pk_egress_budgets"),
    )
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("obj", sa.String(500), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_alerts"),
        sa.UniqueConstraint("dedup_key", name="uq_monitor_alerts_dedup_key"),
    )
    op.create_index("ix_monitor_alerts_rule", "monitor_alerts", ["rule"])
    op.create_index("ix_monitor_alerts_subject", "monitor_alerts", ["subject"])
    op.create_table(
        "monitor_alert_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["monitor_alerts.id"], ondelete="CASCADE",
            name="fk_monitor_alert_outbox_alert_id_monitor_alerts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_alert_outbox"),
    )
    op.create_index("ix_monitor_alert_outbox_alert_id", "monitor_alert_outbox", ["alert_id"])
    op.create_index(
        "ix_monitor_alert_outbox_pending", "monitor_alert_outbox", ["delivered_at", "next_attempt"]
    )
    op.create_table(
        "monitor_canaries",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_monitor_canaries"),
    )
    op.create_table(
        "monitor_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_monitor_cursors"),
    )


def downgrade() -> None:
    op.drop_table("monitor_cursors")
    op.drop_table("monitor_canaries")
    op.drop_index("ix_monitor_alert_outbox_pending", table_name="monitor_alert_outbox")
    op.drop_index("ix_monitor_alert_outbox_alert_id", table_name="monitor_alert_outbox")
    op.drop_table("monitor_alert_outbox")
    op.drop_index("ix_monitor_alerts_subject", table_name="monitor_alerts")
    op.drop_index("ix_monitor_alerts_rule", table_name="monitor_alerts")
    op.drop_table("monitor_alerts")
    op.drop_table("egress_budgets")
    op.drop_index("ix_egress_charges_at", table_name="egress_charges")
    op.drop_index("ix_egress_charges_artifact_at", table_name="egress_charges")
    op.drop_index("ix_egress_charges_principal_at", table_name="egress_charges")
    op.drop_table("egress_charges")

"""Attested releases: the gates' nonces shared by every host on the database.

Before this a gate kept its nonces in memory, so an enclave's evidence had to
come back to the very process that issued its nonce (another host, or the same
one after a restart, refused it).

Revision ID: 0014_attest_nonces
Revises: 0013_egress_epoch
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_attest_nonces"
down_revision = "0013_egress_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attest_nonces",
        sa.Column("nonce_id", sa.String(64), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("spent", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("nonce_id", name="pk_attest_nonces"),
    )
    op.create_index("ix_attest_nonces_expires", "attest_nonces", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_attest_nonces_expires", table_name="attest_nonces")
    op.drop_table("attest_nonces")

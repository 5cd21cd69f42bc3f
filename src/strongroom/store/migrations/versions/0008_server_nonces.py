"""HTTP server: request-signature nonces shared by every host on the database.

Revision ID: 0008_nonces
Revises: 0007_access_gen
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_nonces"
down_revision = "0007_access_gen"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_nonces",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce", name="pk_server_nonces"),
    )
    op.create_index("ix_server_nonces_expires", "server_nonces", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_server_nonces_expires", table_name="server_nonces")
    op.drop_table("server_nonces")

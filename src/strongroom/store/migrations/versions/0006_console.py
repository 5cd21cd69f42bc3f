"""Web console: registered security keys and browser sessions.

Revision ID: 0006c
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006c"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_credentials",
        sa.Column("credential_id", sa.String(1400), nullable=False),
        sa.Column("person_key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("alg", sa.Integer(), nullable=False),
        sa.Column("rp_id", sa.String(253), nullable=False),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("token_nonce", sa.String(64), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("credential_id", name="pk_console_credentials"),
        sa.UniqueConstraint("token_nonce", name="uq_console_credentials_token_nonce"),
    )
    op.create_index("ix_console_credentials_person_key", "console_credentials", ["person_key"])
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("ceremony", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires", "console_sessions", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index("ix_console_credentials_person_key", table_name="console_credentials")
    op.drop_table("console_credentials")

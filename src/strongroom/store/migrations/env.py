"""Alembic environment: strongroom passes its own engine in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from strongroom.store import tables  # noqa: F401  (registers every table)
from strongroom.store.base import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

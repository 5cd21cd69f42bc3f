"""Helpers shared by test modules: find services and tools, or skip (fail under make test)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO_ROOT.parent / "shared" / "conformance"


def _require_services() -> bool:
    return os.environ.get("STRONGROOM_TEST_REQUIRE_SERVICES") == "1"


def need_service(variable: str, what: str) -> str:
    """Return the service URL from ``variable`` or skip (fail under make test)."""
    value = os.environ.get(variable)
    if not value:
        message = f"{what} not available: set {variable} (make test starts it)"
        if _require_services():
            pytest.fail(message)
        pytest.skip(message)
    return value


def need_tool(name: str) -> str:
    """Return the path of an external tool or skip (fail under make test)."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (make test installs it)"
        if _require_services():
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A URL on PostgreSQL ``base`` whose search_path is a fresh schema, dropped afterwards."""
    import sqlalchemy as sa

    schema = "t_" + secrets.token_hex(6)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

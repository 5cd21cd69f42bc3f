"""Fixtures shared by the whole suite.

Stores are parametrized over SQLite and PostgreSQL. PostgreSQL and the S3
server are started by ``make test`` (``scripts/services.sh``) and found through
``STRONGROOM_TEST_*`` variables; when ``STRONGROOM_TEST_REQUIRE_SERVICES=1``
(as ``make test`` sets it) a missing service fails the test instead of
skipping it, so CI can never pass by silently skipping a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.store.db import Store

from testsupport import CONFORMANCE, need_service, pg_schema

pytest_plugins = ["vault_fixtures", "cli_fixtures"]


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The shared public test vectors; skipped (never silently passed) when absent."""
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance vectors not found at {CONFORMANCE}")
    return CONFORMANCE


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    with pg_schema(need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: SQLite in tmp_path, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'strongroom.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on each backend."""
    s = Store.open(db_url)
    try:
        yield s
    finally:
        s.close()

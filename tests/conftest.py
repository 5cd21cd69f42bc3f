"""Fixtures shared by the whole suite.

Stores are parametrized over SQLite and PostgreSQL. PostgreSQL and the S3
server are started by ``make test`` (``scripts/services.sh``) and found through
``STRONGROOM_TEST_*`` variables; when ``STRONGROOM_TEST_REQUIRE_SERVICES=1``
(as ``make test`` sets it) a missing service fails the test instead of
skipping it, so CI can never pass by silently skipping a backend.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.store.db import Store

from testsupport import CONFORMANCE, need_service, pg_schema

pytest_plugins = ["vault_fixtures", "cli_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _stop_stray_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the session's end, stop the key agents its tests left running.

    ``unseal_home`` starts an agent that would otherwise seal only after its idle
    timeout, long after ``make test`` returned. Only agents whose data directory
    (``STRONGROOM_HOME``) lies under this session's (this xdist worker's) base
    temporary directory are stopped, with SIGTERM: the agent seals as it exits.
    """
    yield
    base = os.fsencode(tmp_path_factory.getbasetemp()) + b"/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"strongroom.runtime.agent" not in (proc / "cmdline").read_bytes():
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(e.startswith(b"STRONGROOM_HOME=" + base) for e in environ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)


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

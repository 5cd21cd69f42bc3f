"""The console tests reuse the access tests' world (keyring, officers, gate with GrantEvidence)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_kit import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The console on SQLite."""
    yield from make_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)


@pytest.fixture
def env_any(db_url: str, tmp_path: Path) -> Iterator[Env]:
    """The console on each database backend."""
    yield from make_env(db_url, tmp_path)

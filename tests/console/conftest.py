"""The console tests reuse the access tests' world (keyring, officers, gate with GrantEvidence)."""

from __future__ import annotations

import sys
from pathlib import Path

_ACCESS = str(Path(__file__).resolve().parents[1] / "access")
if _ACCESS not in sys.path:
    sys.path.insert(0, _ACCESS)


from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from console_kit import Env, make_env  # noqa: E402


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The console on SQLite."""
    yield from make_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)


@pytest.fixture
def env_any(db_url: str, tmp_path: Path) -> Iterator[Env]:
    """The console on each database backend."""
    yield from make_env(db_url, tmp_path)

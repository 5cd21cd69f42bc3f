"""Server tests never touch the real ~/.config/strongroom/known_servers."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_known_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_KNOWN_SERVERS", str(tmp_path / "known_servers"))
    monkeypatch.delenv("STRONGROOM_MANIFEST_KEY", raising=False)

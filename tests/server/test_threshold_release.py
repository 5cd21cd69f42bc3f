"""``strongroom serve``'s threshold releases: the key servers' client closes with the server's context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.server.context import ServerContext
from strongroom.server.threshold_release import ThresholdReleases
from strongroom.store.db import Store
from strongroom.threshold.group import base_mult, random_scalar

from vault_fixtures import unsealed_vault


def test_the_key_servers_client_is_closed_with_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commitments = tmp_path / "commitments.json"
    commitments.write_text(
        json.dumps([base_mult(random_scalar()).hex(), base_mult(random_scalar()).hex()])
    )
    monkeypatch.setenv("STRONGROOM_FILE_KEYS", "threshold")
    monkeypatch.setenv(
        "STRONGROOM_THRESHOLD_SERVERS", "ks-a=http://127.0.0.1:9,ks-b=http://127.0.0.1:9"
    )
    monkeypatch.setenv("STRONGROOM_THRESHOLD_COMMITMENTS", str(commitments))
    db = f"sqlite:///{tmp_path / 'vault.db'}"
    with unsealed_vault(db, tmp_path) as vault:
        store = Store.open(db)
        ctx = ServerContext(vault.settings, store, vault.keys)  # type: ignore[arg-type]
        releases = ThresholdReleases(ctx)
        assert releases.enabled
        service = releases.service()
        assert releases.service() is service  # one client per process
        assert not service.client.closed
        ctx.close()
        assert service.client.closed

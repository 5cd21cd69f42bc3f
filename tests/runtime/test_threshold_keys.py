"""The threshold key service's connections to the key servers end with the vault it serves."""

from __future__ import annotations

from pathlib import Path

from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.runtime.threshold_keys import ThresholdKeyService
from strongroom.threshold.group import base_mult, random_scalar

from vault_fixtures import unsealed_vault


def test_closing_the_vault_closes_the_key_servers_client(tmp_path: Path) -> None:
    commitments = [base_mult(random_scalar()), base_mult(random_scalar())]
    servers = [("ks-a", "http://127.0.0.1:9"), ("ks-b", "http://127.0.0.1:9")]
    with unsealed_vault(f"sqlite:///{tmp_path / 'vault.db'}", tmp_path) as vault:
        vault_id = vault.keys.status().vault_id
        assert vault_id is not None
        keys = ThresholdKeyService(
            vault.keys, ThresholdClient(servers, commitments, vault_id=vault_id), vault_id=vault_id
        )
        old = keys._previous["old"] = ThresholdClient(
            keys.client.links, commitments[::-1], vault_id=vault_id
        )
        keys.attach(vault)
        assert not keys.client.closed
    assert (
        keys.client.closed and old.closed
    )  # the vault's close closed both, earlier group key's too

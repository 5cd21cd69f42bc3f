"""Rotating the threshold group key with rewrap: a new DKG, every wrapped file key rewrapped, the old key retired.

Three key servers (2 of 3) in this process, each with its own database and
keyring, and a vault on the ``threshold`` backend. After a new distributed key
generation, blobs wrapped to the old group key still open through the key
servers' retired shares only for the rewrap; ``ThresholdKeyService.rewrap``
writes each blob again wrapped to the new group key (escrow stanzas kept,
payload unchanged), re-signs the manifest and deletes the old blob; the model
loads bit-identical; the old group key is then retired on every server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strongroom.crypto import age
from strongroom.crypto.age import X25519Identity
from strongroom.errors import InvalidInput, NotFound
from strongroom.keys.threshold import STANZA_TYPE, group_key_id
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.runtime.threshold_keys import ThresholdKeyService
from strongroom.threshold.group import Element
from threshold_fixtures import InProcessKeyServer, inprocess_keyservers

from vault_fixtures import make_model, unsealed_vault


def _dkg(servers: list[InProcessKeyServer], *, epoch: int) -> list[Element]:
    recipients = {str(s.index): s.server.status()["transport"] for s in servers}
    dealings = [s.admin("deal", mode="dkg", threshold=2, recipients=recipients) for s in servers]
    results = [s.admin("accept", mode="dkg", dealings=dealings, epoch=epoch) for s in servers]
    assert all(r["commitments"] == results[0]["commitments"] for r in results)
    return [Element.decode(bytes.fromhex(c)) for c in results[0]["commitments"]]


def test_group_key_rotation_rewraps_every_file_key(tmp_path: Path) -> None:
    escrow = X25519Identity.generate()
    with unsealed_vault(f"sqlite:///{tmp_path / 'vault.db'}", tmp_path) as vault:
        host = vault.keys
        vault_id = host.status().vault_id
        assert vault_id is not None
        servers, old = inprocess_keyservers(tmp_path, 3, 2, host.public_keys()["manifest"],
                                            [vault.identity.public.public_bytes])
        try:
            links = [(s.name, s.ask) for s in servers]

            def use(commitments: list[Element]) -> ThresholdKeyService:
                keys = ThresholdKeyService(host, ThresholdClient(links, commitments, vault_id=vault_id),
                                           vault_id=vault_id)
                vault.keys = keys
                keys.attach(vault)
                return keys

            use(old)
            tensors = make_model(tmp_path / "m.safetensors")
            vault.import_weights(tmp_path / "m.safetensors", name="m", escrow=[escrow.recipient])
            (before,) = vault.manifest("m").files

            # a new group key by DKG; each server keeps its old share, retired, for the rewrap
            new = _dkg(servers, epoch=2)
            assert new[0] != old[0]
            keys = use(new)
            with pytest.raises(NotFound, match=group_key_id(new[0])):  # not rewrapped yet
                vault.open_weights("m")
            refused = next(e for e in vault.audit.recent(0.0) if e.action == "key.release")
            assert refused.decision == "deny" and refused.details["error"] == "NotFound"
            with pytest.raises(InvalidInput, match="current group"):
                keys.rewrap(new)
            assert keys.rewrap(old) == ["m@1"]
            assert keys.rewrap(old) == []  # nothing left on the old key

            (after,) = vault.manifest("m").files  # the re-signed manifest verifies
            assert after.blob != before.blob and after.sha256 == before.sha256
            header, _ = age.read_header(vault.blobs.open(after.blob))
            assert [(s.type, s.args) for s in header.stanzas if s.type == STANZA_TYPE] == [
                (STANZA_TYPE, (group_key_id(new[0]),))]
            assert any(s.type == "X25519" for s in header.stanzas)  # escrow kept
            with pytest.raises(NotFound):
                vault.blobs.open(before.blob)  # the old blob is gone
            with vault.open_weights("m") as weights:
                for name, want in tensors.items():
                    np.testing.assert_array_equal(weights[name], want)

            # the old group key retired everywhere; the current one cannot be
            for s in servers:
                assert s.admin("retire", group_key_id=group_key_id(old[0]))["retired"] == group_key_id(old[0])
            with pytest.raises(InvalidInput, match="other than the current"):
                servers[0].admin("retire", group_key_id=group_key_id(new[0]))
            with vault.open_weights("m") as weights:
                np.testing.assert_array_equal(weights["ids"], tensors["ids"])
            audit = [e.action for e in vault.audit.recent(0.0)]
            assert "weights.rewrap" in audit
        finally:
            for s in servers:
                s.close()

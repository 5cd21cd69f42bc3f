"""The vault on the ``threshold`` backend: ``strongroom weights import`` wraps to the key servers, loads go through them.

A data directory set up as an operator does (``init``, two ``unseal``s, its
agent) is configured with ``STRONGROOM_FILE_KEYS=threshold`` and three key
servers (2 of 3, separate processes, each its own database and log) that pin
the vault's manifest key and the CLI's identity. The CLI imports a model; each
blob's header carries the file key wrapped to the group key only, so the host's
own keyring cannot release it; ``strongroom.open_weights`` loads it
bit-identical through the key servers; after a new group key (DKG) the CLI's
``keyserver rewrap`` moves it to the new key; it still loads with one server killed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import strongroom
from keyserver_procs import KeyServerProc, keygen, start_keyserver
from strongroom.crypto import age
from strongroom.errors import NotFound
from strongroom.keys.identity import Identity
from strongroom.keys.threshold import STANZA_TYPE
from strongroom.runtime.services import key_service, open_vault

from cli_fixtures import make_runner, unseal_home
from vault_fixtures import make_model


# The one test that proves the vault's import and load select the threshold backend (three
# key servers and a vault agent as processes, ~30 s on 2 cores).
def test_weights_import_and_load_go_through_the_key_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, env = unseal_home(tmp_path / "home", None)
    servers: list[KeyServerProc] = []
    try:
        manifest_pub = key_service(tmp_path / "home").public_keys()["manifest"]
        me = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        for i in (1, 2, 3):
            servers.append(start_keyserver(tmp_path, i, None, manifest_pub, [me.public.public_bytes]))
        commitments = keygen(servers, threshold=2)
        pinned = tmp_path / "commitments.json"
        pinned.write_text(json.dumps([c.hex() for c in commitments]))
        threshold_env = {
            "STRONGROOM_FILE_KEYS": "threshold",
            "STRONGROOM_THRESHOLD_SERVERS": ",".join(f"{s.name}={s.url}" for s in servers),
            "STRONGROOM_THRESHOLD_COMMITMENTS": str(pinned),
        }
        model = tmp_path / "model.safetensors"
        tensors = make_model(model)
        make_runner({**env, **threshold_env})("weights", "import", model, "--name", "tm")

        for key, value in {**env, **threshold_env}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("STRONGROOM_URL", raising=False)
        # the blob's file key is wrapped to the group key only: no stanza the host's KEK opens
        with open_vault() as vault:
            manifest = vault.manifest("tm")
            (entry,) = manifest.files
            header, _ = age.read_header(vault.blobs.open(entry.blob))
            assert [s.type for s in header.stanzas] == [STANZA_TYPE]

        with strongroom.open_weights("tm") as weights:
            for name, want in tensors.items():
                np.testing.assert_array_equal(weights[name], want)

        # every key server decided in its own log; the host's log names the servers that released
        with open_vault() as vault:
            entries = [e for e in vault.audit.recent(0.0) if e.action == "key.release"]
        assert entries and entries[0].decision == "allow"
        assert entries[0].details["key_servers"] == ["ks-1", "ks-2"]

        # the host alone (its own keyring, no key servers) releases nothing
        monkeypatch.setenv("STRONGROOM_FILE_KEYS", "keyring")
        with pytest.raises(NotFound, match="no wrapped file key for this blob in the keyring"):
            strongroom.open_weights("tm")
        monkeypatch.setenv("STRONGROOM_FILE_KEYS", "threshold")

        # the group key rotated (a new DKG), then the operator rewraps through the CLI
        (tmp_path / "old.json").write_text(pinned.read_text())
        rotated = keygen(servers, threshold=2)
        assert rotated[0] != commitments[0]
        pinned.write_text(json.dumps([c.hex() for c in rotated]))
        out = make_runner({**env, **threshold_env})("keyserver", "rewrap", "--old-commitments",
                                                    tmp_path / "old.json")
        assert json.loads(out.stdout) == {"rewrapped": ["tm@1"]}
        with strongroom.open_weights("tm") as weights:
            np.testing.assert_array_equal(weights["layer.0.w"], tensors["layer.0.w"])

        # one key server down: the load continues through the other two
        servers[0].stop()
        with strongroom.open_weights("tm") as weights:
            np.testing.assert_array_equal(weights["embed.weight"], tensors["embed.weight"])
    finally:
        for s in servers:
            s.stop()
        run("seal", ok=False)

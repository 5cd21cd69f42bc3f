"""``strongroom serve`` on a threshold vault: a remote client's loads go through k key servers.

A CLI-initialised vault (``STRONGROOM_FILE_KEYS=threshold``) imports a model whose file keys are
wrapped to the group key of three ``keyserver serve`` processes (2 of 3) that run the Grant rule
against the vault's officer (pinned by each key server's own officer). ``strongroom serve`` (two
workers: keys in its agent) relays a remote client's signed release to the key servers:

* before ``strongroom keyserver sync`` the key servers know nobody and each refuses, by name;
* after it, a remote ``open_weights`` (``RemoteVault`` over HTTP) loads bit-identical;
* a key server killed: the load continues through the other two.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from test_serve_lifecycle import _port, _start_serve, _unseal

from keyserver_procs import KeyServerProc, keygen, start_keyserver
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.runtime.services import key_service
from strongroom.server.client import Client, KnownServers
from strongroom.server.remote_vault import RemoteVault

from cli_fixtures import grant_cli, make_runner, unseal_home
from vault_fixtures import make_model


# One test: a vault agent, serve with two workers and three key servers as processes (~60 s on 2 cores).
def test_serve_releases_threshold_blobs_through_the_key_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, None)
    servers: list[KeyServerProc] = []
    proc = None
    try:
        manifest_pub = key_service(home).public_keys()["manifest"]
        officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        for i in (1, 2, 3):
            servers.append(start_keyserver(tmp_path, i, None, manifest_pub, []))
        for s in servers:  # each key server's own officer pins the vault's officer (1 of 1)
            s.admin(
                "setup",
                index=s.index,
                manifest_key=base64.b64encode(manifest_pub).decode(),
                principals=[],
                officers=[base64.b64encode(officer.public.public_bytes).decode()],
                officer_threshold=1,
            )
        commitments = keygen(servers, threshold=2)
        pinned = tmp_path / "commitments.json"
        pinned.write_text(json.dumps([c.hex() for c in commitments]))
        env.update(
            {
                "STRONGROOM_FILE_KEYS": "threshold",
                "STRONGROOM_THRESHOLD_SERVERS": ",".join(f"{s.name}={s.url}" for s in servers),
                "STRONGROOM_THRESHOLD_COMMITMENTS": str(pinned),
            }
        )
        run = make_runner(env)
        model = tmp_path / "model.safetensors"
        tensors = make_model(model)
        run("weights", "import", model, "--name", "tm")
        grant_cli(env, "tm")  # the officer enrolls people; the CLI's identity gets a load Grant

        run("seal")
        port = _port()
        proc = _start_serve(
            env, port, 2
        )  # serve owns the agent, started with the threshold settings
        _unseal(run, home)
        client = Client(
            f"http://127.0.0.1:{port}",
            officer,
            known_servers=KnownServers(tmp_path / "known_servers"),
        )
        with RemoteVault(client) as remote:
            m = client.verified_manifest("tm")
            f = m.files[0]
            # the key servers have none of the vault's statements yet: each refuses on its own
            with pytest.raises(AccessDenied) as refused:
                client.release(m.ref, f.path, f.blob, "load")
            assert "0 of the 2 key servers" in str(refused.value)
            assert all(f"{s.name}: " in str(refused.value) for s in servers)

            out = json.loads(run("keyserver", "sync").stdout)
            assert out["sent"] > 0
            assert all(out["stored"][s.name].get("enrollment", 0) >= 1 for s in servers)
            assert all(out["stored"][s.name].get("grant", 0) >= 1 for s in servers)

            with remote.open_weights("tm") as weights:
                for name, want in tensors.items():
                    np.testing.assert_array_equal(weights[name], want)

            servers[
                0
            ].stop()  # one key server down: the remote load continues through the other two
            with remote.open_weights("tm") as weights:
                np.testing.assert_array_equal(weights["embed.weight"], tensors["embed.weight"])

        # the host's log records the threshold releases under the caller's name, naming the key servers
        tail = run("audit", "tail", "-n", "40", "--json").stdout
        assert '"key_servers"' in tail and "ks-2" in tail
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for s in servers:
            s.stop()
        run("seal", ok=False)

"""``strongroom serve`` on a threshold vault: a remote client's loads go through k key servers.

A CLI-initialised vault (``STRONGROOM_FILE_KEYS=threshold``) imports a model whose file keys are
wrapped to the group key of three ``keyserver serve`` processes (2 of 3) that run the Grant rule
against the vault's officer (pinned by each key server's own officer). ``strongroom serve`` (two
workers: keys in its agent) relays a remote client's signed release to the key servers:

* before ``strongroom keyserver sync`` the key servers know nobody and each refuses, by name;
* after it, a remote ``open_weights`` (``RemoteVault`` over HTTP) loads bit-identical;
* a key server killed: the load continues through the other two;
* ``access revoke`` and ``people revoke`` run against serve (``STRONGROOM_URL``, no key-server
  settings on the operator's machine): serve pushes the revocation to its key servers itself,
  each answer printed and audited, the one down named with ``keyserver sync`` as the remedy.

SQLite, and PostgreSQL for the vault and all three key servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_serve_lifecycle import _port, _start_serve, _unseal

from keyserver_procs import KeyServerProc, database_urls, keygen, start_officer_keyservers
from strongroom.access import statements
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.runtime.services import key_service
from strongroom.server.client import Client, KnownServers
from strongroom.server.remote_vault import RemoteVault
from strongroom.store.db import Store

from cli_fixtures import grant_cli, make_runner, unseal_home
from vault_fixtures import make_model


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def databases(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    """The vault's database, then the three key servers'."""
    with database_urls(request.param, 4) as urls:
        yield urls


def _held(s: KeyServerProc, url: str | None, kind: str, subject: str) -> int:
    """How many ``kind`` statements about ``subject`` key server ``s`` stored."""
    store = Store.open(url or f"sqlite:///{s.home / 'strongroom.db'}")
    try:
        return len(statements.envelopes(store, kind, subject=subject))
    finally:
        store.close()


# One test per database: a vault agent, serve with two workers and three key servers as processes
# (~60 s on 2 cores).
def test_serve_releases_threshold_blobs_through_the_key_servers(
    tmp_path: Path, databases: list[str | None]
) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, databases[0])
    servers: list[KeyServerProc] = []
    proc = None
    try:
        manifest_pub = key_service(home).public_keys()["manifest"]
        officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        start_officer_keyservers(tmp_path, databases, manifest_pub, officer, servers)
        commitments = keygen(servers, threshold=2)
        pinned = tmp_path / "commitments.json"
        # each key server's share index recorded with the commitments: partials pinned to servers
        pinned.write_text(
            json.dumps(
                {
                    "commitments": [c.hex() for c in commitments],
                    "indices": {s.name: s.index for s in servers},
                }
            )
        )
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

            # the operator against serve, no key-server settings here: serve pushes revocations
            operator = make_runner(
                {
                    **{k: v for k, v in env.items() if not k.startswith("STRONGROOM_THRESHOLD")},
                    "STRONGROOM_FILE_KEYS": "keyring",
                    "STRONGROOM_URL": f"http://127.0.0.1:{port}",
                    "STRONGROOM_HOME": str(tmp_path / "operator-home"),
                    "STRONGROOM_KNOWN_SERVERS": str(tmp_path / "known_servers"),
                }
            )
            (grant,) = [g["grant_id"] for g in json.loads(run("access", "grants", "--json").stdout)]
            out = operator("access", "revoke", grant, "--reason", "left the project")
            assert "key server ks-2: grant-revocation stored" in out.stderr, out.stderr
            assert "key server ks-3: grant-revocation stored" in out.stderr, out.stderr
            assert "key server ks-1: NOT SENT" in out.stderr, out.stderr
            assert "ks-1 will honour" in out.stderr and "`strongroom keyserver sync`" in out.stderr
            for s, url in zip(servers[1:], databases[2:], strict=True):  # there before any sync
                assert _held(s, url, "grant-revocation", grant) == 1
            with pytest.raises(AccessDenied) as revoked:
                client.release(m.ref, f.path, f.blob, "load")
            assert "revoked" in str(revoked.value), str(revoked.value)

            approver = Identity.load(
                Path(env["STRONGROOM_IDENTITY"]).parent / "grant-people" / "approver1.id"
            ).public.key_id
            out = operator("people", "revoke", "approver1", "--reason", "left")
            assert "key server ks-2: revocation stored" in out.stderr, out.stderr
            assert "key server ks-3: revocation stored" in out.stderr, out.stderr
            assert "key server ks-1: NOT SENT" in out.stderr, out.stderr
            for s, url in zip(servers[1:], databases[2:], strict=True):
                assert _held(s, url, "revocation", approver) == 1

        # the host's log records the threshold releases under the caller's name, naming the key servers
        tail = run("audit", "tail", "-n", "40", "--json").stdout
        assert '"key_servers"' in tail and "ks-2" in tail
        # each push is in serve's log under the operator's name: sent to two, ks-1 not reached
        pushes = [
            e
            for e in json.loads(run("audit", "tail", "-n", "60", "--json").stdout)
            if e["action"] == "keyserver.push"
        ]
        assert sorted((e["object"], e["decision"]) for e in pushes) == [
            ("ks-1", "deny"),
            ("ks-1", "deny"),
            ("ks-2", "allow"),
            ("ks-2", "allow"),
            ("ks-3", "allow"),
            ("ks-3", "allow"),
        ], pushes
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for s in servers:
            s.stop()
        run("seal", ok=False)

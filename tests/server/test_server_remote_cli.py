"""The same CLI commands against a server (STRONGROOM_URL): status, request, approvals that
issue a Grant, a remote verify that releases keys over HTTP, audit tail, alerts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world
from server_kit import run_cli as _cli

from cli_fixtures import strongroom_exe, unseal_home


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from build_world(tmp_path_factory.mktemp("remote"), http_factory=server)
    finally:
        server.stop()


def test_remote_cli_carries_the_approval_flow(world: ServerWorld) -> None:
    st = json.loads(_cli(world, "alice", "status", "--json").stdout)
    assert st["sealed"] is False and st["threshold"] == 2
    denied = _cli(world, "alice", "weights", "verify", ARTIFACT, ok=False)
    assert denied.returncode != 0 and "grant" in denied.stderr.lower()
    out = _cli(world, "alice", "access", "request", ARTIFACT, "--purpose", "eval run").stdout
    request_id = out.split()[1]
    assert "not yet" in _cli(world, "bob", "access", "approve", request_id).stdout
    assert "issued" in _cli(world, "carol", "access", "approve", request_id).stdout
    assert "ok tiny@1" in _cli(world, "alice", "weights", "verify", ARTIFACT).stdout
    lines = _cli(world, "eve", "audit", "tail", "-n", "3").stdout.strip().splitlines()
    assert any(json.loads(x)["action"] == "key.release" and json.loads(x)["actor"] == "alice"
               for x in lines)
    refused = _cli(world, "alice", "audit", "tail", ok=False)
    assert refused.returncode != 0 and "needs one of the roles" in refused.stderr
    assert not (world.tmp / "client-home").exists()
    # the manifest key was pinned on first use; a different pinned key is refused
    assert (world.tmp / "known_servers").read_text().count(str(world.http.base_url)) == 1
    key = _cli(world, "alice", "keys", "public", "--manifest").stdout.strip()
    assert key == base64.b64encode(world.ctx.keys.public_keys()["manifest"]).decode()
    wrong = base64.b64encode(bytes(32)).decode()
    forged = _cli(world, "alice", "weights", "verify", ARTIFACT, ok=False,
                  extra_env={"STRONGROOM_MANIFEST_KEY": wrong})
    assert forged.returncode != 0 and "not signed by the pinned manifest key" in forged.stderr


def test_remote_weights_import_streams_one_file(world: ServerWorld) -> None:
    from vault_fixtures import make_model

    path = world.tmp / "remote-import.safetensors"
    make_model(path)
    try:
        out = _cli(world, "officer", "weights", "import", str(path), "--name", "remote-tiny",
                   "--compartment", "atlas").stdout
        assert "imported remote-tiny@1" in out and "KiB encrypted" in out  # as embedded
        listed = json.loads(_cli(world, "officer", "weights", "ls", "--json").stdout)
        assert {"remote-tiny", ARTIFACT} <= {r["name"] for r in listed}
        refused = _cli(world, "officer", "weights", "import", str(path), "--name", "x",
                       "--convert", ok=False)
        assert refused.returncode != 0 and "--convert is not offered over the API" in \
            refused.stderr
        directory = _cli(world, "officer", "weights", "import", str(world.tmp), "--name", "x",
                         ok=False)
        assert directory.returncode != 0 and "one .safetensors file" in directory.stderr
    finally:
        path.unlink()


def test_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    env = dict(os.environ, STRONGROOM_HOME=str(tmp_path / "home"))
    out = subprocess.run([strongroom_exe(), "serve", "--host", "0.0.0.0"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2 and "refusing plain HTTP" in out.stderr


def test_serve_starts_and_answers(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # serve refuses a directory without a vault (only init creates one), and an unsealed
    # agent a CLI started: it runs on an initialised, sealed vault
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    run, _ = unseal_home(tmp_path / "home", None)
    run("seal")
    env["STRONGROOM_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([strongroom_exe(), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/sys/seal-status", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["initialized"] is True
        unsigned = httpx.get(f"http://127.0.0.1:{port}/v1/weights", timeout=5)
        assert unsigned.status_code == 401 and "not signed" in unsigned.json()["error"]
        assert "server" not in unsigned.headers
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)

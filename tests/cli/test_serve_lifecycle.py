"""``strongroom serve`` owns the data directory's one key agent, and dies with it whole.

A real ``serve`` subprocess on a CLI-initialised vault: it refuses to adopt an
unsealed agent a CLI started; once it runs, the CLI on the host reaches the
same gate (unseal, import, enroll, grant) whatever ``--workers`` says; each
release entry names the server host; and after ``kill -9`` of ``serve``
mid-load the next release is refused and the keyring is sealed within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from strongroom.keys.identity import Identity
from strongroom.runtime.services import key_service
from strongroom.server.client import Client, KnownServers

from cli_fixtures import Run, grant_cli, strongroom_exe, unseal_home
from vault_fixtures import make_model

HOST_ID = "host-a.test"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([strongroom_exe(), "serve", "--port", str(port), "--workers",
                             str(workers)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/sys/seal-status", timeout=2)
            return proc
        except httpx.HTTPError:
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.2)


def _unseal(run: Run, home: Path) -> None:
    shares = sorted((home.parent / "shares").glob("share-*.age"))
    for i in (1, 2):
        run("unseal", "--share", shares[i - 1], "--identity",
            home.parent / "custodians" / f"c{i}.key")


@pytest.fixture
def cli_home(tmp_path: Path) -> Iterator[tuple[Run, dict[str, str], Path]]:
    home = tmp_path / "home"
    run, env = unseal_home(home, None, {"STRONGROOM_HOST_ID": HOST_ID})
    try:
        yield run, env, home
    finally:
        run("seal", ok=False)


# --workers 1 takes the same path (serve owns one agent) and runs in `make test-slow`.
@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_serve_is_one_gate_and_dies_whole_on_kill_9(
        cli_home: tuple[Run, dict[str, str], Path], workers: int) -> None:
    run, env, home = cli_home
    port = _port()
    # an unsealed agent the CLI started is never adopted
    refused = subprocess.run([strongroom_exe(), "serve", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "does not adopt" in refused.stderr, refused.stderr
    assert "sealed; the key agent has stopped" in run("seal").stdout

    proc = _start_serve(env, port, workers)
    try:
        owner = key_service(home).client.ping()
        assert owner is not None and owner["owner"] == proc.pid
        # one gate: the CLI on the host unseals, imports and enrolls through serve's agent
        _unseal(run, home)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/sys/seal-status").json()["sealed"] is False
        model = home.parent / "m.safetensors"
        make_model(model)
        run("weights", "import", model, "--name", "tiny")
        grant_cli(env, "tiny")  # people enroll (officer), request, approvals: all on the host
        me = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        client = Client(f"http://127.0.0.1:{port}", me,
                        known_servers=KnownServers(home.parent / "known_servers"))
        client.verify("tiny", purpose="load")  # releases through the server
        tail = run("audit", "tail", "-n", "50").stdout
        assert f'"server": "{HOST_ID}"' in tail.replace("\n", " ") or \
            f'"server":"{HOST_ID}"' in tail, tail

        results: list[BaseException | None] = []
        done = threading.Event()

        def load() -> None:
            while not done.is_set():
                try:
                    client.verify("tiny", purpose="load")
                    results.append(None)
                except Exception as exc:
                    results.append(exc)
                    return

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        deadline = time.monotonic() + 30
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(results) >= 3 and all(r is None for r in results), results
        proc.send_signal(signal.SIGKILL)  # serve alone: its workers and agent must follow
        proc.wait(10)
        killed = time.monotonic()
        loader.join(15)
        done.set()
        assert isinstance(results[-1], Exception)
        # within a few seconds: nothing answers on the port, and the agent is gone (sealed)
        while time.monotonic() - killed < 5:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                answering = False
            else:
                answering = True
            if not answering and not key_service(home).client.running():
                break
            time.sleep(0.1)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/v1/sys/seal-status", timeout=2)
        assert not key_service(home).client.running()
        status = json.loads(run("status", "--json").stdout)
        assert status["initialized"] is True and status["sealed"] is True
        client.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failure left of the group
        proc.wait(10)


def test_serve_refuses_a_directory_without_a_vault(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_HOME"] = str(tmp_path / "nowhere")
    out = subprocess.run([strongroom_exe(), "serve", "--port", str(_port())], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and f"no vault in {tmp_path / 'nowhere'}" in out.stderr
    assert list(tmp_path.iterdir()) == []

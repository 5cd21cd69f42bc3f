"""The local agent through the real `strongroom` command: shared state, seal, kill -9, idle exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.runtime.agent import LOCK_NAME, SOCKET_NAME, AgentClient

import cli_zygote
from keyring_fixtures import make_custodians

STRONGROOM = [str(Path(sys.executable).parent / "strongroom")]


def _agent_pid(home: Path) -> int | None:
    try:
        text = (home / LOCK_NAME).read_text().strip().splitlines()
    except FileNotFoundError:
        return None
    return int(text[-1]) if text else None


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A short data directory; every agent started in it is stopped at teardown."""
    h = Path(f"/tmp/srt-{os.urandom(4).hex()}")
    h.mkdir(mode=0o700)
    try:
        yield h
    finally:
        pid = _agent_pid(h)
        if AgentClient(h, start=False).running():
            AgentClient(h, start=False).call("shutdown")
        if pid:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(h, ignore_errors=True)


def _run(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "STRONGROOM_HOME": str(home), **(env or {})}
    e.pop("STRONGROOM_DATABASE_URL", None)
    return cli_zygote.run([*STRONGROOM, *args], e, timeout=60)  # a forked process


def _init(home: Path, tmp: Path) -> list[tuple[Path, Path]]:
    cust = make_custodians(tmp / "c", 3)
    args = ["init", "--threshold", "2", "--shares-dir", str(tmp / "sh")]
    for p in cust.pubfiles:
        args += ["--custodian", str(p)]
    r = _run(home, *args)
    assert r.returncode == 0, r.stderr
    shares = sorted((tmp / "sh").glob("share-*.age"))
    return [(s, tmp / "c" / f"custodian{i}.key") for i, s in enumerate(shares, start=1)]


def test_cli_unseal_across_invocations(home: Path, tmp_path: Path) -> None:
    shares = _init(home, tmp_path)
    assert "sealed:      yes" in _run(home, "status").stdout
    assert not AgentClient(home, start=False).running()  # status never starts an agent
    r = _run(home, "unseal", "--share", str(shares[0][0]), "--identity", str(shares[0][1]))
    assert r.returncode == 0 and "1 of 2" in r.stdout
    sock = home / SOCKET_NAME
    assert sock.stat().st_mode & 0o777 == 0o600 and home.stat().st_mode & 0o777 == 0o700
    r = _run(home, "unseal", "--share", str(shares[0][0]), "--identity", str(shares[0][1]))
    assert r.returncode == 2 and "already submitted" in r.stderr and "Traceback" not in r.stderr
    r = _run(home, "unseal", "--share", str(shares[1][0]), "--identity", str(shares[0][1]))
    assert r.returncode == 5 and shares[1][0].name in r.stderr
    r = _run(home, "unseal", "--share", str(shares[2][0]), "--identity", str(shares[2][1]))
    assert r.returncode == 0 and "sealed:      no" in r.stdout
    r = _run(home, "status", "--json")
    assert '"sealed": false' in r.stdout
    assert _run(home, "keys", "rotate").returncode == 0
    assert "KEK versions: 1, 2" in _run(home, "status").stdout
    assert _run(home, "seal").returncode == 0
    time.sleep(0.3)
    assert not AgentClient(home, start=False).running()
    assert "sealed:      yes" in _run(home, "status").stdout


def test_kill_agent_during_unseal(home: Path, tmp_path: Path) -> None:
    shares = _init(home, tmp_path)
    assert _run(home, "unseal", "--share", str(shares[0][0]), "--identity",
                str(shares[0][1])).returncode == 0
    pid = _agent_pid(home)
    assert pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    r = _run(home, "status")  # a fresh agent: sealed, progress gone, nothing lost
    assert "0 of 2" in r.stdout and "sealed:      yes" in r.stdout
    for share, ident in shares[:2]:
        assert _run(home, "unseal", "--share", str(share), "--identity", str(ident)).returncode == 0
    assert "sealed:      no" in _run(home, "status").stdout


def test_agent_exits_when_idle_or_home_removed(home: Path, tmp_path: Path) -> None:
    _init(home, tmp_path)
    _run(home, "unseal", "--reset", env={"STRONGROOM_AGENT_IDLE": "0.5"})
    pid = _agent_pid(home)
    assert pid
    deadline = time.monotonic() + 10
    while AgentClient(home, start=False).running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not AgentClient(home, start=False).running()
    _run(home, "unseal", "--reset")
    pid = _agent_pid(home)
    assert pid and AgentClient(home, start=False).running()
    moved = home.with_name(home.name + "-moved")
    home.rename(moved)
    try:
        deadline = time.monotonic() + 10
        alive = True
        while alive and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                alive = False
        assert not alive
    finally:
        moved.rename(home)

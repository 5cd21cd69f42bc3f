"""A data directory set up the way an operator does it: ``init`` (2 of 3), two ``unseal``s.

The key agent this starts is stopped (``strongroom seal``) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity

import cli_zygote

Run = Callable[..., subprocess.CompletedProcess[str]]


def strongroom_exe() -> str:
    """The installed ``strongroom`` console script."""
    beside = Path(sys.executable).parent / "strongroom"
    found = str(beside) if beside.exists() else shutil.which("strongroom")
    assert found, "the strongroom console script is not installed"
    return found


def make_runner(env: dict[str, str]) -> Run:
    """A function running ``strongroom`` with ``env``; asserts no traceback, and success if ``ok``."""

    def run(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
        # a fresh process per command, forked from one that imported the CLI (cli_zygote)
        result = cli_zygote.run([strongroom_exe(), *map(str, args)], env, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def unseal_home(
    home: Path, db_url: str | None, extra: dict[str, str] | None = None
) -> tuple[Run, dict[str, str]]:
    """Initialise a 2-of-3 vault in ``home`` through the CLI and unseal it with two custodians."""
    env = dict(os.environ, STRONGROOM_HOME=str(home), **(extra or {}))
    if db_url:
        env["STRONGROOM_DATABASE_URL"] = db_url
    else:
        env.pop("STRONGROOM_DATABASE_URL", None)
    env.pop("STRONGROOM_IDENTITY", None)
    run = make_runner(env)
    people = home.parent / "custodians"
    people.mkdir(parents=True, exist_ok=True)
    pubs = []
    for i in range(1, 4):  # c1 holds a hybrid post-quantum key, c2 and c3 classical ones
        ident: X25519Identity | HybridIdentity = (
            HybridIdentity.generate() if i == 1 else X25519Identity.generate())
        (people / f"c{i}.key").write_text(f"{ident}\n")
        (people / f"c{i}.pub").write_text(f"{ident.recipient}\n")
        pubs += ["--custodian", str(people / f"c{i}.pub")]
    shares = home.parent / "shares"
    run("init", *pubs, "--threshold", "2", "--shares-dir", shares)
    files = sorted(shares.glob("share-*.age"))
    assert len(files) == 3
    for i in (1, 2):
        run("unseal", "--share", files[i - 1], "--identity", people / f"c{i}.key")
    env["STRONGROOM_IDENTITY"] = str(shares / "officer.identity")
    return make_runner(env), env


_APPROVERS = {"approver1": "approvers", "approver2": "approvers", "secofficer": "security-officers"}


def grant_cli(env: dict[str, str], artifact: str, actions: tuple[str, ...] = ("load",),
              *, compartments: tuple[str, ...] = (), purpose: str = "test") -> None:
    """Obtain Grants for ``actions`` on ``artifact`` for the CLI's identity, through the CLI.

    The first call has the officer enroll the CLI's identity and three approvers
    (two ``approvers``, one ``security-officers``); each action is then requested
    by the identity and approved by the people its default rule needs.
    """
    from strongroom.keys.identity import Identity

    me_path = Path(env["STRONGROOM_IDENTITY"])
    people = me_path.parent / "grant-people"
    run = make_runner(env)
    if not people.exists():
        people.mkdir(mode=0o700)
        me = Identity.load(me_path)
        (people / "me.pub").write_text(me.public.to_text())
        enroll = ["--vetting-expires", "2099-01-01", "--clearance", "top-secret"]
        for c in compartments:
            enroll += ["--compartment", c]
        run("people", "enroll", me.name, "--key", people / "me.pub", *enroll,
            "--role", "requesters")
        for name, role in _APPROVERS.items():
            ident = Identity.generate(name)
            ident.save(people / f"{name}.id")
            (people / f"{name}.pub").write_text(ident.public.to_text())
            run("people", "enroll", name, "--key", people / f"{name}.pub", *enroll, "--role", role)
    for action in actions:
        out = run("access", "request", artifact, "--action", action, "--purpose", purpose).stdout
        request_id = out.split()[1]
        names = list(_APPROVERS) if action == "export" else ["approver1", "approver2"]
        for name in names:
            make_runner(dict(env, STRONGROOM_IDENTITY=str(people / f"{name}.id")))(
                "access", "approve", request_id)


@pytest.fixture
def unsealed_cli(tmp_path: Path, db_url: str) -> Iterator[Run]:
    """``run(*args)`` against an unsealed vault (agent started), on each database."""
    run, _ = unseal_home(tmp_path / "home", db_url)
    try:
        yield run
    finally:
        run("seal", ok=False)


@pytest.fixture
def unsealed_cli_env(tmp_path: Path, db_url: str) -> Iterator[tuple[Run, dict[str, str]]]:
    """Like ``unsealed_cli``, with the environment (for :func:`grant_cli`)."""
    run, env = unseal_home(tmp_path / "home", db_url)
    try:
        yield run, env
    finally:
        run("seal", ok=False)


def json_line_reader(proc: subprocess.Popen[str]) -> Callable[[int], list[dict[str, object]]]:
    """``read(n)``: the next ``n`` JSON lines a running ``proc`` writes (30 s at most for them),
    read by a thread so a follower that writes nothing cannot hang the test."""
    import contextlib
    import json
    import queue
    import threading
    import time

    assert proc.stdout is not None
    stdout = proc.stdout
    received: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [received.put(line) for line in stdout], daemon=True).start()

    def read(n: int) -> list[dict[str, object]]:
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                got.append(json.loads(received.get(timeout=0.2)))
        assert len(got) == n, f"read {len(got)} of {n} lines; exit status {proc.poll()}"
        return got

    return read


@contextlib.contextmanager
def serve_process(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """A real ``strongroom serve ARGS`` on a free loopback port (stderr to ``log``); its base
    URL once ``/livez`` answers. Stopped with SIGTERM (SIGKILL to its group after 30 s)."""
    import time

    import httpx

    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen([strongroom_exe(), "serve", "--port", str(port), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/livez", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
        yield base
    finally:
        stop_process(proc)


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` (started with ``start_new_session``), SIGKILL its group after 30 s."""
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

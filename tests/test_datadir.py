"""The data directory is 0700 and everything in it 0600, whatever the umask; doctor flags looser.

Every command here runs with umask 000 (inherited by the CLI and the key agent
it spawns), so a mode that is right only because of the usual 022 umask — or
fixed by a chmod after the fact — shows up as 0644/0755.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.datadir import loose_modes
from strongroom.monitor.alerts import JsonLinesSink

from cli_fixtures import grant_cli, make_runner, unseal_home
from vault_fixtures import make_model

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(home: Path) -> dict[str, str]:
    """Relative path -> kind and mode of everything under ``home`` (itself as ``.``)."""
    out = {".": oct(stat.S_IMODE(os.lstat(home).st_mode))}
    for p in sorted(home.rglob("*")):
        st = os.lstat(p)
        out[str(p.relative_to(home))] = stat.filemode(st.st_mode)[0] + oct(stat.S_IMODE(st.st_mode))
    return out


def assert_private(home: Path) -> None:
    assert loose_modes(home) == [], modes(home)
    for path in [home, *home.rglob("*")]:
        st = os.lstat(path)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert stat.S_IMODE(st.st_mode) & ~want == 0, (path, oct(st.st_mode))


def test_init_alone_makes_a_private_home(tmp_path: Path) -> None:
    from strongroom.crypto.age import X25519Identity

    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # an operator made it first, loosely
    env = dict(os.environ, STRONGROOM_HOME=str(home))
    env.pop("STRONGROOM_DATABASE_URL", None)
    run = make_runner(env)
    custodians: list[str | Path] = []
    for i in (1, 2):
        pub = tmp_path / f"c{i}.pub"
        pub.write_text(f"{X25519Identity.generate().recipient}\n")
        custodians += ["--custodian", pub]
    run("init", *custodians, "--threshold", "2", "--shares-dir", tmp_path / "shares")
    assert (home / "strongroom.db").exists()
    assert_private(home)


def test_unseal_agent_release_and_alerts_keep_home_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, None)
    try:
        assert (home / "agent.sock").exists() and (home / "agent.log").exists()
        assert_private(home)
        src = tmp_path / "m.safetensors"
        make_model(src)
        run("weights", "import", src, "--name", "tiny")
        grant_cli(env, "tiny", ("load",))
        run("weights", "verify", "tiny")  # every shard's file key released through the gate
        run("audit", "checkpoint")
        JsonLinesSink(home / "alerts.jsonl").deliver({"rule": "SR-TEST", "severity": "low"})
        assert {"strongroom.db-wal", "audit/latest-checkpoint", "blobs", "alerts.jsonl"} <= set(modes(home)), \
            modes(home)
        assert_private(home)
    finally:
        run("seal", ok=False)


def test_doctor_names_each_loose_path_with_its_chmod(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, None)
    run("seal", ok=False)
    doctor = make_runner(env)

    def home_findings() -> list[dict[str, str]]:
        result = doctor("doctor", "--json", "--lock", LOCK, ok=False)
        assert result.returncode in (0, 1), result.stderr
        return [f for f in json.loads(result.stdout) if f["check"] == "home"]

    assert home_findings() == []
    (home / "strongroom.db").chmod(0o644)
    (home / "blobs").mkdir(exist_ok=True)
    (home / "blobs").chmod(0o755)
    result = doctor("doctor", "--lock", LOCK, ok=False)
    assert result.returncode == 1
    found = {f["remedy"]: f["message"] for f in home_findings()}
    assert found.keys() == {f"chmod 600 {home / 'strongroom.db'}", f"chmod 700 {home / 'blobs'}"}
    assert "0644" in found[f"chmod 600 {home / 'strongroom.db'}"]
    assert "0755" in found[f"chmod 700 {home / 'blobs'}"]

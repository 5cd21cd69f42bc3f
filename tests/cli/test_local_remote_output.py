"""Every listing the API offers prints the same embedded and with STRONGROOM_URL set.

One world: a vault whose keys live in the local key agent, served over a real
uvicorn. The embedded side runs the CLI on that data directory and database;
the remote side runs it from an empty home against the server. Text and
``--json`` output must be byte-for-byte identical (the commands render once,
in strongroom.cli.render). Commands offered only on the vault host
(strongroom.cli.placement) have no remote side to compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_kit import ServerWorld, UvicornThread, build_world, run_cli

from strongroom.cli import placement
from strongroom.monitor.alerts import Alert, AlertManager

from cli_fixtures import strongroom_exe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    tmp = tmp_path_factory.mktemp("parity")
    mp = pytest.MonkeyPatch()
    mp.setenv("STRONGROOM_HOME", str(tmp / "home"))
    mp.setenv("STRONGROOM_DATABASE_URL", f"sqlite:///{tmp / 'sr.db'}")
    mp.delenv("STRONGROOM_IDENTITY", raising=False)
    mp.delenv("STRONGROOM_URL", raising=False)
    server = UvicornThread()
    try:
        for w in build_world(tmp, http_factory=server, agent=True):
            w.grant_load("alice")
            r = w.client("alice").post("/v1/keys/release", w.release_body("alice"))
            assert r.status_code == 200, r.text  # an entry with shard and bytes
            manager = AlertManager(w.ctx.store)
            manager.raise_alert(Alert("egress-spike", "high", "alice", "tiny@1",
                                      "3 GiB in an hour", "parity-1"))
            acked = manager.raise_alert(Alert("odd-hours", "warning", "bob", "tiny@1",
                                              "load at 03:00", "parity-2"))
            manager.ack(acked.id, by="officer", note="on call")
            yield w
    finally:
        server.stop()
        mp.undo()


def _embedded(world: ServerWorld, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(world.tmp / "home"),
               STRONGROOM_DATABASE_URL=f"sqlite:///{world.tmp / 'sr.db'}")
    out = subprocess.run([strongroom_exe(), *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    return out


LISTINGS = [
    ("alice", ("weights", "ls")),
    ("alice", ("status",)),
    ("alice", ("keys", "public")),
    ("alice", ("keys", "public", "--manifest")),
    ("eve", ("alerts", "ls")),
    ("eve", ("alerts", "ls", "--all")),
    ("eve", ("audit", "tail", "-n", "8")),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(("who", "args"), LISTINGS, ids=[" ".join(a) for _, a in LISTINGS])
def test_embedded_and_remote_print_the_same(world: ServerWorld, who: str, args: tuple[str, ...],
                                            as_json: bool) -> None:
    command = " ".join(a for a in args if not a.startswith("-") and not a.isdigit())
    assert command in placement.REMOTE
    argv = (*args, "--json") if as_json else args
    remote = run_cli(world, who, *argv).stdout
    local = _embedded(world, *argv).stdout
    assert remote == local
    assert remote.strip()


def test_audit_tail_names_bytes_as_recorded(world: ServerWorld) -> None:
    import json

    rows = json.loads(run_cli(world, "eve", "audit", "tail", "-n", "50", "--json").stdout)
    release = next(r for r in rows if r["action"] == "key.release")
    assert release["bytes"] > 0 and release["shard"] and "nbytes" not in release

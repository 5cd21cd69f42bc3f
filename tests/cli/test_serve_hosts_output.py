"""Against real ``strongroom serve`` hosts, the CLI prints what it prints on the vault host.

The deployment ``docs/operations.md`` describes, started for real with
:mod:`cluster_kit`: one PostgreSQL schema and one S3 bucket (the test
SeaweedFS) shared by two hosts, each with its own data directory, host id and
key agent, ``--workers 1`` on host A and ``--workers 2`` on host B, unsealed
over their own APIs. The embedded side is the CLI on host A's data directory
(it reaches serve's own agent: one gate per directory); the remote side is the
CLI from an empty home with ``STRONGROOM_URL`` naming host A, then host B.
Text and ``--json`` output of a representative set of commands must be byte for
byte the same three ways. (tests/cli/test_local_remote_output.py compares every
remote command, on SQLite and PostgreSQL, against an in-process server.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

from cluster_kit import Cluster, s3_env

from cli_fixtures import strongroom_exe
from testsupport import need_service, pg_schema

#: (who, argv): each is run as text and with --json.
COMMANDS = [
    ("alice", ("weights", "ls")),
    ("alice", ("weights", "show", "tiny")),
    ("alice", ("people", "ls")),
    ("alice", ("access", "grants")),
    ("alice", ("status",)),
    ("eve", ("audit", "tail", "-n", "6")),
]


def _run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([strongroom_exe(), *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert out.stdout.strip(), args
    return out.stdout


# About 2-3 minutes on the shared 2-core machine (two serve hosts start and unseal, 36 CLI
# runs against PostgreSQL and S3): it runs in `make test-slow`.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_serve_hosts_print_what_the_vault_host_prints(tmp_path: Path) -> None:
    need_service("STRONGROOM_TEST_S3_ENDPOINT", "SeaweedFS")
    with pg_schema(need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")) as db_url, \
            Cluster.start(tmp_path, db_url, s3_env(), hosts=0) as cluster:
        for name, workers in (("host-a", 1), ("host-b", 2)):
            cluster.hosts.append(cluster._start_host(name, workers))
        for host in cluster.hosts:
            cluster.wait_answering(host)
            cluster.unseal(host)
        a, b = cluster.hosts
        world = cluster.setup_people(via=a.url)
        world.grant_load("alice")
        with httpx.Client(base_url=b.url, timeout=60) as http:
            assert cluster.release("alice", http).key  # an entry with server, shard and bytes

        identities = {}
        for who in ("alice", "eve"):
            identities[who] = tmp_path / f"{who}.identity"
            world.people[who].save(identities[who])
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        envs = [("the vault host", a.env)] + [
            (f"{host.name} over the API",
             {**clean, "STRONGROOM_URL": host.url, "STRONGROOM_HOME": str(tmp_path / "client-home"),
              "STRONGROOM_KNOWN_SERVERS": str(tmp_path / f"pins-{host.name}")})
            for host in (a, b)]
        with ThreadPoolExecutor(len(envs)) as pool:
            for who, argv in COMMANDS:
                for args in (argv, (*argv, "--json")):
                    ident = {"STRONGROOM_IDENTITY": str(identities[who])}
                    outs = [f.result() for f in [pool.submit(_run, {**env, **ident}, *args)
                                                 for _, env in envs]]
                    for (where, _), out in zip(envs[1:], outs[1:], strict=True):
                        assert out == outs[0], f"{' '.join(args)}: {where} vs the vault host"
        assert '"server": "host-b"' in outs[0]  # the release host B made, as recorded
        assert not (tmp_path / "client-home").exists(), "a remote command made a local vault"

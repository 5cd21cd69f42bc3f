"""``strongroom seal`` with STRONGROOM_URL seals the server: releases are refused the moment it returns."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world, run_cli


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from build_world(tmp_path_factory.mktemp("seal"), http_factory=server)
    finally:
        server.stop()


def test_remote_seal_seals_the_server_and_needs_an_officer(world: ServerWorld) -> None:
    world.grant_load("alice")
    assert "ok tiny@1" in run_cli(world, "alice", "weights", "verify", ARTIFACT).stdout
    st = json.loads(run_cli(world, "alice", "status", "--json").stdout)
    assert st["sealed"] is False and st["server_version"]

    refused = run_cli(world, "alice", "seal", ok=False)
    assert refused.returncode != 0 and "not a security officer" in refused.stderr
    assert json.loads(run_cli(world, "alice", "status", "--json").stdout)["sealed"] is False

    out = run_cli(world, "officer", "seal").stdout
    assert "sealed the server" in out
    after = run_cli(world, "alice", "weights", "verify", ARTIFACT, ok=False)
    assert after.returncode != 0 and "sealed" in after.stderr.lower()
    assert json.loads(run_cli(world, "alice", "status", "--json").stdout)["sealed"] is True
    assert not (world.tmp / "client-home").exists(), "seal touched a local directory"

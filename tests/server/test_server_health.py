"""Unsigned health probes for load balancers: /v1/sys/health (Vault-style codes), /livez, /readyz."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import ServerWorld, build_world

from strongroom import __version__


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path)


def test_health_follows_the_seal_and_needs_no_signature(world: ServerWorld) -> None:
    up = world.http.get("/v1/sys/health")
    assert up.status_code == 200, up.text
    body = up.json()
    assert body["initialized"] is True and body["sealed"] is False
    assert body["version"] == __version__ and body["host"] == world.ctx.settings.host_id
    assert world.http.get("/readyz").status_code == 200
    assert world.http.get("/livez").json() == {"status": "ok"}
    assert world.http.get("/v1/sys/version").json()["version"] == __version__

    world.ctx.keys.seal()
    down = world.http.get("/v1/sys/health")
    assert down.status_code == 503 and down.json()["sealed"] is True
    assert world.http.get("/readyz").status_code == 503
    assert world.http.get("/livez").status_code == 200
    # the probes reveal nothing else without a signature
    assert world.http.get("/v1/weights").status_code == 401

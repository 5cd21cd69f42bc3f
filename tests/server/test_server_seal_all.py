"""``seal --all``: one officer's request to one host seals every host sharing the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_kit import (  # noqa: F401  (server_db: fixture)
    ServerWorld,
    SignedClient,
    build_world,
    second_host,
    server_db,
)


@pytest.fixture
def hosts(tmp_path: Path, server_db: str | None,  # noqa: F811
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerWorld, httpx.Client]]:
    monkeypatch.setenv("STRONGROOM_STATE_CHECK_INTERVAL_S", "0.2")
    for world in build_world(tmp_path, db_url=server_db):
        with second_host(world) as http_b:
            yield world, http_b


def _sealed_within(http: httpx.Client, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if http.get("/v1/sys/health").status_code == 503:
            return True
        time.sleep(0.05)
    return False


def test_seal_all_seals_the_other_host_and_only_hosts_unsealed_before(
        hosts: tuple[ServerWorld, httpx.Client]) -> None:
    world, http_b = hosts
    assert http_b.get("/v1/sys/health").status_code == 200

    plain = world.client("officer").post("/v1/sys/seal")  # this host only
    assert plain.status_code == 200 and plain.json()["sealed"] is True
    assert not _sealed_within(http_b, 1.0), "a plain seal must not seal the other host"
    world.unseal_host(world.client(None))

    refused = world.client("alice").post("/v1/sys/seal?all=true")
    assert refused.status_code == 403 and not _sealed_within(http_b, 0.6)

    ordered = world.client("officer").post("/v1/sys/seal?all=true")
    assert ordered.status_code == 200 and ordered.json()["sealed"] is True
    assert _sealed_within(http_b, 5.0), "host B did not follow the seal order"

    # an order applies to hosts unsealed before it: host B unsealed again stays up
    world.unseal_host(SignedClient(http_b, None))
    time.sleep(0.8)
    assert http_b.get("/v1/sys/health").status_code == 200

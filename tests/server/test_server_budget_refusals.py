"""A spent Grant budget is refused with the same type and message on every host and attempt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_kit import ARTIFACT, ServerWorld, build_world, second_host, server_db  # noqa: F401


@pytest.fixture
def hosts(tmp_path: Path, server_db: str | None  # noqa: F811
          ) -> Iterator[tuple[ServerWorld, httpx.Client]]:
    for world in build_world(tmp_path, db_url=server_db):
        with second_host(world) as http_b:
            yield world, http_b


def test_spent_budget_refusals_agree_across_hosts_and_attempts(
        hosts: tuple[ServerWorld, httpx.Client]) -> None:
    from server_kit import SignedClient

    world, http_b = hosts
    size = world.client("alice").get(f"/v1/weights/{ARTIFACT}/manifest").json()[
        "manifest"]["files"][0]["size"]
    world.grant_load("alice", byte_budget=2 * size)
    a, b = world.client("alice"), SignedClient(http_b, world.people["alice"])
    assert a.post("/v1/keys/release", world.release_body()).status_code == 200
    assert b.post("/v1/keys/release", world.release_body()).status_code == 200
    refusals = []
    for client in (a, b, a, b, a):
        r = client.post("/v1/keys/release", world.release_body())
        assert r.status_code == 403, r.text
        body = r.json()
        refusals.append((body["type"], body["error"], body.get("object"), body.get("remedy")))
    assert len(set(refusals)) == 1, refusals
    assert refusals[0][0] == "GrantBudgetSpent" and "byte budget is spent" in refusals[0][1]

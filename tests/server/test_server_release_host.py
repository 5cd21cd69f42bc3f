"""A key release over HTTP records the client's address as ``host`` for the insider detectors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_kit import ServerWorld, UvicornThread, build_world, server_db  # noqa: F401

from strongroom.monitor.detectors import ActivityEvent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from build_world(tmp_path_factory.mktemp("host"), http_factory=server,
                               db_url=server_db)
    finally:
        server.stop()


def test_http_release_records_the_client_address(world: ServerWorld) -> None:
    world.grant_load()
    r = world.client("alice").post("/v1/keys/release", world.release_body("alice"))
    assert r.status_code == 200, r.text
    last = world.ctx.audit().tail(1)[0]
    assert (last.action, last.decision) == ("key.release", "allow")
    assert last.details["host"] == "127.0.0.1"
    assert ActivityEvent.from_audit(last).host == "127.0.0.1"

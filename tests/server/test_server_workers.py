"""The worker layout: keys in the local key agent, a nonce cache shared by the workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from server_kit import ServerWorld, build_world

from strongroom.server.app import create_app
from strongroom.server.nonce_table import SharedNonceTable
from strongroom.server.signatures import sign_request
from strongroom.server.workers import NONCE_DB


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    tmp = tmp_path_factory.mktemp("workers")
    mp = pytest.MonkeyPatch()
    mp.setenv("STRONGROOM_HOME", str(tmp / "home"))
    mp.setenv("STRONGROOM_DATABASE_URL", f"sqlite:///{tmp / 'sr.db'}")
    mp.delenv("STRONGROOM_IDENTITY", raising=False)
    try:
        yield from build_world(tmp, agent=True)
    finally:
        mp.undo()


def test_release_through_the_agent_and_replay_to_another_worker(world: ServerWorld) -> None:
    assert not world.ctx.in_process
    world.grant_load()
    body = world.release_body("alice")
    r = world.client("alice").post("/v1/keys/release", body)
    assert r.status_code == 200, r.text
    # a second worker: its own context over the same agent, sharing the nonce file
    home = world.ctx.settings.resolved_home
    nonces = home / NONCE_DB
    w1 = TestClient(create_app(world.ctx, nonces=SharedNonceTable(nonces)))
    w2 = TestClient(create_app(world.ctx, nonces=SharedNonceTable(nonces)))
    headers = sign_request(world.people["bob"].private_key, "GET", "/v1/whoami")
    assert w1.get("/v1/whoami", headers=headers).json()["name"] == "bob"
    again = w2.get("/v1/whoami", headers=headers)
    assert again.status_code == 401 and "replayed" in again.json()["error"]
    last = world.ctx.audit().tail(5)
    assert any(e.action == "key.release" and e.actor == "alice" and e.decision == "allow"
               for e in last)


def test_cached_releases_await_the_agent_on_the_event_loop(world: ServerWorld) -> None:
    world.grant_load()
    assert world.client("alice").post("/v1/keys/release",
                                      world.release_body("alice")).status_code == 200
    world.ctx.keys._async = None  # type: ignore[union-attr]
    body = world.release_body("alice")
    r = world.client("alice").post("/v1/keys/release", body)  # manifest and header cached now
    assert r.status_code == 200, r.text
    assert world.ctx.keys._async is not None  # type: ignore[union-attr]
    again = world.client("alice").post("/v1/keys/release", body)  # the agent's gate refuses
    assert again.status_code == 403 and "replay" in again.json()["error"]
    assert again.json()["type"] == "AccessDenied"



def test_the_event_loop_answer_is_the_models_json_with_the_same_key(
        world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from strongroom.errors import AgentUnavailable
    from strongroom.server.models import KeyReleaseOut

    world.grant_load()
    # the first release of a worker reads the manifest and header on the blocking path
    assert world.client("alice").post("/v1/keys/release",
                                      world.release_body("alice")).status_code == 200
    world.ctx.keys._async = None  # type: ignore[union-attr]
    r = world.client("alice").post("/v1/keys/release", world.release_body("alice"))
    assert r.status_code == 200, r.text
    assert world.ctx.keys._async is not None  # type: ignore[union-attr]  # the event-loop path
    assert r.content == KeyReleaseOut(**r.json()).model_dump_json().encode()
    assert r.headers["content-length"] == str(len(r.content))

    async def unavailable(request: object) -> bytearray:
        raise AgentUnavailable("no key agent is running", obj="test")

    monkeypatch.setattr(world.ctx.keys, "release_async", unavailable)
    blocking = world.client("alice").post("/v1/keys/release", world.release_body("alice"))
    assert blocking.status_code == 200, blocking.text
    assert blocking.json() == r.json()  # same shard, same answer, whichever path gave it


def test_a_signature_in_another_shape_is_verified_by_the_package(world: ServerWorld) -> None:
    """The middleware hands every field line to the package when the fast path declines."""
    headers = sign_request(world.people["bob"].private_key, "GET", "/v1/whoami")
    # Another label: not the fast path's shape; the signature base does not include it.
    headers["Signature-Input"] = "other=" + headers["Signature-Input"].removeprefix("sr=")
    headers["Signature"] = "other=" + headers["Signature"].removeprefix("sr=")
    r = world.http.get("/v1/whoami", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "bob"

"""Key release served by the signing middleware itself (auth.DirectRoute): same answers
as the FastAPI route it shadows, which stays the schema and the fallback."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from server_kit import ServerWorld, build_world

from strongroom.server.auth import SignedRequestMiddleware


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("direct"))


def _middleware(world: ServerWorld) -> SignedRequestMiddleware:
    world.client(None).get("/v1/sys/seal-status")  # builds the middleware stack
    app: Any = world.http.app  # type: ignore[attr-defined]
    layer = app.middleware_stack
    while not isinstance(layer, SignedRequestMiddleware):
        layer = layer.app
    return layer


@pytest.fixture(scope="module")
def calls(world: ServerWorld) -> dict[str, int]:
    world.grant_load("alice")
    mw = _middleware(world)
    counts = {"direct": 0, "answered": 0}
    route = mw.direct[("POST", "/v1/keys/release")]

    async def counting(scope: Any, caller: Any, body: bytes) -> Any:
        counts["direct"] += 1
        answer = await route(scope, caller, body)
        counts["answered"] += answer is not None
        return answer

    mw.direct[("POST", "/v1/keys/release")] = counting
    return counts


def test_a_release_is_answered_by_the_direct_route(world: ServerWorld,
                                                   calls: dict[str, int]) -> None:
    before = dict(calls)
    r = world.client("alice").post("/v1/keys/release", world.release_body("alice"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    out = r.json()
    assert set(out) == {"artifact", "shard", "blob", "file_key"}
    assert len(base64.b64decode(out["file_key"])) == 16
    assert calls["direct"] == before["direct"] + 1
    assert calls["answered"] == before["answered"] + 1
    last = world.ctx.audit().tail(1)[0]
    assert (last.action, last.decision, last.actor) == ("key.release", "allow", "alice")


def test_a_refusal_has_the_error_body_of_every_other_route(world: ServerWorld,
                                                           calls: dict[str, int]) -> None:
    body = world.release_body("alice")
    assert world.client("alice").post("/v1/keys/release", body).status_code == 200
    again = world.client("alice").post("/v1/keys/release", body)  # replayed evidence
    assert again.status_code == 403
    err = again.json()
    assert set(err) == {"error", "object", "remedy", "type"} and "replay" in err["error"]
    nobody = world.client("bob").post("/v1/keys/release", world.release_body("alice"))
    assert nobody.status_code == 403  # bob signs the HTTP request with alice's evidence


def test_a_body_that_fails_validation_gets_fastapis_422(world: ServerWorld,
                                                        calls: dict[str, int]) -> None:
    before = dict(calls)
    bad = world.release_body("alice")
    bad["artifact"] = "x"  # shorter than the schema's minimum
    r = world.client("alice").post("/v1/keys/release", bad)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "artifact"]
    assert calls["direct"] == before["direct"] + 1
    assert calls["answered"] == before["answered"]  # fell through to the FastAPI route
    not_json = world.client("alice").request("POST", "/v1/keys/release", raw=b"{nope")
    assert not_json.status_code == 400  # undecodable: refused before any route (server.bodies)
    assert not_json.json()["type"] == "BodyUndecodable"


def test_unsigned_releases_never_reach_the_direct_route(world: ServerWorld,
                                                        calls: dict[str, int]) -> None:
    before = dict(calls)
    r = world.http.post("/v1/keys/release", content=json.dumps(world.release_body("alice")),
                        headers={"content-type": "application/json"})
    assert r.status_code == 401
    assert calls == before


def test_a_release_enters_the_stack_at_strongroom_s_first_middleware(
        world: ServerWorld, calls: dict[str, int]) -> None:
    """FastAPI's outer layers are skipped for the hot path; ours (signatures first) are not."""
    app: Any = world.http.app  # type: ignore[attr-defined]
    assert ("POST", "/v1/keys/release") in app.hot_paths
    assert world.client("alice").post("/v1/keys/release",
                                      world.release_body("alice")).status_code == 200
    assert app._front is _middleware(world)  # no request ids or code check in this world
    assert world.client("alice").get("/v1/whoami").status_code == 200  # others: as before


def test_the_schema_still_documents_the_route(world: ServerWorld) -> None:
    schema = world.http.get("/openapi.json").json()
    op = schema["paths"]["/v1/keys/release"]["post"]
    assert "200" in op["responses"] and "requestBody" in op

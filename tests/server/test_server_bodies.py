"""Bad bodies to every POST route of the API: always a 4xx, never a 5xx, never a traceback.

The routes come from the app's own OpenAPI document (a new route is fuzzed
without touching this file); each request is signed by a security officer, so
it passes the signature check and reaches what decodes the body.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from server_kit import ServerWorld, build_world, server_db  # noqa: F401  (fixture)

from strongroom.server.bodies import MAX_DEPTH, decode_json
from strongroom.server.errors import BodyUndecodable

#: Bodies no JSON decoder may accept: each is refused as undecodable (400).
UNDECODABLE = {
    "invalid UTF-8 in a string": b'{"artifact":"\xff\xfe"}',
    "invalid UTF-8 outside JSON": b"\xff\xfe\x00\x01",
    "UTF-8 encoded surrogate": b'{"envelope":"\xed\xa0\x80"}',
    "escaped lone surrogate": b'{"envelope":"\\ud800"}',
    "UTF-16 with byte-order mark": '{"kind":"x"}'.encode("utf-16"),
    "UTF-8 byte-order mark": b'\xef\xbb\xbf{"kind":"x"}',
    "truncated JSON": b'{"envelope": "eyJwYXlsb2Fk',
    "trailing garbage": b'{"kind":"label"} {"kind":"label"}',
    "raw NUL byte": b'{"envelope":"a\x00b"}',
    "escaped NUL in a value": b'{"kind":"enrollment","envelope":"a\\u0000b"}',
    "escaped NUL in a key": b'{"a\\u0000":1}',
    "number beyond a double": b'{"byte_budget": 1e999}',
    "negative number beyond a double": b'{"artifact": -1e400}',
    "integer beyond 64 bits": b'{"n": 18446744073709551616}',
    "integer of 5000 digits": b'{"n": ' + b"9" * 5000 + b"}",
    "NaN literal": b'{"n": NaN}',
    "arrays nested 5000 deep": b"[" * 5000 + b"]" * 5000,
    "objects nested past the limit": b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
}
#: Decodable bodies of the wrong shape: the route's validation refuses them (4xx).
WRONG_SHAPE = {
    "wrong types": b'{"envelope": 5, "kind": [], "artifact": {}, "shard": false, '
                   b'"purpose": 1.5, "evidence": null, "submission": 7, "note": []}',
    "an array": b"[1, 2, 3]",
    "a string": b'"envelope"',
    "null": b"null",
    "big but 64-bit numbers": b'{"envelope": 9223372036854775807, "note": -1e308}',
    "nested within the limit": b'{"envelope":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH,
    "empty object": b"{}",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("bodies"), db_url=server_db)


def _post_routes(world: ServerWorld) -> list[tuple[str, bool, bool]]:
    """Every POST path of the OpenAPI document, parameters filled; whether it takes JSON (or
    no body), whether it takes a body."""
    schema = world.http.get("/openapi.json").json()
    routes = []
    for path, ops in schema["paths"].items():
        op = ops.get("post")
        if op is None:
            continue
        ints = {p["name"] for p in op.get("parameters", [])
                if p.get("schema", {}).get("type") == "integer"}
        # ids no row has: the deployment's monitor raises real alerts (SR-PROBE) meanwhile
        filled = re.sub(r"\{(\w+)\}",
                        lambda m, ints=ints: "987654321" if m[1] in ints else "deadbeef01", path)
        content = op.get("requestBody", {}).get("content", {"application/json": {}})
        routes.append((filled, "application/json" in content, "requestBody" in op))
    return routes


@pytest.fixture(scope="module")
def routes(world: ServerWorld) -> list[tuple[str, bool, bool]]:
    found = _post_routes(world)
    paths = [p for p, _, _ in found]
    assert {"/v1/keys/release", "/v1/access/requests", "/v1/statements",
            "/v1/sys/unseal"} <= set(paths), paths
    assert len(found) >= 10
    return found


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()[:200]}" for r in caplog.records
            if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]


@pytest.mark.parametrize("label", sorted(UNDECODABLE))
def test_an_undecodable_body_is_a_400_with_the_usual_error_body(
        world: ServerWorld, routes: list[tuple[str, bool, bool]], label: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for path, takes_json, _ in routes:
        r = world.client("officer").post(path, raw=UNDECODABLE[label])
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        if takes_json:
            assert r.status_code == 400, (path, r.text)
            err = r.json()
            assert set(err) == {"error", "object", "remedy", "type"}, (path, err)
            assert err["type"] == "BodyUndecodable" and err["object"] == "request body"
    assert not _problems(caplog)


@pytest.mark.parametrize("label", sorted(WRONG_SHAPE))
def test_a_body_of_the_wrong_shape_is_a_4xx(world: ServerWorld, routes: list[tuple[str, bool, bool]],
                                            label: str, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    caplog.set_level(logging.INFO)
    for path, _, has_body in routes:
        if not has_body:
            continue  # a decodable body to a route that reads none: it runs (seal would seal)
        r = world.client("officer").post(path, raw=WRONG_SHAPE[label])
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert isinstance(r.json(), dict)
    assert not _problems(caplog)


def test_the_key_release_route_refuses_before_the_gate(world: ServerWorld) -> None:
    """The middleware's direct key-release route sees only decoded bodies."""
    good = json.dumps(world.release_body("eve")).encode()
    bad = good.replace(b'"load"', b'"lo\xffad"')
    size = world.audit_size()
    r = world.client("eve").post("/v1/keys/release", raw=bad)
    assert r.status_code == 400 and r.json()["type"] == "BodyUndecodable"
    tail = world.ctx.audit().tail(world.audit_size() - size) if world.audit_size() > size else []
    assert "key.release" not in {e.action for e in tail}  # refused before the gate


def test_decode_json_takes_what_json_allows() -> None:
    assert decode_json(b"") is None
    assert decode_json('{"naïve": "é\\u00e9", "n": -9223372036854775808, "x": 1e308}'
                       .encode()) == {"naïve": "éé", "n": -(1 << 63), "x": 1e308}
    with pytest.raises(BodyUndecodable, match="NUL") as info:
        decode_json(b'["\\u0000"]')
    assert "\\u0000" not in info.value.message  # the message names the fault, not the content


def test_a_real_uvicorn_logs_no_traceback(tmp_path: Any, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    from server_kit import UvicornThread

    runner = UvicornThread()
    caplog.set_level(logging.INFO)
    try:
        for w in build_world(tmp_path, runner):
            for path in ("/v1/keys/release", "/v1/access/requests", "/v1/statements"):
                r = w.client("alice").post(path, raw=UNDECODABLE["invalid UTF-8 in a string"])
                assert r.status_code == 400, (path, r.text)
                assert r.json()["type"] == "BodyUndecodable"
    finally:
        runner.stop()
    assert not _problems(caplog)

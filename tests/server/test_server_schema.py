"""schemathesis against /openapi.json: no 5xx, every response as the schema says.

Requests are generated from the schema, signed inside the ASGI stack as an
enrolled auditor (so that they reach the real handlers, not only the
signature check), and validated by schemathesis' checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import ServerWorld, build_world

from strongroom.keys.identity import Identity
from strongroom.server.signatures import sign_request

EXAMPLES = 12


class SigningShim:
    """Signs each request as ``identity`` before the app sees it (the client's job).

    ``corrupt``: first put a byte that is never UTF-8 into each POST body (inside its first
    string when it has one), as a broken or hostile client would, and sign that.
    """

    def __init__(self, app: Any, identity: Identity, *, corrupt: bool = False) -> None:
        self.app = app
        self.identity = identity
        self.corrupt = corrupt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if self.corrupt and scope["method"] == "POST":
            body = body.replace(b'"', b'"\xff', 1) if b'"' in body else b'"\xff"' + body
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"]
                   if k.lower() not in (b"signature", b"signature-input", b"content-digest")]
        try:
            signed = sign_request(self.identity.private_key, scope["method"], target, body)
        except Exception:  # the library refuses targets it cannot sign: send them unsigned
            signed = {}
        headers += [(k.lower().encode(), v.encode()) for k, v in signed.items()]
        done = False

        async def replay() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app({**scope, "headers": headers}, replay, send)


def _fuzz(op: Any, examples: int = EXAMPLES, statuses: frozenset[int] | None = None) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(op.as_strategy())
        # Valid-by-schema input may still name an artifact that does not exist (404) or an
        # action the caller may not take (403): positive acceptance does not apply.
        response = case.call_and_validate(
            excluded_checks=[schemathesis.checks.positive_data_acceptance])
        assert statuses is None or response.status_code in statuses, response.text

    run()


def _fuzz_all(ops: list[Any], **kw: Any) -> None:
    failures: list[str] = []
    for op in ops:
        try:
            _fuzz(op, **kw)
        except Exception as exc:  # collect every operation's failure, then fail once
            failures.append(f"{op.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("schema"))


def test_openapi_schema_holds_under_generated_requests(world: ServerWorld) -> None:
    app = world.http.app  # type: ignore[attr-defined]
    world.grant_load()
    shim = SigningShim(app, world.people["eve"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", shim)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 20, [op.label for op in ops]
    _fuzz_all(ops)
    assert not world.client(None).get("/v1/sys/seal-status").json()["sealed"]


def test_bodies_that_are_not_utf8_are_refused_on_every_post(world: ServerWorld) -> None:
    """The generated requests again, each POST body made invalid UTF-8 before it is signed:
    400 (the body), 401 (a target the signer refuses) or 413, as the schema documents."""
    app = world.http.app  # type: ignore[attr-defined]
    shim = SigningShim(app, world.officer, corrupt=True)
    schema = schemathesis.openapi.from_asgi("/openapi.json", shim)
    posts = [op for op in (r.ok() for r in schema.get_all_operations()) if op.method == "post"]
    assert len(posts) >= 10, [op.label for op in posts]
    _fuzz_all(posts, examples=4, statuses=frozenset({400, 401, 413}))
    assert not world.client(None).get("/v1/sys/seal-status").json()["sealed"]

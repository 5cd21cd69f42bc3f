"""Attacks on the API that must fail: each gets a 4xx with a clear message and changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from server_kit import ARTIFACT, ServerWorld, build_world, server_db  # noqa: F401

from strongroom.access.approvals import AccessRequest
from strongroom.keys.identity import Identity
from strongroom.server.signatures import sign_request as _sign


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("attacks"), db_url=server_db,
                           principal_ttl_s=0.0, max_body=64 * 1024, max_upload=128 * 1024)


def sign_request(*args: object, **kw: object) -> dict[str, str]:
    headers = _sign(*args, **kw)  # type: ignore[arg-type]
    headers["content-type"] = "application/json"
    return headers


def _request_env(world: ServerWorld, who: str = "alice") -> dict[str, str]:
    me = world.people[who]
    env = AccessRequest.new(who, me.public.key_id, ARTIFACT, "load", "attack test", 3600, 1 << 20,
                            time.time()).sign(me.private_key)
    return {"envelope": env}


def _assert_refused(r: object, status: int, words: str, world: ServerWorld,
                    before: tuple[int, int]) -> None:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert words in body["error"], body
    assert body["remedy"] is None or isinstance(body["remedy"], str)
    # nothing changed: no statement stored, and the only new audit entries are denials
    assert world.statement_count() == before[1]
    grown = world.audit_size() - before[0]
    new = world.ctx.audit().tail(grown) if grown else []
    assert all(e.decision == "deny" for e in new), [(e.action, e.decision) for e in new]


def _state(world: ServerWorld) -> tuple[int, int]:
    return world.audit_size(), world.statement_count()


def test_unsigned_request_is_refused(world: ServerWorld) -> None:
    before = _state(world)
    r = world.client(None).post("/v1/access/requests", _request_env(world))
    _assert_refused(r, 401, "not signed", world, before)
    assert "RFC 9421" in r.json()["remedy"]
    entry = world.ctx.audit().tail(1)[0]  # a refused request is visible to the detectors
    assert (entry.action, entry.decision, entry.actor) == ("api.request", "deny", "anonymous")
    assert entry.object == "POST /v1/access/requests" and "not signed" in entry.reason


def test_request_signed_by_another_key_is_refused(world: ServerWorld) -> None:
    body = json.dumps(_request_env(world)).encode()
    alice, mallory = world.people["alice"], Identity.generate("mallory")
    headers = sign_request(mallory.private_key, "POST", "/v1/access/requests", body)
    # claim alice's key id while signing with mallory's key
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        mallory.public.key_id, alice.public.key_id)
    before = _state(world)
    r = world.http.post("/v1/access/requests", content=body, headers=headers)
    _assert_refused(r, 401, "does not verify", world, before)


def test_unenrolled_key_is_refused(world: ServerWorld) -> None:
    mallory = Identity.generate("mallory")
    before = _state(world)
    r = world.http.get("/v1/weights", headers=sign_request(mallory.private_key, "GET",
                                                            "/v1/weights"))
    _assert_refused(r, 401, "not enrolled", world, before)


def test_altered_method_or_path_is_refused(world: ServerWorld) -> None:
    headers = sign_request(world.people["alice"].private_key, "GET", "/v1/people")
    before = _state(world)
    r = world.http.get("/v1/weights", headers=headers)
    _assert_refused(r, 401, "does not verify", world, before)


def test_replayed_request_is_refused(world: ServerWorld) -> None:
    body = json.dumps(_request_env(world)).encode()
    headers = sign_request(world.people["alice"].private_key, "POST", "/v1/access/requests", body)
    first = world.http.post("/v1/access/requests", content=body, headers=headers)
    assert first.status_code == 201, first.text
    before = _state(world)
    again = world.http.post("/v1/access/requests", content=body, headers=headers)
    _assert_refused(again, 401, "replayed", world, before)


def test_expired_signature_is_refused(world: ServerWorld) -> None:
    body = json.dumps(_request_env(world)).encode()
    headers = sign_request(world.people["alice"].private_key, "POST", "/v1/access/requests", body,
                           created=time.time() - 3600)
    before = _state(world)
    r = world.http.post("/v1/access/requests", content=body, headers=headers)
    _assert_refused(r, 401, "expired", world, before)


def test_future_signature_is_refused(world: ServerWorld) -> None:
    headers = sign_request(world.people["alice"].private_key, "GET", "/v1/weights",
                           created=time.time() + 600)
    before = _state(world)
    _assert_refused(world.http.get("/v1/weights", headers=headers), 401, "not yet valid",
                    world, before)


def test_body_not_matching_digest_is_refused(world: ServerWorld) -> None:
    body = json.dumps(_request_env(world)).encode()
    headers = sign_request(world.people["alice"].private_key, "POST", "/v1/access/requests", body)
    other = json.dumps(_request_env(world)).encode()
    before = _state(world)
    r = world.http.post("/v1/access/requests", content=other, headers=headers)
    _assert_refused(r, 400, "does not match its signed Content-Digest", world, before)


def test_oversized_body_is_refused(world: ServerWorld) -> None:
    body = b'{"envelope": "' + b"A" * (80 * 1024) + b'"}'
    before = _state(world)
    r = world.client("alice").post("/v1/access/requests", raw=body)
    _assert_refused(r, 413, "exceeds", world, before)

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(80):
            yield b"A" * 1024

    r = world.http.post("/v1/access/requests", content=chunked())
    _assert_refused(r, 413, "exceeds", world, before)


@pytest.mark.parametrize("path", [
    "/v1/weights/..%2F..%2Fetc%2Fpasswd/manifest",
    "/v1/weights/%2e%2e/manifest",
    "/v1/weights/tiny%00/manifest",
    "/v1/weights/..%5Cwindows/manifest",
    f"/v1/weights/{ARTIFACT}/versions/1/blobs/..%2F..%2Fsr.db",
])
def test_path_traversal_is_refused(world: ServerWorld, path: str) -> None:
    before = _state(world)
    r = world.client("alice").get(path)
    _assert_refused(r, 400, "path contains", world, before)


def test_bad_artifact_name_is_refused(world: ServerWorld) -> None:
    before = _state(world)
    r = world.client("alice").get("/v1/weights/-bad$name/manifest")
    assert r.status_code in (400, 422), r.text
    assert _state(world) == before


def test_statement_signed_by_someone_else_is_refused(world: ServerWorld) -> None:
    env = AccessRequest.new("bob", world.people["bob"].public.key_id, ARTIFACT, "load", "x",
                            3600, 1, time.time()).sign(world.people["bob"].private_key)
    before = _state(world)
    r = world.client("alice").post("/v1/access/requests", {"envelope": env})
    _assert_refused(r, 403, "not signed by the caller", world, before)


def test_non_officer_cannot_publish_enrollment(world: ServerWorld) -> None:
    before = _state(world)
    r = world.client("alice").post("/v1/statements", {"kind": "enrollment", "envelope": "{}"})
    _assert_refused(r, 403, "not a security officer", world, before)


def test_revoked_key_is_refused(world: ServerWorld) -> None:
    world.enroll("mallory", ("requesters",))
    assert world.client("mallory").get("/v1/weights").status_code == 200
    world.revoke_key("mallory")
    before = _state(world)
    r = world.client("mallory").get("/v1/weights")
    _assert_refused(r, 401, "revoked", world, before)


def test_release_without_grant_is_refused_and_audited(world: ServerWorld) -> None:
    body = world.release_body("carol")
    r = world.client("carol").post("/v1/keys/release", body)
    assert r.status_code == 403, r.text
    assert "file_key" not in r.text
    last = world.ctx.audit().tail(1)[0]
    assert (last.action, last.decision) == ("key.release", "deny")


def test_release_evidence_of_another_principal_is_refused(world: ServerWorld) -> None:
    body = world.release_body("alice")  # alice's evidence, sent by bob
    r = world.client("bob").post("/v1/keys/release", body)
    assert r.status_code == 403, r.text
    assert "file_key" not in r.text


def test_oversized_upload_is_refused(world: ServerWorld) -> None:
    import hashlib

    data = b"\0" * (200 * 1024)
    digest = hashlib.sha256(data).digest()
    headers = _sign(world.officer.private_key, "POST", "/v1/weights/big/import",
                    body_sha256=digest)
    before = _state(world)
    r = world.http.post("/v1/weights/big/import", content=data, headers=headers)
    _assert_refused(r, 413, "exceeds", world, before)

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streamed
        for _ in range(200):
            yield b"\0" * 1024

    headers = _sign(world.officer.private_key, "POST", "/v1/weights/big/import",
                    body_sha256=digest)
    r = world.http.post("/v1/weights/big/import", content=chunked(), headers=headers)
    _assert_refused(r, 413, "exceeds", world, before)
    assert "big" not in {a["name"] for a in world.client("alice").get("/v1/weights").json()}


def test_request_replayed_to_another_host_is_refused(world: ServerWorld,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts (two apps, each with its own context and store connections) on one database."""
    from fastapi.testclient import TestClient

    from strongroom.server.app import create_app
    from strongroom.server.context import ServerContext
    from strongroom.store.db import Store

    if world.ctx.store.dialect == "sqlite":
        # PostgreSQL gets the database cache by default; SQLite only when asked.
        monkeypatch.setenv("STRONGROOM_SERVER_NONCES", "database")
    hosts = []
    for _ in range(2):
        store = Store.open(world.ctx.settings.resolved_database_url)
        ctx = ServerContext(world.ctx.settings, store, world.ctx.keys)
        app = create_app(ctx)
        hosts.append((ctx, TestClient(app, base_url="http://testserver")))
    try:
        headers = sign_request(world.people["bob"].private_key, "GET", "/v1/whoami")
        first = hosts[0][1].get("/v1/whoami", headers=headers)
        assert first.status_code == 200, first.text
        replay = hosts[1][1].get("/v1/whoami", headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["error"]
        again = hosts[0][1].get("/v1/whoami", headers=headers)
        assert again.status_code == 401
        fresh = sign_request(world.people["bob"].private_key, "GET", "/v1/whoami")
        assert hosts[1][1].get("/v1/whoami", headers=fresh).status_code == 200
    finally:
        for ctx, http in hosts:
            http.close()
            ctx.store.close()

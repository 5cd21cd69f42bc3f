"""The key servers' statements route is rate-limited per client address; sync waits it out."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import Throttled
from strongroom.runtime import keyserver_sync
from strongroom.runtime.keyserver_app import StatementLimiter, create_app
from threshold_fixtures import inprocess_keyservers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_per_address_refills_at_its_rate() -> None:
    clock = Clock()
    limits = StatementLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limits.take("10.0.0.9")
    with pytest.raises(Throttled, match=r"from 10\.0\.0\.9") as refused:
        limits.take("10.0.0.9")
    assert 0.4 < refused.value.retry_after <= 1.0 and "a second" in refused.value.remedy
    limits.take("10.0.0.10")  # another address has its own bucket
    clock.now += 0.5  # one token back at 2 a second
    limits.take("10.0.0.9")
    with pytest.raises(Throttled):
        limits.take("10.0.0.9")
    clock.now += 60  # never more than the burst, however long the wait
    for _ in range(3):
        limits.take("10.0.0.9")
    with pytest.raises(Throttled):
        limits.take("10.0.0.9")


def test_the_route_answers_429_before_reading_the_body(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    manifest_key = Ed25519PrivateKey.generate()
    servers, _ = inprocess_keyservers(
        tmp_path, 2, 2, manifest_key.public_key().public_bytes_raw(), []
    )
    try:
        http = TestClient(create_app(servers[0].server, limiter=StatementLimiter(rate=0.01, burst=2)))
        for _ in range(2):  # within the burst: read, and refused for what it is (not JSON)
            assert http.post("/v1/keyserver/statements", content=b"junk").status_code == 400
        r = http.post("/v1/keyserver/statements", content=b"junk")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        err = r.json()["error"]
        assert err["type"] == "Throttled" and err["obj"] == "statements" and "sync" in err["remedy"]
        assert http.get("/v1/keyserver/status").status_code == 200  # other routes unaffected
        http.close()
    finally:
        for s in servers:
            s.close()


def test_sync_resends_a_batch_the_rate_limit_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [429, 429, 200]
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        status = answers.pop(0)
        if status == 429:
            return httpx.Response(429, headers={"retry-after": "1"},
                                  json={"error": {"type": "Throttled", "message": "slow down",
                                                  "obj": "statements", "remedy": ""}})
        return httpx.Response(200, json={"stored": {"grant": 1}, "held": 0, "refused": []})

    waits: list[float] = []
    monkeypatch.setattr(keyserver_sync.time, "sleep", waits.append)
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        out = keyserver_sync.send(http, "http://ks-1", [{"kind": "grant", "envelope": "{}"}])
    assert out["stored"] == {"grant": 1} and waits == [1.0, 1.0]
    assert len(seen) == 3 and len(set(seen)) == 1  # the same batch each time

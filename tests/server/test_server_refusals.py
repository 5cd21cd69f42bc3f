"""Refused API requests are audited, at a bounded rate per client host."""

from __future__ import annotations

from typing import Any

from strongroom.errors import StrongroomError
from strongroom.server.auth import RefusalLog


def test_refusals_are_audited_with_a_per_host_limit() -> None:
    entries: list[dict[str, Any]] = []
    now = [0.0]
    log = RefusalLog(lambda **e: entries.append(e), per_minute=3, clock=lambda: now[0])
    scope = {"client": ("10.0.0.9", 5555), "method": "POST", "path": "/v1/keys/release",
             "headers": [(b"signature-input", b'strongroom=();keyid="abcd1234";created=1')]}
    for _ in range(10):
        log(scope, StrongroomError("signature replayed"))
    assert len(entries) == 3  # the flood does not fill the log
    assert entries[0]["actor"] == "unauthenticated:abcd1234"
    assert entries[0]["details"]["host"] == "10.0.0.9" and entries[0]["decision"] == "deny"
    log({**scope, "client": ("10.0.0.10", 1)}, StrongroomError("bad"))
    assert len(entries) == 4  # another host has its own budget
    now[0] = 61.0
    log(scope, StrongroomError("signature replayed"))
    assert entries[-1]["details"]["suppressed"] == 7  # and the dropped ones are counted


def test_a_sealed_server_refuses_without_failing() -> None:
    def sealed(**_: Any) -> None:
        raise StrongroomError("sealed")

    RefusalLog(sealed)({"client": None, "method": "GET", "path": "/v1/x", "headers": []},
                       StrongroomError("not signed"))

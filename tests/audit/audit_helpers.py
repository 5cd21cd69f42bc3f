"""Helpers shared by the audit tests (imported by name; not a test module)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from strongroom.audit import AuditLog, Witness, WitnessClient

MakeWitness = Callable[[str, list[str]], tuple[Witness, WitnessClient]]

ORIGIN = "strongroom.test/log"


class FixedClock:
    """A clock that advances one millisecond per call (reproducible entries)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def fill(log: AuditLog, n: int, actor: str = "alice") -> list[int]:
    """Append ``n`` simple events."""
    return log.append_many(
        [dict(actor=actor, action="weights.read", obj=f"m@{i}", decision="allow") for i in range(n)]
    )


def witness_transport(witness: Witness) -> httpx.MockTransport:
    """An in-process HTTP transport that hands requests to ``witness``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/latest-checkpoint" and request.method == "GET":
            status, content_type, body = witness.latest_checkpoint(
                request.url.params.get("origin", ""))
            return httpx.Response(status, headers={"content-type": content_type}, text=body)
        if request.url.path != "/add-checkpoint" or request.method != "POST":
            return httpx.Response(404)
        status, content_type, body = witness.add_checkpoint(request.read())
        return httpx.Response(status, headers={"content-type": content_type}, text=body)

    return httpx.MockTransport(handle)

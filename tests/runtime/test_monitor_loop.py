"""The monitor loop's lease: one leader per database, handover on expiry, a cursor that resumes.

Each test runs on SQLite and PostgreSQL (``db_url``); a fake clock drives
expiry so nothing sleeps. Break-glass entries written straight to the audit
log stand for the API's: the leader raises one critical alert per break-glass,
once, whichever loop processes it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit.config import AuditSettings
from strongroom.audit.log import AuditLog
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.detectors import RiskEngine
from strongroom.runtime.monitor_loop import MonitorLease, MonitorLoop, read_lease
from strongroom.store.db import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(store: Store) -> Iterator[AuditLog]:
    audit = AuditSettings().open_log(store, Ed25519PrivateKey.generate())
    try:
        yield audit
    finally:
        audit.close()


def _lease(store: Store, owner: str, clock: Clock) -> MonitorLease:
    return MonitorLease(store, owner, ttl_s=5.0, interval_s=1.0, clock=clock)


def _loop(log: AuditLog, store: Store, owner: str, clock: Clock) -> MonitorLoop:
    return MonitorLoop(log, AlertManager(store, audit=log), RiskEngine,
                       _lease(store, owner, clock), interval_s=1.0, replay_s=86400.0)


def _break_glass(log: AuditLog, who: str, bg: str) -> None:
    log.append(actor=who, action="access.break-glass", obj="atlas", decision="allow",
               reason="incident", details={"severity": "critical", "break_glass": bg})


def _breakglass_alerts(store: Store) -> list[tuple[str, int]]:
    return [(a.subject, a.count) for a in AlertManager(store).recent()
            if a.rule == "SR-BREAKGLASS"]


def test_two_contenders_one_wins(store: Store) -> None:
    clock = Clock()
    a, b = _lease(store, "host-a", clock), _lease(store, "host-b", clock)
    assert a.acquire(head=7) is True
    assert b.acquire(head=7) is False
    clock.now += 4.0
    assert a.acquire(head=9) is True  # renewed before it lapsed
    clock.now += 4.0
    assert b.acquire(head=9) is False
    state = read_lease(store)
    assert state is not None and state.owner == "host-a" and state.cursor == 7
    assert state.expires_at == clock.now - 4.0 + 5.0


def test_expiry_hands_over_and_a_release_hands_over_at_once(store: Store) -> None:
    clock = Clock()
    a, b = _lease(store, "host-a", clock), _lease(store, "host-b", clock)
    assert a.acquire(head=0)
    clock.now += 5.5  # host-a stopped renewing
    assert b.acquire(head=0) is True
    assert a.acquire(head=0) is False  # the old holder does not take it back while b renews
    state = read_lease(store)
    assert state is not None and state.owner == "host-b"
    b.release()
    assert a.acquire(head=0) is True


def test_cursor_resumes_without_realerting(store: Store, log: AuditLog) -> None:
    clock = Clock()
    a = _loop(log, store, "host-a", clock)
    b = _loop(log, store, "host-b", clock)
    assert a.tick() == [] and a.leading  # the first loop starts at the head: nothing old alerts
    _break_glass(log, "carol", "bg-1")
    raised = a.tick()
    assert [r.rule for r in raised] == ["SR-BREAKGLASS"]
    assert b.tick() == [] and not b.leading
    state = read_lease(store)
    assert state is not None and state.cursor >= log.size() - 1  # all but its own alert entry
    clock.now += 6.0  # host-a dies holding the lease
    _break_glass(log, "dave", "bg-2")
    taken = b.tick()
    assert b.leading and [r.subject for r in taken] == ["dave"]  # bg-1 replayed, not re-raised
    assert sorted(_breakglass_alerts(store)) == [("carol", 1), ("dave", 1)]
    state = read_lease(store)
    assert state is not None and state.owner == "host-b" and state.cursor == log.size() - 1
    assert state.caught_up_at == clock.now


def test_a_lost_lease_stops_scanning(store: Store, log: AuditLog) -> None:
    clock = Clock()
    a = _loop(log, store, "host-a", clock)
    b = _loop(log, store, "host-b", clock)
    a.tick()
    clock.now += 6.0
    b.tick()
    _break_glass(log, "carol", "bg-3")
    assert a.tick() == [] and not a.leading
    assert [r.subject for r in b.tick()] == ["carol"]
    assert _breakglass_alerts(store) == [("carol", 1)]


def test_the_loop_thread_alerts_and_stop_releases(store: Store, log: AuditLog) -> None:
    import time

    loop = MonitorLoop(log, AlertManager(store, audit=log), RiskEngine,
                       MonitorLease(store, "host-a", ttl_s=2.0, interval_s=0.05),
                       interval_s=0.05)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while not loop.leading:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _break_glass(log, "carol", "bg-4")
        while not _breakglass_alerts(store):
            assert time.monotonic() < deadline, "no alert within 5 s"
            time.sleep(0.02)
    finally:
        loop.stop()
    state = read_lease(store)
    assert state is not None and state.expires_at == 0.0
    assert _breakglass_alerts(store) == [("carol", 1)]


def test_a_cursor_past_the_head_primes_without_error(store: Store, log: AuditLog) -> None:
    """A log rolled back below the cursor (the gate refuses it anyway) does not kill the loop."""
    from sqlalchemy import update

    from strongroom.store.tables.monitor import MonitorLease as Row

    clock = Clock()
    _loop(log, store, "host-a", clock).tick()
    with store.session() as s:
        s.execute(update(Row).values(cursor=log.size() + 1000))
    clock.now += 6.0
    b = _loop(log, store, "host-b", clock)
    assert b.tick() == [] and b.leading

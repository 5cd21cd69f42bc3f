"""The monitor loop raises SR-BREAKGLASS-REVIEW once for a break-glass its quorum has not
reviewed within 24 h, and never for one reviewed in time (SQLite and PostgreSQL).

A real keyring, officer-signed directory and audit log (the access tests' world); reviews
are signed statements verified by the deployment's check (``break_glass_reviews``), one
of them by a security officer, one missing; the loop's clock is moved a day forward.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from access_kit import access_world

from strongroom.access.breakglass import (
    ALERT_ACTION,
    review,
    submit_break_glass,
    submit_review,
    take,
)
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.detectors import RiskEngine, default_detectors
from strongroom.runtime.monitor_loop import MonitorLease, MonitorLoop, break_glass_reviews


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_unreviewed_break_glass_alerts_once_after_a_day(db_url: str, tmp_path: Path) -> None:
    with access_world(db_url, tmp_path) as w:
        alice = w.enroll("alice", roles=("requesters",))
        carol = w.enroll("carol", roles=("security-officers",))
        erin = w.enroll("erin", roles=("security-officers",))
        log, store = w.keys.svc.audit, w.store
        taken = {}
        for name in ("left", "done"):
            env = take(alice.private_key, "alice", "minilm", "load", f"incident {name}",
                       now=time.time())
            taken[name] = (submit_break_glass(store, env), env)
            log.append(actor="alice", action=ALERT_ACTION, obj="minilm", decision="allow",
                       reason=f"incident {name}",
                       details={"severity": "critical", "break_glass": taken[name][0]})
        # "done" gets its quorum; "left" only one review (and alice's own would not count)
        for who, ident in (("carol", carol), ("erin", erin)):
            submit_review(store, review(ident.private_key, who, taken["done"][1], "justified",
                                        now=time.time()))
        submit_review(store, review(carol.private_key, "carol", taken["left"][1], "justified",
                                    now=time.time()))
        submit_review(store, review(alice.private_key, "alice", taken["left"][1], "justified",
                                    now=time.time()))
        state = break_glass_reviews(store, w.rule.reader)
        clock = Clock()
        alerts = AlertManager(store, audit=log)

        def loop(owner: str) -> MonitorLoop:
            return MonitorLoop(
                log, alerts, lambda: RiskEngine(detectors=default_detectors(review_state=state)),
                MonitorLease(store, owner, ttl_s=5.0, interval_s=1.0, clock=clock),
                interval_s=1.0, replay_s=7 * 86400.0)

        def overdue() -> list[tuple[str, str, int]]:
            return [(a.details["break_glass"], a.subject, a.count) for a in alerts.recent()
                    if a.rule == "SR-BREAKGLASS-REVIEW"]

        a = loop("host-a")
        a.tick()
        clock.now += 23 * 3600
        a.tick()
        assert overdue() == []  # not yet due
        clock.now += 2 * 3600
        raised = a.tick()
        assert [x.rule for x in raised] == ["SR-BREAKGLASS-REVIEW"]
        assert overdue() == [(taken["left"][0], "alice", 1)]
        assert "reviewed by: carol)" in raised[0].message and raised[0].severity == "high"
        a.tick()
        assert overdue() == [(taken["left"][0], "alice", 1)]  # once per use
        entries = [ev for ev in log.tail(20) if ev.action == "alert.raise"
                   and ev.details.get("rule") == "SR-BREAKGLASS-REVIEW"]
        assert len(entries) == 1
        # another host takes over (the first stopped): it replays, finds it, raises no new one
        a.stop()
        b = loop("host-b")
        b.tick()
        assert [x[0] for x in overdue()] == [taken["left"][0]]
        assert len([ev for ev in log.tail(20) if ev.action == "alert.raise"
                    and ev.details.get("rule") == "SR-BREAKGLASS-REVIEW"]) == 1


def test_an_unreadable_break_glass_row_does_not_hide_the_others(db_url: str,
                                                                tmp_path: Path) -> None:
    """A DBA's malformed row in access_statements is listed as such; real ones still show."""
    from sqlalchemy import insert

    from strongroom.runtime.listings import break_glass_rows
    from strongroom.store.tables.access import AccessStatement

    with access_world(db_url, tmp_path) as w:
        alice = w.enroll("alice", roles=("requesters",))
        env = take(alice.private_key, "alice", "minilm", "load", "incident", now=time.time())
        real = submit_break_glass(w.store, env)
        with w.store.session() as s:
            for i, junk in enumerate(("not json", '{"signatures": [], "payload": "!!"}',
                                      '{"signatures": [], "payload": "e30="}')):  # "e30=": {}
                s.execute(insert(AccessStatement).values(kind="break-glass", subject="x",
                                                         resource="minilm", envelope=junk,
                                                         digest=str(i) * 64,
                                                         created_at=datetime.now(UTC)))
        rows = break_glass_rows(w.store, w.rule.reader.view())
        assert [r["break_glass"] for r in rows if r["principal"] == "alice"] == [real]
        unreadable = [r for r in rows if not r["principal"]]
        assert len(unreadable) == 3
        assert all("unreadable break-glass row" in r["reason"] and not r["reviewed"]
                   for r in unreadable)

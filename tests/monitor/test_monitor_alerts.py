"""Alerts: stored once, acknowledged, audited, delivered to every sink; a down webhook loses none."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from strongroom.errors import InvalidInput, NotFound
from strongroom.monitor.alerts import (
    Alert,
    AlertManager,
    ConsoleSink,
    JsonLinesSink,
    WebhookSink,
)
from strongroom.store.db import Store

from monitor_helpers import Receiver, audit_log, receiver


def _alert(n: int = 1, key: str | None = None) -> Alert:
    return Alert(rule="SR-TEST", severity="high", subject=f"user{n}", obj="m@1",
                 message=f"test alert {n}", dedup_key=key or f"test:{n}", details={"x": 1.5})


def test_raise_stores_audits_and_dedups(store: Store, tmp_path: Path) -> None:
    log = audit_log(store)
    out = io.StringIO()
    sink = JsonLinesSink(tmp_path / "alerts.jsonl")
    alerts = AlertManager(store, audit=log, sinks=[sink, ConsoleSink(out)])
    try:
        first = alerts.raise_alert(_alert())
        again = alerts.raise_alert(_alert())
        assert first.new and not again.new and again.id == first.id and again.count == 2
        assert [e.action for e in log.events()] == ["alert.raise"]
        ev = log.events()[0]
        assert ev.decision == "high" and ev.details["subject"] == "user1"
        lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["rule"] == "SR-TEST"
        assert out.getvalue().count("ALERT HIGH SR-TEST user1") == 1
        assert alerts.pending() == 0
    finally:
        log.close()


def test_ack_is_recorded_and_audited(store: Store) -> None:
    log = audit_log(store)
    alerts = AlertManager(store, audit=log)
    try:
        a = alerts.raise_alert(_alert())
        assert [x.id for x in alerts.recent(unacked=True)] == [a.id]
        done = alerts.ack(a.id, by="oncall", note="red team")
        assert done.acked_by == "oncall" and done.acked_at is not None
        assert alerts.recent(unacked=True) == []
        assert [e.action for e in log.events()] == ["alert.raise", "alert.ack"]
        with pytest.raises(NotFound):
            alerts.ack(999, by="oncall")
        with pytest.raises(InvalidInput):
            alerts.ack(a.id, by="")
    finally:
        log.close()


def test_bad_alerts_are_refused() -> None:
    with pytest.raises(InvalidInput):
        Alert(rule="r", severity="urgent", subject="s", obj="o", message="m", dedup_key="k")
    with pytest.raises(InvalidInput):
        WebhookSink("file:///etc/passwd")


def test_webhook_down_queues_and_delivers_later_none_lost(store: Store) -> None:
    probe = Receiver()  # reserve a free port, then stop: the webhook is down
    port = probe.port
    probe.server.server_close()
    hook = WebhookSink(f"http://127.0.0.1:{port}/alerts", timeout_s=1, attempts=2, backoff_s=0.01)
    clock = [1000.0]
    alerts = AlertManager(store, sinks=[hook], clock=lambda: clock[0], retry_base_s=5)
    for n in range(5):
        alerts.raise_alert(_alert(n))
    assert alerts.deliver_pending() == 0
    assert alerts.pending() == 5
    # A manager restarted later finds the same queue in the database.
    alerts = AlertManager(store, sinks=[hook], clock=lambda: clock[0], retry_base_s=5)
    with receiver(port) as r:
        assert alerts.deliver_pending() == 0  # not due yet: back-off
        clock[0] += 6
        assert alerts.deliver_pending() == 5
        assert alerts.deliver_pending(force=True) == 0
        assert sorted(p["subject"] for p in r.received) == [f"user{n}" for n in range(5)]
        assert sorted(r.keys) == [f"test:{n}" for n in range(5)]
    assert alerts.pending() == 0


def test_background_delivery_thread(store: Store) -> None:
    with receiver() as r:
        alerts = AlertManager(store, sinks=[WebhookSink(r.url)])
        alerts.start(interval_s=0.05)
        try:
            alerts.raise_alert(_alert())
            for _ in range(100):
                if r.received:
                    break
                import time

                time.sleep(0.05)
        finally:
            alerts.stop()
        assert [p["subject"] for p in r.received] == ["user1"]

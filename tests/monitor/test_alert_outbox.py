"""The alert routes' outbox against a real loopback webhook receiver, on SQLite and PostgreSQL.

The receiver goes down for a few seconds while alerts are raised (the
back-off is shortened through ``delivery:`` the way an operator would); when it
is back every alert arrives exactly once, in order, with its idempotency key,
and the outbox is empty. A 4xx keeps the delivery as ``failed`` until it is
requeued; the route's filter skips what it does not want; a deliverer that
does not lead the monitor never sends.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from strongroom.errors import ConfigError
from strongroom.monitor.alert_config import load_alerts_config
from strongroom.monitor.alert_outbox import RouteDeliverer, RouteOutbox
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.store.db import Store

from monitor_helpers import Receiver, receiver

FAST = "delivery: {timeout_s: 2, backoff_initial_s: 0.2, backoff_max_s: 1.0, jitter: 0.5}\n"


def _config(tmp_path: Path, routes: str, delivery: str = FAST) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(delivery + "routes:\n" + routes)
    return path


def _raise(alerts: AlertManager, n: int, *, start: int = 0, severity: str = "critical",
           rule: str = "SR-BREAKGLASS") -> list[int]:
    return [alerts.raise_alert(Alert(rule=rule, severity=severity, subject=f"p{i}",
                                     obj="atlas", message=f"alert {i}",
                                     dedup_key=f"{rule}:{i}")).id
            for i in range(start, start + n)]


def _until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_receiver_down_then_back_loses_nothing_and_delivers_once(
        store: Store, tmp_path: Path) -> None:
    """The test that proves the outbox: an outage of the receiver, alerts raised during it."""
    alerts = AlertManager(store)
    probe = Receiver()
    port = probe.port
    probe.server.server_close()  # the port is known, the receiver is down
    token = "s3cr3t-token-abc"
    config = load_alerts_config(_config(
        tmp_path, f"  - {{name: soc, type: webhook, url: 'http://127.0.0.1:{port}/hook?t={token}',"
                  f" headers: {{Authorization: 'Bearer {token}'}}}}\n"))
    outbox = RouteOutbox(store, config)
    deliverer = RouteDeliverer(outbox, leading=lambda: True, interval_s=0.1)
    before = _raise(alerts, 2)  # raised before the route's first round: the backfill covers them
    deliverer.start()
    try:
        ids = before + _raise(alerts, 3, start=2)
        _until(lambda: (e := outbox.entries()) and len(e) == 5 and e[0].attempts >= 2
               and all(x.last_error for x in e), 15)
        pending = outbox.entries()
        assert [e.alert_id for e in pending] == ids and {e.state for e in pending} == {"pending"}
        assert all(e.last_error and "route soc (http://127.0.0.1" in e.last_error
                   and token not in e.last_error for e in pending)
        time.sleep(1.5)  # down "for a minute": several backed-off rounds
        ids += _raise(alerts, 2, start=5)
        with receiver(port) as up:
            _until(lambda: len(up.received) >= len(ids) and not outbox.entries())
            time.sleep(1.0)  # a repeat would arrive now
        assert [b["id"] for b in up.received] == ids  # each once, in order
        assert up.keys == [f"strongroom-alert-{i}" for i in ids]
        assert [b["idempotency_key"] for b in up.received] == up.keys
        assert all(h["Authorization"] == f"Bearer {token}" for h in up.headers)
        assert outbox.entries() == []
        done = outbox.entries(states=("delivered",))
        assert len(done) == len(ids) and all(e.delivered_at for e in done)
    finally:
        deliverer.stop()


def test_refused_for_good_is_kept_listed_and_requeued(store: Store, tmp_path: Path) -> None:
    alerts = AlertManager(store)
    with receiver() as r:
        outbox = RouteOutbox(store, load_alerts_config(_config(
            tmp_path, f"  - {{name: chat, type: slack, url: '{r.url}'}}\n")))
        r.status = 400
        ids = _raise(alerts, 2)
        assert outbox.step() == 0
        failed = outbox.entries()
        assert [(e.alert_id, e.state) for e in failed] == [(i, "failed") for i in ids]
        assert "answered HTTP 400" in str(failed[0].last_error)
        r.status = 204
        assert outbox.step() == 0  # failed stays failed until an operator requeues it
        assert outbox.requeue_failed("chat") == 2
        assert outbox.step() == 2
        assert [sorted(b) for b in r.received] == [["idempotency_key", "text", "username"]] * 2
        assert r.received[0]["idempotency_key"] == f"strongroom-alert-{ids[0]}"
        assert "*CRITICAL* SR-BREAKGLASS p0 on atlas" in r.received[0]["text"]


def test_filters_skip_and_only_the_leader_delivers(store: Store, tmp_path: Path) -> None:
    alerts = AlertManager(store)
    with receiver() as r:
        config = load_alerts_config(_config(
            tmp_path, f"  - {{name: soc, type: webhook, url: '{r.url}', min_severity: high,"
                      " detectors: [SR-CANARY]}\n"))
        outbox = RouteOutbox(store, config)
        follower = RouteDeliverer(outbox, leading=lambda: False, interval_s=0.05)
        follower.start()
        try:
            wanted = _raise(alerts, 1, rule="SR-CANARY")
            _raise(alerts, 1, rule="SR-CANARY", severity="warning", start=1)
            _raise(alerts, 1, rule="SR-PROBE", start=2)
            follower.wake()
            time.sleep(0.5)
            assert r.received == [] and outbox.entries() == []  # a follower does nothing
        finally:
            follower.stop()
        assert outbox.step() == 1
        assert [b["id"] for b in r.received] == wanted
        assert len(outbox.entries(states=("skipped",))) == 2


def test_a_bad_file_names_line_key_and_remedy_without_secrets(tmp_path: Path) -> None:
    path = _config(tmp_path, "  - name: soc\n    type: webhook\n"
                             "    url: 'ftp://example/hook?token=hunter2'\n"
                             "  - {name: siem, type: syslog, host: h, port: 70000}\n")
    with pytest.raises(ConfigError) as err:
        load_alerts_config(path)
    text = str(err.value)
    assert f"{path}:5" in text and "line 5, routes.0.url" in text
    assert "line 6, routes.1.port" in text and "docs/operations.md" in text
    assert "hunter2" not in text
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by others"):
        load_alerts_config(path)
    good = _config(tmp_path, "  - {name: soc, type: webhook, url: 'https://h.example/x?token=hunter2'}\n")
    good.chmod(0o600)
    config = load_alerts_config(good)
    assert config.route("soc").target() == "https://h.example/…"
    assert "hunter2" not in repr(config)
    with pytest.raises(ConfigError, match="no alert route 'chat'"):
        config.route("chat")
    assert load_alerts_config(tmp_path / "absent.yaml").routes == ()

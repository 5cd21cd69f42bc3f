"""The syslog route against a real rsyslog (Debian's rsyslogd, private, on loopback).

Plain TCP with octet-counted framing: alerts raised while rsyslog is down wait
in the outbox and arrive once each, as RFC 5424 messages with the alert in
structured data, after it is started on the same port. TLS (rsyslog's ossl
driver): the route pins the CA, delivers to the rsyslog whose certificate it
signed, and keeps the alert pending when the receiver's chain does not lead
to the pinned CA.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rsyslog_kit import free_port, make_tls, need_rsyslog, rsyslog

from strongroom.monitor.alert_config import load_alerts_config
from strongroom.monitor.alert_outbox import RouteOutbox
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.store.db import Store

FAST = "delivery: {timeout_s: 3, backoff_initial_s: 0.1, backoff_max_s: 0.3, jitter: 0}\n"


def _outbox(store: Store, tmp_path: Path, route: str) -> RouteOutbox:
    path = tmp_path / "alerts.yaml"
    path.write_text(FAST + "routes:\n  - " + route + "\n")
    return RouteOutbox(store, load_alerts_config(path))


def _raise(alerts: AlertManager, i: int, severity: str = "critical") -> int:
    return alerts.raise_alert(Alert(rule="SR-CANARY", severity=severity, subject=f"mallory{i}",
                                    obj='atlas "70b"]', message=f"canary {i}",
                                    dedup_key=f"canary:{i}")).id


def _drain(outbox: RouteOutbox, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (outbox.step() or outbox.entries()) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_syslog_tcp_down_then_up_delivers_each_alert_once(store: Store, tmp_path: Path) -> None:
    need_rsyslog()
    alerts = AlertManager(store)
    port = free_port()
    outbox = _outbox(store, tmp_path, f"{{name: siem, type: syslog, host: 127.0.0.1, "
                                      f"port: {port}, facility: local4}}")
    ids = [_raise(alerts, 0), _raise(alerts, 1, "high")]
    outbox.step()  # rsyslog is not up yet: kept
    assert [e.state for e in outbox.entries()] == ["pending", "pending"]
    assert "ConnectionRefusedError" in str(outbox.entries()[0].last_error)
    ids.append(_raise(alerts, 2, "warning"))
    with rsyslog(tmp_path, port=port) as syslog:
        _drain(outbox)
        lines = syslog.wait_lines(3)
        time.sleep(0.5)
        lines = syslog.lines()
    assert outbox.entries() == []
    assert len(lines) == 3  # once each
    # local4 (20) * 8 + crit 2 / err 3 / warning 4; MSGID the rule
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["162", "SR-CANARY"], ["163", "SR-CANARY"], ["164", "SR-CANARY"]]
    for alert_id, line in zip(ids, lines, strict=True):
        assert f'[strongroom@32473 id="{alert_id}" key="strongroom-alert-{alert_id}"' in line
        assert 'object="atlas \\"70b\\"\\]"' in line  # PARAM-VALUE escapes
        body = json.loads(line.split("] ", 1)[1].lstrip("\ufeff"))
        assert body["id"] == alert_id and body["idempotency_key"] == f"strongroom-alert-{alert_id}"


def test_syslog_tls_pins_the_ca(store: Store, tmp_path: Path) -> None:
    need_rsyslog(tls=True)
    alerts = AlertManager(store)
    served = make_tls(tmp_path / "served", name="siem-ca")
    other = make_tls(tmp_path / "other", name="other-ca")
    with rsyslog(tmp_path, tls=served) as syslog:
        wrong = _outbox(store, tmp_path, f"{{name: siem, type: syslog, host: 127.0.0.1, "
                                         f"port: {syslog.port}, tls: {{ca_file: '{other.ca}'}}}}")
        first = _raise(alerts, 0)
        wrong.step()
        pending = wrong.entries()
        assert [e.alert_id for e in pending] == [first]
        assert "does not chain to the pinned CA" in str(pending[0].last_error)
        pinned = _outbox(store, tmp_path, f"{{name: siem, type: syslog, host: 127.0.0.1, "
                                          f"port: {syslog.port}, tls: {{ca_file: '{served.ca}', "
                                          f"server_name: localhost}}}}")
        time.sleep(0.4)  # the failed round's back-off
        _drain(pinned)
        lines = syslog.wait_lines(1)
    assert pinned.entries() == []
    assert len(lines) == 1 and f'key="strongroom-alert-{first}"' in lines[0]

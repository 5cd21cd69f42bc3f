"""The monitor loop delivers to the routes of alerts.yaml: only the leader, after its scans.

Two loops share the database (SQLite and PostgreSQL); a break-glass in the
audit log reaches a loopback webhook once, through the leader's deliverer,
with the idempotency key of the alert the leader raised.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit.config import AuditSettings
from strongroom.monitor.alert_outbox import route_deliverer
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.detectors import RiskEngine
from strongroom.runtime.monitor_loop import MonitorLease, MonitorLoop
from strongroom.store.db import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitor"))
from monitor_helpers import receiver


def test_only_the_leader_delivers_a_break_glass_once(store: Store, tmp_path: Path) -> None:
    log = AuditSettings().open_log(store, Ed25519PrivateKey.generate())
    config = tmp_path / "alerts.yaml"
    loops, deliverers = [], []
    with receiver() as r:
        config.write_text(f"routes:\n  - {{name: soc, type: webhook, url: '{r.url}'}}\n")
        try:
            for host in ("host-a", "host-b"):
                loop = MonitorLoop(log, AlertManager(store, audit=log), RiskEngine,
                                   MonitorLease(store, host, ttl_s=5.0, interval_s=0.1),
                                   interval_s=0.1, replay_s=3600.0)
                deliverer = route_deliverer(store, config, leading=lambda lp=loop: lp.leading,
                                            interval_s=0.1)
                assert deliverer is not None
                loop.after_scan = deliverer.wake
                deliverer.start()
                loop.start()
                loops.append(loop)
                deliverers.append(deliverer)
            time.sleep(0.5)
            log.append(actor="mallory", action="access.break-glass", obj="atlas",
                       decision="allow", reason="incident",
                       details={"severity": "critical", "break_glass": "bg-1"})
            deadline = time.monotonic() + 10
            while not r.received and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # a second delivery would arrive now
        finally:
            for loop in loops:
                loop.stop()
            for deliverer in deliverers:
                deliverer.stop()
            log.close()
    assert [(b["rule"], b["subject"]) for b in r.received] == [("SR-BREAKGLASS", "mallory")]
    assert r.keys == [f"strongroom-alert-{r.received[0]['id']}"]
    assert sum(lp.leading for lp in loops) <= 1

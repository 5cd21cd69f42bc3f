"""Posture claims detection only while the deployment's monitor loop runs and keeps up.

A stopped loop (or none ever) is a critical finding: MO-0 is not met, the
monitoring family and the deployment fall below SL1, and A-4 (break-glass
raises a critical alert) is not met whatever the red-team run says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from strongroom.posture.assess import Assessment, assess
from strongroom.posture.facts import Facts, collect
from strongroom.redteam.schema import load_builtin
from strongroom.redteam.target import EmbeddedTarget
from strongroom.runtime.monitor_loop import read_lease
from strongroom.store.tables.monitor import MonitorLease


def _redteam() -> dict[str, Any]:
    return {"run_id": "rtx", "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": [{"id": s.id, "group": s.group, "outcome": "blocked"}
                        for s in load_builtin()]}


def _facts(monitor: dict[str, Any] | None) -> Facts:
    return Facts(home="/srv/strongroom", redteam=_redteam(), monitor=monitor)


def _status(result: Assessment, control: str) -> tuple[str, str]:
    found = next(c for f in result.families for c in f.controls if c.id == control)
    return found.status, found.evidence


RUNNING = {"leader": "host-a", "cursor": 120, "head": 121, "lag_entries": 1,
           "caught_up_age_s": 0.4, "heartbeat_age_s": 0.4, "lease_expires_in_s": 4.6,
           "interval_s": 1.0}


def test_a_running_loop_lets_break_glass_detection_count() -> None:
    result = assess(_facts(RUNNING))
    assert _status(result, "MO-0")[0] == "met"
    assert _status(result, "A-4")[0] == "met"
    monitoring = next(f for f in result.families if f.key == "monitoring")
    assert monitoring.level >= 1


@pytest.mark.parametrize("monitor", [
    {**RUNNING, "caught_up_age_s": 42.0, "heartbeat_age_s": 42.0, "lease_expires_in_s": -37.0},
    {"leader": None, "head": 121},
], ids=["stopped", "never-ran"])
def test_a_stopped_loop_is_a_critical_finding(monitor: dict[str, Any]) -> None:
    result = assess(_facts(monitor))
    status, evidence = _status(result, "MO-0")
    assert status == "not met" and evidence.startswith("CRITICAL")
    assert _status(result, "A-4")[0] == "not met"  # the red team's word is not enough
    monitoring = next(f for f in result.families if f.key == "monitoring")
    assert monitoring.level == 0 and result.level == 0


def test_unreadable_lease_is_unknown_never_met() -> None:
    result = assess(_facts(None))
    assert _status(result, "MO-0")[0] == "unknown"
    assert _status(result, "A-4")[0] == "unknown"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTarget]:
    t = EmbeddedTarget.build(tmp_path_factory.mktemp("posture-monitor"))
    try:
        yield t
    finally:
        t.close()


def test_live_deployment_running_then_stopped(target: EmbeddedTarget) -> None:
    home = Path(target.root) / "home"
    deadline = time.monotonic() + 10
    while read_lease(target.store) is None:
        assert time.monotonic() < deadline, "the key service started no monitor loop"
        time.sleep(0.05)
    facts = collect(home, target.store, target.keys)
    assert facts.monitor is not None and facts.monitor["leader"]
    assert _status(assess(facts), "MO-0")[0] == "met"
    loop = target.svc.monitor
    assert loop is not None
    loop.stop()
    with target.store.session() as s:  # a minute passes with no loop
        s.execute(update(MonitorLease).values(caught_up_at=MonitorLease.caught_up_at - 60,
                                              heartbeat_at=MonitorLease.heartbeat_at - 60))
    stopped = assess(collect(home, target.store, target.keys))
    status, evidence = _status(stopped, "MO-0")
    assert status == "not met" and "CRITICAL: the monitor loop is stopped" in evidence
    assert stopped.level == 0

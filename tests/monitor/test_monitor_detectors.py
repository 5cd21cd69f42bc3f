"""Detectors fire on the behaviour they name and not on ordinary work; escalation; the evaluation."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.detectors import (
    CATALOGUE,
    ActivityEvent,
    AuditScanner,
    Directory,
    Person,
    RiskEngine,
)
from strongroom.monitor.evaluation import SCENARIOS, evaluate
from strongroom.store.db import Store

from monitor_helpers import audit_log

DAY = 86400
HOUR = 3600
T0 = 1_767_571_200.0  # a Monday, 00:00 UTC
GiB = 2**30


def _rel(t: float, who: str, art: str = "m-0@1", *, nbytes: int = GiB, host: str | None = None,
         decision: str = "allow", error: str | None = None) -> ActivityEvent:
    details: dict[str, object] = {}
    if host:
        details["host"] = host
    if error:
        details["error"] = error
    return ActivityEvent(t, who, "key.release", f"{art}/s.safetensors", decision, "load",
                         details, "s.safetensors", nbytes)


def _office(days: int, people: int = 6) -> list[ActivityEvent]:
    """``people`` researchers working 9-17 UTC on weekdays, each on two artifacts, own host."""
    out = []
    for d in range(days):
        if d % 7 >= 5:
            continue
        for p in range(people):
            for k in range(3):
                out.append(_rel(T0 + d * DAY + (9 + 2 * k + p % 3) * HOUR, f"p{p}",
                                f"m-{(p + k) % 2}@1", host=f"ws-{p}"))
    return out


def _engine(**kw: object) -> RiskEngine:
    people = [Person(f"p{i}", "researcher", "frontier") for i in range(6)]
    return RiskEngine(directory=Directory(people), learn_s=7 * DAY, **kw)  # type: ignore[arg-type]


def _rules(engine: RiskEngine, who: str) -> set[str]:
    return {f.rule for f in engine.findings if f.person == who}


def test_ordinary_work_raises_nothing() -> None:
    engine = _engine(principal_cap=(256 * GiB, DAY))
    assert engine.run(_office(35)) == []
    assert engine.findings == []


def test_each_detector_fires_on_its_behaviour() -> None:
    engine = _engine(principal_cap=(10 * GiB, DAY), canaries={"decoy"})
    engine.run(_office(28))
    t = T0 + 28 * DAY
    engine.process(ActivityEvent(t, "hr", "person.flag", "p1", "allow", details={"kind": "resignation"}))
    engine.process(_rel(t + 3 * HOUR, "p1", host="ws-1"))  # after the flag
    engine.process(_rel(t + 2 * HOUR, "p0", host="ws-1"))  # p1's workstation
    engine.process(_rel(t + 10 * HOUR, "p2", host="ext-1"))  # an unknown host
    engine.process(_rel(t + 3 * HOUR, "p3", host="ws-3"))  # at 03:00, never worked then
    for i in range(6):
        engine.process(_rel(t + 12 * HOUR + i, "p4", host="ws-4", decision="deny"))
    engine.process(_rel(t + 13 * HOUR, "p4", "decoy@1", host="ws-4"))
    for day in range(3):  # three days just under the 10 GiB cap
        for k in range(8):
            engine.process(_rel(t + (day + 1) * DAY + (10 + k / 4) * HOUR, "p5",
                                f"m-{day % 2}@1", host="ws-5"))
    assert "SR-FLAGGED" in _rules(engine, "p1")
    assert "SR-NEWHOST" in _rules(engine, "p0") and "SR-NEWHOST" in _rules(engine, "p2")
    assert "SR-OFFHOURS" in _rules(engine, "p3")
    assert {"SR-DENIALS", "SR-CANARY"} <= _rules(engine, "p4")
    assert {"SR-CHUNKED", "SR-VOLUME"} <= _rules(engine, "p5")
    assert set(CATALOGUE) >= {f.rule for f in engine.findings}


def test_three_distinct_detectors_escalate_once() -> None:
    engine = _engine()
    engine.run(_office(28))
    t = T0 + 28 * DAY
    alerts = []
    alerts += engine.process(ActivityEvent(t, "hr", "person.flag", "p2", "allow",
                                           details={"kind": "vetting"}))
    alerts += engine.process(_rel(t + 2 * HOUR, "p2", host="ws-2"))  # flagged + off-hours
    assert alerts == []
    alerts += engine.process(_rel(t + 3 * HOUR, "p2", host="ext-9"))  # + new host
    alerts += engine.process(_rel(t + 4 * HOUR, "p2", host="ext-9"))
    assert [a.rule for a in alerts] == ["SR-RISK"] and alerts[0].subject == "p2"
    top = engine.scores(t + 5 * HOUR)[0]
    assert top.person == "p2" and top.escalated and len(top.rules) >= 3


def test_replayed_audit_log_raises_no_duplicate_alert(store: Store) -> None:
    log = audit_log(store)
    try:
        alerts = AlertManager(store, audit=log)
        log.append(actor="mallory", action="key.release", obj="decoy@1/s", decision="allow",
                   nbytes=10)
        first = AuditScanner(log, RiskEngine(canaries={"decoy"}), alerts).scan()
        assert [a.rule for a in first] == ["SR-CANARY"] and first[0].subject == "mallory"
        # A restarted scanner replays the log from the start: nothing new is raised.
        again = AuditScanner(log, RiskEngine(canaries={"decoy"}), alerts).scan()
        assert again == []
        assert len(alerts.recent()) == 1
        assert [e.action for e in log.events()].count("alert.raise") == 1
    finally:
        log.close()


def test_evaluation_is_deterministic_and_reports_every_scenario() -> None:
    a = evaluate(seed=5, people=120, days=40, per_scenario=3)
    b = evaluate(seed=5, people=120, days=40, per_scenario=3)
    assert a.summary() == b.summary()
    summary = a.summary()
    assert set(summary) == {"recall", "false_alerts_per_1000_person_days", "scenarios"}
    assert set(summary["scenarios"]) == set(SCENARIOS)
    assert all(s["instances"] == 3 for s in summary["scenarios"].values())
    assert summary["scenarios"]["canary-touch"]["recall"] == 1.0
    assert 0 <= summary["recall"] <= 1


def test_monitor_eval_cli_json() -> None:
    from strongroom.cli.monitor_cmd import monitor_app

    result = CliRunner().invoke(monitor_app, ["eval", "--seed", "3", "--people", "100",
                                              "--days", "40", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["recall", "false_alerts_per_1000_person_days", "scenarios"]


def test_monitor_eval_cli_over_several_seeds() -> None:
    from strongroom.cli.monitor_cmd import monitor_app

    result = CliRunner().invoke(monitor_app, ["eval", "--seed", "4", "--seeds", "2", "--people",
                                              "100", "--days", "40", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["seeds"] == [4, 5]
    assert data["recall"]["min"] <= data["recall"]["mean"] <= 1
    assert set(data["scenarios"]) == set(SCENARIOS)
    assert set(data["on_target"]) <= {4, 5}


class _Moving:
    """Peers whose answer changes between events (an officer re-enrolls someone)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.role = "researcher"

    def person(self, principal: str) -> Person:
        self.asked.append(principal)
        return Person(principal, self.role, "frontier")

    def group_size(self, group: str) -> int:
        return 6

    def flag(self, principal: str, at: float) -> tuple[float, str] | None:
        return None


def test_the_rules_ask_the_directory_once_per_event_and_see_it_move_between_events() -> None:
    peers = _Moving()
    engine = RiskEngine(directory=peers, learn_s=0)
    engine.process(_rel(T0 + 10 * HOUR, "p0", host="ws-0"))
    assert peers.asked == ["p0"]  # five rules ask for the peer group: one lookup
    peers.role = "officer"
    engine.process(_rel(T0 + 11 * HOUR, "p1", host="ws-1"))
    engine.process(_rel(T0 + 12 * HOUR, "p1", host="ws-1"))
    assert peers.asked == ["p0", "p1", "p1"]  # asked afresh for each event
    assert engine.ctx.person("p1").role == "officer"


def test_a_rule_fires_on_the_nth_event_of_one_scanned_page() -> None:
    # One page of the log (what a monitor tick hands the engine): four refusals, an allow,
    # then the fifth refusal, which is the one SR-DENIALS (5 in a day) must name.
    people = [Person(f"p{i}", "researcher", "frontier") for i in range(6)]
    engine = RiskEngine(directory=Directory(people), learn_s=0)
    page = [_rel(T0 + 9 * HOUR + i * 60, "p3", decision="deny", error="AccessDenied")
            for i in range(4)]
    page += [_rel(T0 + 10 * HOUR, "p3"),
             _rel(T0 + 11 * HOUR, "p3", decision="deny", error="AccessDenied")]
    fired = []
    for i, ev in enumerate(page):
        before = len(engine.findings)
        engine.process(ev)
        if any(f.rule == "SR-DENIALS" for f in engine.findings[before:]):
            fired.append(i)
    assert fired == [5]
    assert [f.time for f in engine.findings if f.rule == "SR-DENIALS"] == [T0 + 11 * HOUR]


def test_an_event_knows_its_artifact_from_its_object() -> None:
    ev = _rel(T0, "p0", "m-7@2")
    assert ev.artifact == "m-7@2"
    assert ActivityEvent(T0, "p0", "weights.import", "m-7@2", "allow").artifact == "m-7@2"
    assert ev == _rel(T0, "p0", "m-7@2")  # the derived field takes no part in equality

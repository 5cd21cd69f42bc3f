"""SR-BREAKGLASS: every break-glass, announced or only used at the gate, is a critical alert once."""

from __future__ import annotations

from strongroom.access.breakglass import ALERT_ACTION
from strongroom.monitor.alerts import Alert
from strongroom.monitor.detectors import (
    BREAK_GLASS_ACTION,
    ActivityEvent,
    BreakGlassUse,
    Context,
    RiskEngine,
)
from strongroom.monitor.peers import StaticPeers


def _ctx() -> Context:
    return Context(StaticPeers(), lambda: frozenset(), None)


def test_constant_matches_the_access_layer() -> None:
    assert BREAK_GLASS_ACTION == ALERT_ACTION


def test_taken_then_used_alerts_once_and_unrelated_events_do_not() -> None:
    d, ctx = BreakGlassUse(), _ctx()
    taken = ActivityEvent(1000.0, "oncall", ALERT_ACTION, "minilm@1", "allow", "outage",
                          {"break_glass": "ab" * 32, "severity": "critical"})
    used = ActivityEvent(1010.0, "oncall", "key.release", "minilm@1/w.safetensors", "allow",
                         "load", {"break_glass": "ab" * 32, "reason_given": "outage"})
    f = d.observe(taken, ctx)
    assert f is not None and f.severity == "critical" and f.person == "oncall"
    assert "quorum review" in f.message
    assert d.observe(used, ctx) is None  # the same break-glass: one alert
    normal = ActivityEvent(1020.0, "alice", "key.release", "minilm@1/w.safetensors", "allow",
                           "load", {"grant_id": "g1"})
    denied = ActivityEvent(1030.0, "eve", ALERT_ACTION, "minilm@1", "deny", "not listed",
                           {"break_glass": "cd" * 32})
    assert d.observe(normal, ctx) is None and d.observe(denied, ctx) is None


def test_unannounced_break_glass_is_caught_at_its_first_release() -> None:
    engine = RiskEngine()
    sneaky = ActivityEvent(2000.0, "mallory", "key.release", "minilm@1/w.safetensors", "allow",
                           "load", {"break_glass": "ef" * 32})
    alerts = engine.process(sneaky)
    assert [a.rule for a in alerts] == ["SR-BREAKGLASS"] and alerts[0].subject == "mallory"


def test_each_unjustified_review_raises_one_high_alert() -> None:
    """SR-BREAKGLASS-UNJUSTIFIED: from the review's audit entry (any face), once per review."""
    engine, bg, other = RiskEngine(), "ab" * 32, "cd" * 32
    engine.process(ActivityEvent(1000.0, "oncall", ALERT_ACTION, "minilm@1", "allow", "outage",
                                 {"break_glass": bg, "severity": "critical"}))

    def review(at: float, who: str, verdict: str, taken: str = bg) -> list[Alert]:
        engine.process(ActivityEvent(at, who, "access.break-glass.review", taken[:16], "allow",
                                     verdict, {"break_glass": taken}))
        return [a for a in engine.due(at) if a.rule == "SR-BREAKGLASS-UNJUSTIFIED"]

    assert review(2000.0, "carol", "justified") == []
    alerts = review(2100.0, "dave", "unjustified")
    assert len(alerts) == 1 and alerts[0].severity == "high"
    assert alerts[0].subject == "oncall" and alerts[0].obj == "minilm@1"
    assert "dave" in alerts[0].message
    assert review(2200.0, "dave", "unjustified") == []  # the same review seen again
    assert len(review(2300.0, "erin", "unjustified")) == 1  # another reviewer's review
    assert len(review(2400.0, "erin", "unjustified", other)) == 1  # another break-glass

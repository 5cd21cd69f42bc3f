"""SR-PROBE: a flood of refused API / console requests from one address alerts, even while
the engine is still learning baselines."""

from __future__ import annotations

from strongroom.monitor.detectors import ActivityEvent, Context, EdgeProbing, RiskEngine
from strongroom.monitor.peers import StaticPeers


def _ctx() -> Context:
    return Context(StaticPeers(), lambda: frozenset(), None)


def _refusal(t: float, host: str = "203.0.113.9", action: str = "api.request",
             **details: object) -> ActivityEvent:
    return ActivityEvent(t, "anonymous", action, "POST /v1/keys/release", "deny",
                         "this signed request was already used (replayed nonce)",
                         {"host": host, **details})


def test_twenty_refusals_in_ten_minutes_from_one_address() -> None:
    d, ctx = EdgeProbing(), _ctx()
    findings = [d.observe(_refusal(1000.0 + i, action="console.sign-in" if i % 2 else
                                   "api.request"), ctx) for i in range(25)]
    hits = [f for f in findings if f is not None]
    assert len(hits) == 1 and findings.index(hits[0]) == 19  # the 20th, once a day
    f = hits[0]
    assert f.person == "host:203.0.113.9" and f.severity == "high"
    assert f.details["kinds"] == ["api.request", "console.sign-in"]


def test_spread_out_or_spread_over_addresses_is_quiet() -> None:
    d, ctx = EdgeProbing(), _ctx()
    slow = [d.observe(_refusal(1000.0 + 60 * i), ctx) for i in range(30)]  # 1 a minute
    many = [d.observe(_refusal(5000.0 + i, host=f"198.51.100.{i}"), ctx) for i in range(30)]
    allowed = ActivityEvent(9000.0, "alice", "api.request", "GET /v1/whoami", "allow", "",
                            {"host": "203.0.113.9"})
    assert not any(slow) and not any(many) and d.observe(allowed, ctx) is None


def test_counts_folded_into_a_rate_limited_entry_count() -> None:
    d, ctx = EdgeProbing(), _ctx()
    assert d.observe(_refusal(1000.0), ctx) is None
    f = d.observe(_refusal(1001.0, suppressed=40), ctx)  # the log kept 1 entry for 41
    assert f is not None and f.details["refusals"] == 42


def test_alerts_during_the_learning_period() -> None:
    engine = RiskEngine()  # learns baselines for 14 days: behavioural rules stay quiet
    alerts = [a for i in range(20) for a in engine.process(_refusal(100.0 + i))]
    assert [a.rule for a in alerts] == ["SR-PROBE"]
    assert alerts[0].subject == "host:203.0.113.9"

"""The reworked detectors on hand-made event sequences: each fires on its behaviour, not on its look-alike."""

from __future__ import annotations

from strongroom.monitor.detectors import (
    ActivityEvent,
    Breadth,
    Directory,
    FirstAccess,
    NewHost,
    Person,
    RiskEngine,
    SustainedVolume,
    UnderCap,
)
from strongroom.monitor.peers import PeerPool, StaticPeers

DAY = 86400
HOUR = 3600
T0 = 1_767_571_200.0  # a Monday, 00:00 UTC
GiB = 2**30


def _rel(t: float, who: str, art: str = "m-0@1", *, nbytes: int = GiB, host: str | None = None,
         decision: str = "allow") -> ActivityEvent:
    details: dict[str, object] = {"host": host} if host else {}
    return ActivityEvent(t, who, "key.release", f"{art}/s.safetensors", decision, "load",
                         details, "s.safetensors", nbytes)


def _office(days: int, people: int = 10, per_day: int = 3, gib: int = 1) -> list[ActivityEvent]:
    """Researchers on weekdays 9-17 UTC, own workstation, two artifacts, ``per_day`` x ``gib`` GiB."""
    out = []
    for d in range(days):
        if d % 7 >= 5:
            continue
        for p in range(people):
            for k in range(per_day):
                out.append(_rel(T0 + d * DAY + (9 + 2 * k + p % 3) * HOUR, f"p{p}",
                                f"m-{(p + k) % 2}@1", nbytes=gib * GiB, host=f"ws-{p}"))
    return out


def _engine(people: int = 10, **kw: object) -> RiskEngine:
    staff = [Person(f"p{i}", "researcher", "frontier") for i in range(people)]
    staff.append(Person("newbie", "researcher", "frontier"))
    return RiskEngine(directory=Directory(staff), learn_s=7 * DAY, **kw)  # type: ignore[arg-type]


def _found(engine: RiskEngine, who: str, rule: str) -> list[float]:
    return [f.weight for f in engine.findings if f.person == who and f.rule == rule]


def test_new_host_weighs_another_persons_host_double_and_ignores_shared_boxes() -> None:
    engine = _engine()
    engine.run(_office(21))
    t = T0 + 21 * DAY + 10 * HOUR
    for k in range(12):  # a shared GPU box: three people, no owner
        engine.process(_rel(t + k, f"p{5 + k % 3}", host="gpu-box"))
    engine.process(_rel(t + HOUR, "p4", host="gpu-box"))
    engine.process(_rel(t + HOUR, "p0", host="ws-1"))  # p1's own workstation
    engine.process(_rel(t + HOUR, "newbie", host="ws-2"))  # from the first day on
    engine.process(_rel(t + 2 * HOUR, "newbie", host="lt-newbie"))  # a newcomer's laptop
    assert _found(engine, "p4", "SR-NEWHOST") == []
    assert _found(engine, "p0", "SR-NEWHOST") == [2.0]
    assert _found(engine, "newbie", "SR-NEWHOST") == [2.0]
    assert NewHost().owner("nowhere") is None


def test_sustained_volume_flags_a_week_of_heavy_pulls_not_one_big_job() -> None:
    engine = _engine(detectors=[SustainedVolume()])
    engine.run(_office(28))
    t = T0 + 28 * DAY + 10 * HOUR
    engine.process(_rel(t, "p1", nbytes=60 * GiB))  # one big legitimate job
    for d in range(5):  # 40 GiB a day, every day for a working week
        engine.process(_rel(t + d * DAY, "p2", nbytes=40 * GiB))
    assert _found(engine, "p1", "SR-SUSTAINED") == []
    weights = _found(engine, "p2", "SR-SUSTAINED")
    assert weights and max(weights) == 2.0


def test_under_cap_flags_windows_above_own_norm_not_a_steady_heavy_user() -> None:
    cap = (20 * GiB, DAY)
    heavy = [_rel(T0 + d * DAY + 10 * HOUR, "h", nbytes=16 * GiB) for d in range(35)]
    staff = [Person(f"p{i}", "researcher", "frontier") for i in range(10)]
    engine = RiskEngine(directory=Directory([*staff, Person("h", "infra", "frontier")]),
                        principal_cap=cap, detectors=[UnderCap()], learn_s=7 * DAY)
    engine.run(sorted(_office(28) + heavy[:28], key=lambda e: e.time))
    t = T0 + 28 * DAY + 10 * HOUR
    for d in range(3):  # 10 GiB a day: half the cap, over three times p2's norm
        engine.process(_rel(t + d * DAY, "p2", nbytes=10 * GiB))
        engine.process(heavy[28 + d])  # 80 % of the cap, as every day before
    alerts = [f for f in engine.findings if f.rule == "SR-CHUNKED" and f.time >= t]
    assert [f.person for f in alerts] == ["p2"] and alerts[0].severity == "high"


def test_breadth_over_the_tenure_window_catches_slow_probing() -> None:
    engine = _engine(detectors=[Breadth()])
    engine.run(_office(28))
    t = T0 + 28 * DAY + 10 * HOUR
    for d in range(6):  # two new artifacts a day: never many in one day
        for k in range(2):
            engine.process(_rel(t + d * DAY + k * HOUR, "newbie", f"probe-{2 * d + k}@1",
                                decision="deny"))
    weights = _found(engine, "newbie", "SR-BREADTH")
    assert weights and set(weights) == {2.0}  # the fortnight's breadth, never one day's
    assert all(f.person == "newbie" for f in engine.findings)


def test_first_access_is_quiet_while_a_team_adopts_a_model() -> None:
    engine = _engine(detectors=[FirstAccess()])
    office = _office(28) + [_rel(T0 + d * DAY + 12 * HOUR, "p0", "m-9@1", host="ws-0")
                            for d in range(28) if d % 7 < 5]
    engine.run(sorted(office, key=lambda e: e.time))
    t = T0 + 28 * DAY + 12 * HOUR
    for k, who in enumerate(("p1", "p2", "p3")):
        engine.process(_rel(t + k * DAY, who, "m-9@1", host=f"ws-{who[1:]}"))
    assert _found(engine, "p1", "SR-FIRSTACCESS") == [1.0]
    assert _found(engine, "p2", "SR-FIRSTACCESS") == [1.0]
    assert _found(engine, "p3", "SR-FIRSTACCESS") == []  # two peers adopted it this fortnight


def test_escalation_needs_evidence_three_from_two_rules_and_a_case_stays_open() -> None:
    engine = _engine()
    engine.run(_office(28))
    t = T0 + 28 * DAY
    alerts = engine.process(_rel(t + 3 * HOUR, "p3", host="ext-1"))  # unknown host + off-hours
    assert alerts == [] and set(r.rule for r in engine.findings if r.person == "p3") == {
        "SR-NEWHOST", "SR-OFFHOURS"}
    alerts = engine.process(_rel(t + 10 * HOUR, "p4", host="ws-5"))  # weight 2, one rule
    assert alerts == []
    alerts = engine.process(_rel(t + DAY + 3 * HOUR, "p4", host="ws-5"))  # + off-hours
    assert [a.rule for a in alerts] == ["SR-RISK"] and alerts[0].subject == "p4"
    again = engine.process(_rel(t + 2 * DAY + 3 * HOUR, "p4", host="ws-6"))
    assert again == []  # same rules: the case is already open
    engine.process(ActivityEvent(t + 2 * DAY + 4 * HOUR, "hr", "person.flag", "p4", "allow",
                                 details={"kind": "resignation"}))
    new = engine.process(_rel(t + 2 * DAY + 5 * HOUR, "p4", host="ws-4"))
    assert [a.rule for a in new] == ["SR-RISK"] and "SR-FLAGGED" in new[0].details["rules"]


def test_flags_from_the_peer_directory_feed_the_flagged_rule() -> None:
    people = [Person(f"p{i}", "researcher", "frontier") for i in range(10)]
    peers = StaticPeers(people, {"p2": [(T0 + 27 * DAY, "vetting-lapsed")]})
    engine = RiskEngine(directory=peers, learn_s=7 * DAY)
    engine.run(_office(28))
    engine.process(_rel(T0 + 29 * DAY + 10 * HOUR, "p2", host="ws-2"))
    engine.process(_rel(T0 + 29 * DAY + 10 * HOUR, "p3", host="ws-3"))
    flagged = [f for f in engine.findings if f.rule == "SR-FLAGGED"]
    assert [(f.person, f.details["flag"]) for f in flagged] == [("p2", "vetting-lapsed")]


def test_peer_pool_percentiles_leave_the_person_out() -> None:
    pool = PeerPool(keep_days=30, minimum=3)
    for day in range(5):
        pool.add("g", day, "quiet-1", 1.0)
        pool.add("g", day, "quiet-2", 2.0)
        pool.add("g", day, "loud", 100.0)
    assert pool.percentile("g", "loud", 100, since=0) == 2.0  # their own days do not count
    assert pool.percentile("g", "quiet-1", 100, since=0) == 100.0
    assert pool.percentile("g", "quiet-1", 50, since=3) == 51.0  # 2, 2, 100, 100 -> 51
    assert pool.percentile("other", "loud", 50, since=0) is None  # too few values


def test_a_flagged_person_reaching_for_new_artifacts_weighs_double() -> None:
    engine = _engine()
    engine.run(_office(28))
    t = T0 + 28 * DAY
    for who in ("p1", "p2"):
        engine.process(ActivityEvent(t, "hr", "person.flag", who, "allow",
                                     details={"kind": "resignation"}))
    engine.process(_rel(t + 10 * HOUR, "p1", "m-1@1", host="ws-1"))  # their own work
    engine.process(_rel(t + 10 * HOUR, "p2", "atlas-405b@1", host="ws-2"))  # never before
    assert _found(engine, "p1", "SR-FLAGGED") == [1.0]
    assert _found(engine, "p2", "SR-FLAGGED") == [2.0]
    assert _found(engine, "p3", "SR-FLAGGED") == []


def test_first_access_flags_a_burst_of_artifacts_new_to_a_settled_person() -> None:
    engine = _engine(detectors=[FirstAccess()])
    popular = [_rel(T0 + d * DAY + 15 * HOUR, f"p{p}", f"m-{7 + d % 2}@1", host=f"ws-{p}")
               for d in range(28) if d % 7 < 5 for p in range(6)]  # most peers use both
    engine.run(sorted(_office(28) + popular, key=lambda e: e.time))
    t = T0 + 28 * DAY + 19 * HOUR
    engine.process(_rel(t, "p9", "m-7@1", host="ws-9"))  # one popular model: not a finding
    engine.process(_rel(t, "p8", "m-7@1", host="ws-8"))
    engine.process(_rel(t + HOUR, "p8", "m-8@1", host="ws-8"))  # a second one the same evening
    assert _found(engine, "p9", "SR-FIRSTACCESS") == []
    found = [f for f in engine.findings if f.person == "p8"]
    assert [f.details.get("burst") for f in found] == [2]

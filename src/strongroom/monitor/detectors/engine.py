"""The risk engine: runs every rule over events in time order and decides what becomes an alert.

:func:`default_detectors` builds one of each rule with the documented
thresholds (:data:`CATALOGUE` lists them); :class:`RiskEngine` feeds them
events, keeps each person's recent findings, and raises ``high`` and
``critical`` findings and the ``SR-RISK`` escalation as alerts
(see :mod:`strongroom.monitor.detectors` for the escalation rule)::

    engine = RiskEngine(directory=peers, canaries=registry.names())
    alerts = engine.run(events)          # events in time order
    engine.scores(now)                   # who is at risk, highest first
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from strongroom.monitor.alerts import ALERT_ACTIONS, Alert
from strongroom.monitor.detectors.baselines import (
    Breadth,
    FirstAccess,
    NewHost,
    OffHours,
    SustainedVolume,
    UnderCap,
    Volume,
)
from strongroom.monitor.detectors.rule import DAY, FLAG, ActivityEvent, Context, Detector, Finding
from strongroom.monitor.detectors.tripwires import (
    AfterFlag,
    BreakGlassUse,
    CanaryTouch,
    Denials,
    EdgeProbing,
    ReviewState,
    UnjustifiedBreakGlass,
    UnreviewedBreakGlass,
)
from strongroom.monitor.peers import PeerGroups, StaticPeers

SEVERITY_WEIGHT = {"low": 1, "high": 3, "critical": 10}


def default_detectors(review_state: ReviewState | None = None) -> list[Detector]:
    """One instance of every rule, with the documented thresholds.

    ``review_state`` tells :class:`UnreviewedBreakGlass` whether a break-glass has its
    quorum of verified reviews (the deployment passes one; without it that rule is idle).
    """
    return [OffHours(), FirstAccess(), Volume(), SustainedVolume(), Denials(), Breadth(),
            AfterFlag(), NewHost(), UnderCap(), CanaryTouch(), BreakGlassUse(), EdgeProbing(),
            UnreviewedBreakGlass(review_state), UnjustifiedBreakGlass()]


#: Rule id -> (title, techniques, severity), for docs and `monitor eval`.
CATALOGUE: dict[str, tuple[str, tuple[str, ...], str]] = {
    d.id: (d.title, d.techniques, d.severity) for d in default_detectors()
}
CATALOGUE["SR-RISK"] = ("decayed evidence >= 2.5 from two or more distinct detectors on one "
                        "person within 7 days", (), "high")


@dataclass(frozen=True)
class RiskScore:
    """A person's risk: weighted distinct detectors in the window, doubled when escalated."""

    person: str
    score: int
    rules: tuple[str, ...]
    escalated: bool


class RiskEngine:
    """Runs the detectors over events in time order and decides what becomes an alert."""

    def __init__(
        self,
        *,
        directory: PeerGroups | None = None,
        canaries: Iterable[str] | Callable[[], frozenset[str]] = (),
        principal_cap: tuple[int, int] | None = None,
        detectors: Sequence[Detector] | None = None,
        window_s: float = 7 * DAY,
        escalate_at: float = 2.5,
        min_rules: int = 2,
        learn_s: float = 14 * DAY,
        reopen_s: float = 30 * DAY,
        half_life_s: float | None = 3 * DAY,
    ) -> None:
        names = canaries if callable(canaries) else (lambda c=frozenset(canaries): c)
        self.ctx = Context(directory or StaticPeers(), names, principal_cap)
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self.window_s = window_s
        self.escalate_at = escalate_at
        self.min_rules = min_rules
        self.reopen_s = reopen_s
        self.half_life_s = half_life_s
        self.learn_s = learn_s
        self.findings: list[Finding] = []
        self._start: float | None = None
        self._recent: dict[str, deque[Finding]] = {}
        self._escalated: dict[str, tuple[float, frozenset[str]]] = {}
        self._raised: dict[tuple[str, str], float] = {}

    def process(self, ev: ActivityEvent) -> list[Alert]:
        """Feed one event; return the alerts it triggers."""
        if ev.action in ALERT_ACTIONS or ev.action.startswith("monitor."):
            return []
        if ev.action == FLAG:
            kind = ev.details.get("kind")
            self.ctx.flags.setdefault(ev.object, []).append((ev.time, str(kind or "flag")))
            return []
        if self._start is None:
            self._start = ev.time
        learning = ev.time < self._start + self.learn_s
        self.ctx.new_event()  # the directory may have moved since the last event
        alerts: list[Alert] = []
        for det in self.detectors:
            found = det.observe(ev, self.ctx)
            if found is None or (learning and found.severity != "critical" and det.learns):
                continue
            self.findings.append(found)
            if found.severity == "critical" or (found.severity == "high"
                                                and self._fresh(found)):
                alerts.append(found.to_alert())
            escalation = self._add(found)
            if escalation is not None:
                alerts.append(escalation)
        return alerts

    def due(self, now: float) -> list[Alert]:
        """Alerts the passing of time makes due at ``now`` (an overdue review), once each."""
        return [a for det in self.detectors for a in det.due(now)]

    def run(self, events: Iterable[ActivityEvent]) -> list[Alert]:
        """Feed many events; return every alert."""
        out: list[Alert] = []
        for ev in events:
            out.extend(self.process(ev))
        return out

    def _fresh(self, f: Finding) -> bool:
        """A ``high`` finding alerts once per person and rule within ``window_s`` (one case)."""
        key = (f.person, f.rule)
        last = self._raised.get(key)
        if last is not None and f.time - last < self.window_s:
            return False
        self._raised[key] = f.time
        return True

    def _add(self, f: Finding) -> Alert | None:
        q = self._recent.setdefault(f.person, deque())
        q.append(f)
        while q and q[0].time <= f.time - self.window_s:
            q.popleft()
        rules = sorted({x.rule for x in q})
        if not self._escalates(q, f.time):
            return None
        last = self._escalated.get(f.person)
        if last is not None and f.time - last[0] < self.reopen_s and set(rules) <= last[1]:
            return None  # the case is open: nothing new to tell the analyst
        self._escalated[f.person] = (f.time, frozenset(rules))
        techniques = tuple(sorted({t for x in q for t in x.techniques}))
        return Alert(rule="SR-RISK", severity="high", subject=f.person, obj=f.obj,
                     message=f"{len(rules)} detectors flagged {f.person} within "
                     f"{self.window_s / DAY:.0f} days (evidence {self._evidence(q, f.time):.1f}): "
                     f"{', '.join(rules)}",
                     dedup_key=f"SR-RISK:{f.person}:{int(f.time // DAY)}",
                     details={"rules": rules, "time": int(f.time),
                              "score": self._score(q, True)},
                     techniques=techniques)

    def _evidence(self, findings: Iterable[Finding], now: float) -> float:
        """Each distinct rule's strongest finding weight, halved every ``half_life_s`` of age, summed."""
        best: dict[str, float] = {}
        for f in findings:
            w = f.weight
            if self.half_life_s:
                w *= 0.5 ** (max(0.0, now - f.time) / self.half_life_s)
            best[f.rule] = max(best.get(f.rule, 0.0), w)
        return sum(best.values())

    def _escalates(self, findings: Sequence[Finding], now: float) -> bool:
        rules = {f.rule for f in findings}
        return (len(rules) >= self.min_rules
                and self._evidence(findings, now) >= self.escalate_at - 1e-9)

    def _score(self, findings: Iterable[Finding], escalated: bool) -> int:
        best: dict[str, int] = {}
        for f in findings:
            best[f.rule] = max(best.get(f.rule, 0), SEVERITY_WEIGHT.get(f.severity, 1))
        total = sum(best.values())
        return total * 2 if escalated else total

    def scores(self, now: float) -> list[RiskScore]:
        """Every person with findings in the window ending ``now``, highest risk first."""
        out = []
        for person, q in self._recent.items():
            live = [f for f in q if now - self.window_s < f.time <= now]
            if not live:
                continue
            rules = tuple(sorted({f.rule for f in live}))
            escalated = self._escalates(live, now)
            out.append(RiskScore(person, self._score(live, escalated), rules, escalated))
        return sorted(out, key=lambda r: (-r.score, r.person))

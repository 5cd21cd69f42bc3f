"""Insider-risk detectors over audit events, and the per-person risk score that escalates.

Each detector is a small stateful rule with an id and the MITRE ATT&CK /
ATLAS techniques it covers (:data:`CATALOGUE`). A :class:`RiskEngine` feeds
events, in time order, to every detector, keeps each person's recent findings
and turns them into alerts:

* a ``critical`` or ``high`` finding (a canary touch; repeated releases just
  under the cap) is an alert on its own;
* ``low`` findings (off-hours, first access, volume, denials, a flagged
  person, a new host) only add to the person's risk score; when at least
  ``escalate_at`` (3) *distinct* detectors flag the same person within
  ``window_s`` (7 days) the engine raises one ``SR-RISK`` alert, as UEBA tools do.

Use it over the audit log::

    engine = RiskEngine(directory=Directory(people), canaries=registry.names(),
                        principal_cap=(256 * GiB, 86400))
    scanner = AuditScanner(log, engine, alerts)
    scanner.scan()                       # raises new alerts; call again for new events

or over any events of the same shape (:class:`ActivityEvent`, e.g. the
synthetic lab of :mod:`strongroom.monitor.evaluation`) with
:meth:`RiskEngine.process`. Baselines are learnt online: for the first
``learn_s`` seconds (14 days) only canaries alert. Events the monitor wrote
itself (``alert.*``, ``monitor.*``) are ignored. Context events it reads:
``person.flag`` (object = the person, ``details.kind`` = ``resignation`` or
``vetting``); release details may carry ``host``.

Do not feed events out of time order, and do not lower ``escalate_at`` below
3 without re-running ``strongroom monitor eval``: single weak signals are
noisy by nature.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sqlalchemy import select

from strongroom.monitor.alerts import ALERT_ACTIONS, Alert
from strongroom.store.tables.monitor import MonitorCursor

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent, AuditLog
    from strongroom.monitor.alerts import AlertManager, StoredAlert

__all__ = [
    "CATALOGUE",
    "ActivityEvent",
    "AuditScanner",
    "Detector",
    "Directory",
    "Finding",
    "Person",
    "RiskEngine",
    "RiskScore",
    "default_detectors",
]

DAY = 86400
HOUR = 3600
RELEASE = "key.release"
FLAG = "person.flag"
SEVERITY_WEIGHT = {"low": 1, "high": 3, "critical": 10}


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One audit event as detectors see it (``time`` in seconds since the epoch, UTC)."""

    time: float
    actor: str
    action: str
    object: str
    decision: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    shard: str | None = None
    nbytes: int | None = None
    index: int | None = None

    @classmethod
    def from_audit(cls, ev: AuditEvent) -> ActivityEvent:
        """Convert an :class:`~strongroom.audit.log.AuditEvent`."""
        return cls(_parse_time(ev.time), ev.actor, ev.action, ev.object, ev.decision, ev.reason,
                   ev.details, ev.shard, ev.nbytes, ev.index)

    @property
    def artifact(self) -> str:
        """The artifact reference (``name@version``) the event's object is in."""
        return self.object.split("/", 1)[0]

    @property
    def host(self) -> str | None:
        """The host the request came from, when the gate recorded it."""
        host = self.details.get("host")
        return host if isinstance(host, str) and host else None


@dataclass(frozen=True)
class Person:
    """Who a principal is, as far as peer comparison needs: role and compartment."""

    principal: str
    role: str = "unknown"
    compartment: str = "default"

    @property
    def peer_group(self) -> str:
        """People compared with each other: same role and compartment."""
        return f"{self.role}/{self.compartment}"


class Directory:
    """Principal -> :class:`Person`; unknown principals share one peer group."""

    def __init__(self, people: Iterable[Person] = ()) -> None:
        self._people = {p.principal: p for p in people}
        self._groups: dict[str, int] = {}
        for p in self._people.values():
            self._groups[p.peer_group] = self._groups.get(p.peer_group, 0) + 1

    def person(self, principal: str) -> Person:
        """The person (a default one when unknown)."""
        return self._people.get(principal) or Person(principal)

    def group_size(self, group: str) -> int:
        """How many people the directory puts in ``group`` (0 when unknown)."""
        return self._groups.get(group, 0)


@dataclass(frozen=True)
class Finding:
    """One detector's observation about one person at one time."""

    rule: str
    severity: str
    person: str
    time: float
    obj: str
    message: str
    techniques: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        """One finding per rule, person, object and day."""
        return f"{self.rule}:{self.person}:{self.obj}:{int(self.time // DAY)}"

    def to_alert(self) -> Alert:
        """The alert this finding raises on its own (``high``/``critical`` findings)."""
        return Alert(rule=self.rule, severity=self.severity, subject=self.person, obj=self.obj,
                     message=self.message, dedup_key=self.dedup_key,
                     details={**self.details, "time": int(self.time)},
                     techniques=self.techniques)


@dataclass
class Context:
    """What detectors know besides events: people, canaries, caps, flags."""

    directory: Directory
    canaries: Callable[[], frozenset[str]]
    principal_cap: tuple[int, int] | None
    flags: dict[str, tuple[float, str]] = field(default_factory=dict)


class Detector:
    """Base of the rules: ``observe`` sees every event in time order and returns findings."""

    id: ClassVar[str]
    title: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]
    severity: ClassVar[str] = "low"

    def __init__(self) -> None:
        self._flagged_day: dict[str, int] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Update state with ``ev``; return a finding when the rule fires."""
        raise NotImplementedError

    def _once_a_day(self, ev: ActivityEvent, message: str, obj: str | None = None,
                    **details: Any) -> Finding | None:
        day = int(ev.time // DAY)
        if self._flagged_day.get(ev.actor) == day:
            return None
        self._flagged_day[ev.actor] = day
        return Finding(self.id, self.severity, ev.actor, ev.time, obj or ev.artifact, message,
                       self.techniques, details)


def _is_release(ev: ActivityEvent) -> bool:
    return ev.action == RELEASE and ev.decision == "allow"


class OffHours(Detector):
    """A release at an hour this person almost never works (their own hour histogram)."""

    id = "SR-OFFHOURS"
    title = "off-hours access for this person"
    techniques = ("T1078", "AML.T0012")

    def __init__(self, min_events: int = 40, rare: float = 0.01) -> None:
        super().__init__()
        self.min_events = min_events
        self.rare = rare
        self._hist: dict[str, list[int]] = {}
        self._total: dict[str, int] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag a release in an hour (±1) that holds under 1 % of the person's history."""
        if not _is_release(ev):
            return None
        hour = int(ev.time % DAY // HOUR)
        hist = self._hist.setdefault(ev.actor, [0] * 24)
        n = self._total.get(ev.actor, 0)
        found = None
        if n >= self.min_events:
            mass = hist[hour - 1] + hist[hour] + hist[(hour + 1) % 24]
            if mass < self.rare * n:
                found = self._once_a_day(ev, f"{ev.actor} released a key at {hour:02d}:00 UTC, "
                                         f"an hour they almost never work ({mass} of {n})",
                                         hour=hour)
        hist[hour] += 1
        self._total[ev.actor] = n + 1
        return found


class FirstAccess(Detector):
    """First access to an established artifact that few of the person's peers use."""

    id = "SR-FIRSTACCESS"
    title = "first access to an artifact its peers rarely use"
    techniques = ("T1213", "AML.T0035")

    def __init__(self, peer_share: float = 0.35, settled_s: float = 7 * DAY) -> None:
        super().__init__()
        self.peer_share = peer_share
        self.settled_s = settled_s
        self._seen: dict[str, set[str]] = {}
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._members: dict[str, set[str]] = {}
        self._born: dict[str, float] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag when under ``peer_share`` of the peer group ever used an artifact older than a week."""
        if not _is_release(ev):
            return None
        art = ev.artifact
        born = self._born.setdefault(art, ev.time)
        group = ctx.directory.person(ev.actor).peer_group
        members = self._members.setdefault(group, set())
        members.add(ev.actor)
        seen = self._seen.setdefault(ev.actor, set())
        if art in seen:
            return None
        seen.add(art)
        holders = self._holders.setdefault((group, art), set())
        peers = max(len(members), ctx.directory.group_size(group)) - 1
        share = len(holders) / peers if peers > 0 else 0.0
        holders.add(ev.actor)
        if ev.time - born < self.settled_s or peers < 3 or share >= self.peer_share:
            return None
        return self._once_a_day(ev, f"{ev.actor} opened {art} for the first time; "
                                f"{share:.0%} of their peers ({group}) ever did",
                                peer_share=round(share, 3))


class Volume(Detector):
    """A day's released bytes well above the person's own baseline and their peer group's."""

    id = "SR-VOLUME"
    title = "volume above own and peer baseline"
    techniques = ("T1119", "AML.T0035")

    def __init__(self, own_factor: float = 2.0, peer_factor: float = 1.5, min_days: int = 8,
                 history_days: int = 30) -> None:
        super().__init__()
        self.own_factor = own_factor
        self.peer_factor = peer_factor
        self.min_days = min_days
        self.history_days = history_days
        self._today: dict[str, tuple[int, int]] = {}
        self._own: dict[str, deque[tuple[int, int]]] = {}
        self._group: dict[str, deque[tuple[int, int]]] = {}
        self._limit: dict[str, tuple[int, float]] = {}
        self._group_cache: dict[tuple[str, int], float] = {}

    def _peer_threshold(self, group: str, day: int) -> float:
        key = (group, day)
        if key not in self._group_cache:
            q = self._group.get(group, deque())
            while q and q[0][0] < day - self.history_days:
                q.popleft()
            values = [v for _, v in q]
            self._group_cache[key] = (float(np.percentile(values, 95)) * self.peer_factor
                                      if len(values) >= 20 else float("inf"))
        return self._group_cache[key]

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag the first release of a day whose running total passes both thresholds."""
        if not _is_release(ev) or not ev.nbytes:
            return None
        day = int(ev.time // DAY)
        person = ev.actor
        group = ctx.directory.person(person).peer_group
        cur_day, total = self._today.get(person, (day, 0))
        if cur_day != day:  # close the previous day into both baselines
            own = self._own.setdefault(person, deque(maxlen=self.history_days))
            own.append((cur_day, total))
            self._group.setdefault(group, deque()).append((cur_day, total))
            total = 0
        total += ev.nbytes
        self._today[person] = (day, total)
        limit = self._limit.get(person)
        if limit is None or limit[0] != day:
            peer = self._peer_threshold(group, day)
            own_days = [v for d, v in self._own.get(person, ()) if d >= day - self.history_days]
            mine = (float(np.percentile(own_days, 90)) * self.own_factor
                    if len(own_days) >= self.min_days else 0.0)
            limit = (day, max(peer, mine))
            self._limit[person] = limit
        if total > limit[1]:
            return self._once_a_day(ev, f"{person} has released {total / 2**30:.1f} GiB today, "
                                    f"over {limit[1] / 2**30:.1f} GiB (own and peer baselines)",
                                    obj=ev.artifact, total=total)
        return None


class Denials(Detector):
    """Many refused key requests within a day: probing for what is reachable."""

    id = "SR-DENIALS"
    title = "many denials"
    techniques = ("T1083", "AML.T0007")

    def __init__(self, threshold: int = 5, window_s: float = DAY) -> None:
        super().__init__()
        self.threshold = threshold
        self.window_s = window_s
        self._denials: dict[str, deque[float]] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag ``threshold`` or more denials in ``window_s``."""
        if ev.action != RELEASE or ev.decision != "deny":
            return None
        q = self._denials.setdefault(ev.actor, deque())
        q.append(ev.time)
        while q and q[0] <= ev.time - self.window_s:
            q.popleft()
        if len(q) >= self.threshold:
            return self._once_a_day(ev, f"{ev.actor} was refused {len(q)} key releases in 24 h",
                                    denials=len(q))
        return None


class Breadth(Detector):
    """Many distinct artifacts asked for in one day, well beyond the peer group: discovery."""

    id = "SR-BREADTH"
    title = "many distinct artifacts requested (probing)"
    techniques = ("T1083", "AML.T0007")

    def __init__(self, minimum: int = 6, peer_factor: float = 1.5,
                 history_days: int = 30) -> None:
        super().__init__()
        self.minimum = minimum
        self.peer_factor = peer_factor
        self.history_days = history_days
        self._today: dict[str, tuple[int, set[str]]] = {}
        self._group: dict[str, deque[tuple[int, int]]] = {}
        self._cache: dict[tuple[str, int], float] = {}

    def _threshold(self, group: str, day: int) -> float:
        key = (group, day)
        if key not in self._cache:
            q = self._group.get(group, deque())
            while q and q[0][0] < day - self.history_days:
                q.popleft()
            values = [v for _, v in q]
            peer = float(np.percentile(values, 99)) if len(values) >= 20 else 0.0
            self._cache[key] = max(float(self.minimum), peer * self.peer_factor)
        return self._cache[key]

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag when today's distinct artifacts (allowed or refused) pass the threshold."""
        if ev.action != RELEASE:
            return None
        day = int(ev.time // DAY)
        group = ctx.directory.person(ev.actor).peer_group
        cur, arts = self._today.get(ev.actor, (day, set()))
        if cur != day:
            self._group.setdefault(group, deque()).append((cur, len(arts)))
            arts = set()
        arts.add(ev.artifact)
        self._today[ev.actor] = (day, arts)
        if len(arts) >= self._threshold(group, day):
            return self._once_a_day(ev, f"{ev.actor} asked for {len(arts)} distinct artifacts "
                                    "today, far more than their peers", distinct=len(arts))
        return None


class AfterFlag(Detector):
    """Access soon after a vetting flag or a resignation notice."""

    id = "SR-FLAGGED"
    title = "access soon after a vetting flag or resignation notice"
    techniques = ("T1078", "AML.T0035")

    def __init__(self, within_s: float = 30 * DAY) -> None:
        super().__init__()
        self.within_s = within_s

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag releases within ``within_s`` after the person's latest flag."""
        if not _is_release(ev):
            return None
        flag = ctx.flags.get(ev.actor)
        if flag is None or not 0 <= ev.time - flag[0] <= self.within_s:
            return None
        return self._once_a_day(ev, f"{ev.actor} released a key {(ev.time - flag[0]) / DAY:.0f} "
                                f"days after a {flag[1]} flag", flag=flag[1])


class NewHost(Detector):
    """A release from a host this person never used that is unknown or another person's own."""

    id = "SR-NEWHOST"
    title = "access from a new host"
    techniques = ("T1078", "AML.T0012")

    def __init__(self, min_events: int = 10, owner_share: float = 0.8) -> None:
        super().__init__()
        self.min_events = min_events
        self.owner_share = owner_share
        self._hosts: dict[str, set[str]] = {}
        self._count: dict[str, int] = {}
        self._users: dict[str, dict[str, int]] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag an unknown host, or a host that one other person uses almost exclusively."""
        host = ev.host
        if ev.action != RELEASE or host is None:
            return None
        mine = self._hosts.setdefault(ev.actor, set())
        users = self._users.setdefault(host, {})
        found = None
        if host not in mine and self._count.get(ev.actor, 0) >= self.min_events:
            total = sum(users.values())
            owner = max(users, key=users.__getitem__) if users else None
            if owner is None:
                found = self._once_a_day(ev, f"{ev.actor} acted from {host}, a host never "
                                         "seen before", host=host)
            elif owner != ev.actor and users[owner] >= self.owner_share * total:
                found = self._once_a_day(ev, f"{ev.actor} acted from {host}, which is "
                                         f"{owner}'s host", host=host, owner=owner)
        mine.add(host)
        users[ev.actor] = users.get(ev.actor, 0) + 1
        self._count[ev.actor] = self._count.get(ev.actor, 0) + 1
        return found


class UnderCap(Detector):
    """Repeated days just under the egress cap: data moved in chunks sized to the limit (T1030)."""

    id = "SR-CHUNKED"
    title = "repeated chunked releases just under a cap"
    techniques = ("T1030", "AML.T0025")
    severity = "high"

    def __init__(self, near: float = 0.7, days: int = 3, within_days: int = 7) -> None:
        super().__init__()
        self.near = near
        self.days = days
        self.within_days = within_days
        self._today: dict[str, tuple[int, int]] = {}
        self._near_days: dict[str, deque[int]] = {}

    def _mark(self, person: str, day: int) -> int:
        q = self._near_days.setdefault(person, deque())
        if not q or q[-1] != day:
            q.append(day)
        while q and q[0] <= day - self.within_days:
            q.popleft()
        return len(q)

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag the ``days``-th day in ``within_days`` on which use reached ``near`` × the cap."""
        if ctx.principal_cap is None or ev.action != RELEASE:
            return None
        cap, window = ctx.principal_cap
        day = int(ev.time // window)
        if ev.decision == "deny":
            hit = ev.details.get("error") == "BudgetExceeded"
        elif ev.decision == "allow" and ev.nbytes:
            cur, total = self._today.get(ev.actor, (day, 0))
            total = (total if cur == day else 0) + ev.nbytes
            self._today[ev.actor] = (day, total)
            hit = total >= self.near * cap
        else:
            return None
        if hit and self._mark(ev.actor, day) >= self.days:
            return self._once_a_day(ev, f"{ev.actor} reached {self.near:.0%} of the egress cap on "
                                    f"{self.days}+ of the last {self.within_days} windows",
                                    cap=cap)
        return None


class CanaryTouch(Detector):
    """Any touch of a canary artifact (decoy): critical on its own."""

    id = "SR-CANARY"
    title = "touch of a canary"
    techniques = ("T1213", "AML.T0007")
    severity = "critical"

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag any event on a canary except its import."""
        if ev.action == "weights.import":
            return None
        name = ev.artifact.split("@", 1)[0]
        if name not in ctx.canaries():
            return None
        return Finding(self.id, self.severity, ev.actor, ev.time, ev.artifact,
                       f"{ev.actor} touched canary {ev.artifact} ({ev.action} {ev.decision})",
                       self.techniques, {"action": ev.action, "decision": ev.decision})


def default_detectors() -> list[Detector]:
    """One instance of every rule, with the documented thresholds."""
    return [OffHours(), FirstAccess(), Volume(), Denials(), Breadth(), AfterFlag(), NewHost(),
            UnderCap(), CanaryTouch()]


#: Rule id -> (title, techniques, severity), for docs and `monitor eval`.
CATALOGUE: dict[str, tuple[str, tuple[str, ...], str]] = {
    d.id: (d.title, d.techniques, d.severity) for d in default_detectors()
}
CATALOGUE["SR-RISK"] = ("three or more distinct detectors flag one person", (), "high")


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
        directory: Directory | None = None,
        canaries: Iterable[str] | Callable[[], frozenset[str]] = (),
        principal_cap: tuple[int, int] | None = None,
        detectors: Sequence[Detector] | None = None,
        window_s: float = 7 * DAY,
        escalate_at: int = 3,
        learn_s: float = 14 * DAY,
    ) -> None:
        names = canaries if callable(canaries) else (lambda c=frozenset(canaries): c)
        self.ctx = Context(directory or Directory(), names, principal_cap)
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self.window_s = window_s
        self.escalate_at = escalate_at
        self.learn_s = learn_s
        self.findings: list[Finding] = []
        self._start: float | None = None
        self._recent: dict[str, deque[Finding]] = {}
        self._escalated: dict[str, float] = {}

    def process(self, ev: ActivityEvent) -> list[Alert]:
        """Feed one event; return the alerts it triggers."""
        if ev.action in ALERT_ACTIONS or ev.action.startswith("monitor."):
            return []
        if ev.action == FLAG:
            kind = ev.details.get("kind")
            self.ctx.flags[ev.object] = (ev.time, str(kind or "flag"))
            return []
        if self._start is None:
            self._start = ev.time
        learning = ev.time < self._start + self.learn_s
        alerts: list[Alert] = []
        for det in self.detectors:
            found = det.observe(ev, self.ctx)
            if found is None or (learning and found.severity != "critical"):
                continue
            self.findings.append(found)
            if found.severity in ("high", "critical"):
                alerts.append(found.to_alert())
            escalation = self._add(found)
            if escalation is not None:
                alerts.append(escalation)
        return alerts

    def run(self, events: Iterable[ActivityEvent]) -> list[Alert]:
        """Feed many events; return every alert."""
        out: list[Alert] = []
        for ev in events:
            out.extend(self.process(ev))
        return out

    def _add(self, f: Finding) -> Alert | None:
        q = self._recent.setdefault(f.person, deque())
        q.append(f)
        while q and q[0].time <= f.time - self.window_s:
            q.popleft()
        rules = sorted({x.rule for x in q})
        last = self._escalated.get(f.person)
        if len(rules) < self.escalate_at or (last is not None and f.time - last < self.window_s):
            return None
        self._escalated[f.person] = f.time
        techniques = tuple(sorted({t for x in q for t in x.techniques}))
        return Alert(rule="SR-RISK", severity="high", subject=f.person, obj=f.obj,
                     message=f"{len(rules)} detectors flagged {f.person} within "
                     f"{self.window_s / DAY:.0f} days: {', '.join(rules)}",
                     dedup_key=f"SR-RISK:{f.person}:{int(f.time // DAY)}",
                     details={"rules": rules, "time": int(f.time),
                              "score": self._score(q, True)},
                     techniques=techniques)

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
            escalated = len(rules) >= self.escalate_at
            out.append(RiskScore(person, self._score(live, escalated), rules, escalated))
        return sorted(out, key=lambda r: (-r.score, r.person))


class AuditScanner:
    """Reads the audit log incrementally into a :class:`RiskEngine` and raises its alerts.

    The engine's baselines live in memory: a new scanner replays the log from
    the start to rebuild them, and raises only alerts for entries past the
    stored cursor (``monitor_cursors``); de-duplication stops any repeat.
    """

    def __init__(self, audit: AuditLog, engine: RiskEngine, alerts: AlertManager, *,
                 name: str = "detectors") -> None:
        self.audit = audit
        self.engine = engine
        self.alerts = alerts
        self.name = name
        self._position = 0

    def _cursor(self) -> int:
        with self.alerts.store.session() as s:
            row = s.scalars(select(MonitorCursor).where(MonitorCursor.name == self.name)).first()
            return int(row.position) if row is not None else 0

    def _save(self, position: int) -> None:
        with self.alerts.store.session() as s:
            row = s.get(MonitorCursor, self.name)
            if row is None:
                s.add(MonitorCursor(name=self.name, position=position))
            elif row.position < position:
                row.position = position

    def scan(self, page: int = 5000) -> list[StoredAlert]:
        """Process every entry not yet seen; return the alerts raised (new or repeated)."""
        cursor = self._cursor()
        size = self.audit.size()
        raised: list[StoredAlert] = []
        while self._position < size:
            end = min(size, self._position + page)
            for ev in self.audit.events(self._position, end):
                alerts = self.engine.process(ActivityEvent.from_audit(ev))
                if ev.index >= cursor:
                    raised.extend(self.alerts.raise_alert(a) for a in alerts)
            self._position = end
        self._save(self._position)
        return raised

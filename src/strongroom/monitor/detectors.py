"""Insider-risk detectors over audit events, and the per-person risk score that escalates.

Each detector is a small stateful rule with an id and the MITRE ATT&CK /
ATLAS techniques it covers (:data:`CATALOGUE`). A :class:`RiskEngine` feeds
events, in time order, to every detector, keeps each person's recent findings
and turns them into alerts:

* a ``critical`` finding (a canary touch) is an alert every time; a ``high``
  one (repeated windows near the cap) once per person and rule a week;
* ``low`` findings (off-hours, first access, daily and weekly volume,
  denials, breadth, a flagged person, a new host) carry a *weight* (1, or 2
  where the detector's own feature is strong: another person's host, a
  fortnight of breadth, a week of volume far over the person's norm, a flagged
  person opening something new). The engine sums, per person, each distinct
  rule's strongest weight, halved for every ``half_life_s`` (3 days) of age,
  over ``window_s`` (7 days); at ``escalate_at`` (2.5) from at least
  ``min_rules`` (2) distinct rules it raises one ``SR-RISK`` alert, as UEBA
  tools do: three weak signals close together, or one strong and one weak.
  The case then stays open for ``reopen_s`` (30 days): only a rule not yet in
  it raises a new ``SR-RISK``.

Use it over the audit log, peers from the officer-signed directory::

    engine = RiskEngine(directory=SignedDirectoryPeers(reader), canaries=registry.names(),
                        principal_cap=(256 * GiB, 86400))
    scanner = AuditScanner(log, engine, alerts)
    scanner.scan()                       # raises new alerts; call again for new events

or over any events of the same shape (:class:`ActivityEvent`, e.g. the
synthetic lab of :mod:`strongroom.monitor.evaluation`, with
:class:`~strongroom.monitor.peers.StaticPeers`) with :meth:`RiskEngine.process`.
Baselines are learnt online and rebuilt by replaying the log at start: for
the first ``learn_s`` seconds (14 days) only canaries alert. Peer baselines
leave the person themselves out (:class:`PeerPool`) and anyone the same rule
has flagged. Events the monitor wrote itself (``alert.*``, ``monitor.*``) are
ignored. Context it reads: ``person.flag`` events (object = the person,
``details.kind`` = ``resignation`` or ``vetting``), the peer provider's
flags (vetting and employment records), and a release's ``details.host``.

Do not feed events out of time order, and do not lower ``escalate_at`` or
``min_rules`` without re-running ``strongroom monitor eval`` over several
seeds: single weak signals are noisy by nature.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sqlalchemy import select

from strongroom.artifacts import base_name
from strongroom.monitor.alerts import ALERT_ACTIONS, Alert
from strongroom.monitor.peers import Flag, PeerGroups, PeerPool, Person, StaticPeers
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
    "PeerGroups",
    "Person",
    "RiskEngine",
    "RiskScore",
    "StaticPeers",
    "SustainedVolume",
    "default_detectors",
]

DAY = 86400
HOUR = 3600
RELEASE = "key.release"
#: What taking break-glass is audited as (``strongroom.access.breakglass.ALERT_ACTION``).
BREAK_GLASS_ACTION = "access.break-glass"
FLAG = "person.flag"
SEVERITY_WEIGHT = {"low": 1, "high": 3, "critical": 10}


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
        return cls(ev.at, ev.actor, ev.action, ev.object, ev.decision, ev.reason,
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


#: The static peer-group provider under its historical name (tests, the synthetic lab).
Directory = StaticPeers


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
    weight: float = 1.0

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

    directory: PeerGroups
    canaries: Callable[[], frozenset[str]]
    principal_cap: tuple[int, int] | None
    flags: dict[str, list[Flag]] = field(default_factory=dict)

    def flag_of(self, principal: str, at: float) -> Flag | None:
        """The latest flag on ``principal`` at or before ``at``: audit ``person.flag`` or directory."""
        found = [f for f in self.flags.get(principal, ()) if f[0] <= at]
        listed = self.directory.flag(principal, at)
        if listed is not None:
            found.append(listed)
        return max(found) if found else None


class Detector:
    """Base of the rules: ``observe`` sees every event in time order and returns findings."""

    id: ClassVar[str]
    title: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]
    severity: ClassVar[str] = "low"
    #: Whether the rule compares people with learnt baselines (and so stays quiet while
    #: the engine is learning); rules that judge an event on its own say False.
    learns: ClassVar[bool] = True

    def __init__(self) -> None:
        self._flagged_day: dict[str, tuple[int, float]] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Update state with ``ev``; return a finding when the rule fires."""
        raise NotImplementedError

    def _flagged_since(self, person: str, day: int) -> bool:
        """Whether this rule flagged ``person`` on ``day`` or later (kept out of peer baselines)."""
        seen = self._flagged_day.get(person)
        return seen is not None and seen[0] >= day

    def _once_a_day(self, ev: ActivityEvent, message: str, obj: str | None = None,
                    weight: float = 1.0, **details: Any) -> Finding | None:
        """A finding unless this rule already flagged the person today with at least ``weight``."""
        day = int(ev.time // DAY)
        seen = self._flagged_day.get(ev.actor)
        if seen is not None and seen[0] == day and seen[1] >= weight:
            return None
        self._flagged_day[ev.actor] = (day, weight)
        return Finding(self.id, self.severity, ev.actor, ev.time, obj or ev.artifact, message,
                       self.techniques, details, weight)


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
    """First access to an established artifact that few of the person's peers use.

    Not a finding while the artifact is young (first seen under ``settled_s``
    ago) or while the peer group is adopting it (``wave`` or more peers opened
    it for the first time in the last ``wave_s``): a new project spreading
    through a team is not discovery.
    """

    id = "SR-FIRSTACCESS"
    title = "first access to an artifact its peers rarely use"
    techniques = ("T1213", "AML.T0035")

    def __init__(self, peer_share: float = 0.35, settled_s: float = 7 * DAY, wave: int = 2,
                 wave_s: float = 14 * DAY, burst: int = 2, burst_s: float = DAY,
                 history_s: float = 14 * DAY) -> None:
        super().__init__()
        self.peer_share = peer_share
        self.settled_s = settled_s
        self.wave = wave
        self.wave_s = wave_s
        self.burst = burst
        self.burst_s = burst_s
        self.history_s = history_s
        self._first: dict[str, float] = {}
        self._firsts: dict[str, deque[float]] = {}
        self._seen: dict[str, set[str]] = {}
        self._holders: dict[tuple[str, str], dict[str, float]] = {}
        self._members: dict[str, set[str]] = {}
        self._born: dict[str, float] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag when under ``peer_share`` of the peer group ever used a settled artifact."""
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
        holders = self._holders.setdefault((group, art), {})
        peers = max(len(members), ctx.directory.group_size(group)) - 1
        share = len(holders) / peers if peers > 0 else 0.0
        adopting = sum(1 for t in holders.values() if t > ev.time - self.wave_s)
        holders[ev.actor] = ev.time
        since = self._first.setdefault(ev.actor, ev.time)
        firsts = self._firsts.setdefault(ev.actor, deque())
        firsts.append(ev.time)
        while firsts and firsts[0] <= ev.time - self.burst_s:
            firsts.popleft()
        if ev.time - born < self.settled_s or adopting >= self.wave:
            return None
        if peers >= 3 and share < self.peer_share:
            return self._once_a_day(ev, f"{ev.actor} opened {art} for the first time; "
                                    f"{share:.0%} of their peers ({group}) ever did",
                                    peer_share=round(share, 3))
        if len(firsts) >= self.burst and ev.time - since >= self.history_s:
            return self._once_a_day(ev, f"{ev.actor} opened {len(firsts)} artifacts new to them "
                                    f"within {self.burst_s / HOUR:.0f} h", burst=len(firsts))
        return None


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
        self._peers = PeerPool(history_days)
        self._limit: dict[str, tuple[int, float]] = {}

    def _peer_threshold(self, group: str, person: str, day: int) -> float:
        p95 = self._peers.percentile(group, person, 95, day - self.history_days)
        return p95 * self.peer_factor if p95 is not None else float("inf")

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
            if not self._flagged_since(person, cur_day):
                self._peers.add(group, cur_day, person, total)
            total = 0
        total += ev.nbytes
        self._today[person] = (day, total)
        limit = self._limit.get(person)
        if limit is None or limit[0] != day:
            peer = self._peer_threshold(group, person, day)
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


class SustainedVolume(Detector):
    """Bytes released over the last week well above the person's own weekly norm and their peers'.

    Slow exfiltration stays under every daily line; its total over a week does
    not. The rolling ``span_days`` total is compared with ``own_factor`` × the
    person's own average week (from the ``history_days`` before the span, once
    they have ``min_days`` of history) and with ``peer_factor`` × the 95th
    percentile of the other peers' weekly totals; it must exceed both, and so
    must the span without its biggest day (scaled to the span), so that one
    big legitimate job is not "sustained". A total also over twice the own line
    (six average weeks in one) weighs double.
    """

    id = "SR-SUSTAINED"
    title = "weekly volume above own and peer baseline"
    techniques = ("T1029", "T1119", "AML.T0035")

    def __init__(self, own_factor: float = 3.0, peer_factor: float = 1.5, span_days: int = 7,
                 history_days: int = 30, min_days: int = 14) -> None:
        super().__init__()
        self.own_factor = own_factor
        self.peer_factor = peer_factor
        self.span_days = span_days
        self.history_days = history_days
        self.min_days = min_days
        self._first: dict[str, int] = {}
        self._today: dict[str, tuple[int, int]] = {}
        self._days: dict[str, deque[tuple[int, int]]] = {}
        self._peers = PeerPool(history_days)
        self._limit: dict[str, tuple[int, float, float]] = {}

    def _recent(self, person: str, day: int) -> list[int]:
        return [v for d, v in self._days.get(person, ()) if d > day - self.span_days]

    def _threshold(self, person: str, group: str, day: int) -> tuple[float, float]:
        """(own line, peer line) for ``person`` on ``day``."""
        cached = self._limit.get(person)
        if cached is None or cached[0] != day:
            own = 0.0
            if day - self._first.get(person, day) >= self.min_days:
                lo, hi = day - self.span_days - self.history_days, day - self.span_days
                past = sum(v for d, v in self._days.get(person, ()) if lo < d <= hi)
                seen = min(self.history_days, hi - self._first[person] + 1)
                own = past / max(1, seen) * self.span_days * self.own_factor
            p95 = self._peers.percentile(group, person, 95, day - self.history_days)
            cached = (day, own, p95 * self.peer_factor if p95 is not None else float("inf"))
            self._limit[person] = cached
        return cached[1], cached[2]

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag when the rolling week's total passes both baselines."""
        if not _is_release(ev) or not ev.nbytes:
            return None
        day = int(ev.time // DAY)
        person = ev.actor
        group = ctx.directory.person(person).peer_group
        self._first.setdefault(person, day)
        cur, total = self._today.get(person, (day, 0))
        if cur != day:  # close the previous day; its week goes into the peer baseline
            closed = self._days.setdefault(person, deque())
            closed.append((cur, total))
            while closed and closed[0][0] <= cur - self.span_days - self.history_days:
                closed.popleft()
            full = cur - self._first[person] >= self.span_days - 1  # a whole week seen
            if full and not self._flagged_since(person, cur - self.span_days):
                self._peers.add(group, cur, person, sum(self._recent(person, cur)))
            total = 0
        total += ev.nbytes
        self._today[person] = (day, total)
        days = [*self._recent(person, day), total]
        week = sum(days)
        own, peer = self._threshold(person, group, day)
        limit = max(own, peer)
        rest = (week - max(days)) * self.span_days / (self.span_days - 1)
        if week > limit and rest > limit:
            return self._once_a_day(ev, f"{person} has released {week / 2**30:.0f} GiB in "
                                    f"{self.span_days} days, over {limit / 2**30:.0f} GiB "
                                    "(own and peer weekly baselines)", obj=ev.artifact,
                                    weight=2.0 if week > max(2 * own, peer) else 1.0,
                                    total=week)
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
    """Many distinct artifacts asked for, beyond the peer group: discovery.

    Two windows, allowed and refused requests alike: one day (at least
    ``minimum`` and ``peer_factor`` × the peer group's 99th percentile), and
    the last ``span_days`` or the person's whole tenure when shorter (at least
    ``span_minimum`` and ``peer_factor`` × the peers' 99th percentile of the
    same window). Breadth sustained over the longer window weighs double: a
    person settling in reads a handful of models, one probing the store asks
    for dozens.
    """

    id = "SR-BREADTH"
    title = "many distinct artifacts requested (probing)"
    techniques = ("T1083", "AML.T0007")

    def __init__(self, minimum: int = 6, peer_factor: float = 1.5, history_days: int = 30,
                 span_days: int = 14, span_minimum: int = 10) -> None:
        super().__init__()
        self.minimum = minimum
        self.peer_factor = peer_factor
        self.history_days = history_days
        self.span_days = span_days
        self.span_minimum = span_minimum
        self._today: dict[str, tuple[int, set[str]]] = {}
        self._last: dict[str, dict[str, int]] = {}
        self._daily = PeerPool(history_days)
        self._spans = PeerPool(history_days)
        self._cache: dict[str, tuple[int, float, float]] = {}

    def _thresholds(self, group: str, person: str, day: int) -> tuple[float, float]:
        cached = self._cache.get(person)
        if cached is None or cached[0] != day:
            since = day - self.history_days
            daily = self._daily.percentile(group, person, 99, since) or 0.0
            span = self._spans.percentile(group, person, 99, since) or 0.0
            cached = (day, max(float(self.minimum), daily * self.peer_factor),
                      max(float(self.span_minimum), span * self.peer_factor))
            self._cache[person] = cached
        return cached[1], cached[2]

    def _span(self, person: str, day: int) -> int:
        last = self._last.get(person, {})
        stale = [a for a, d in last.items() if d <= day - self.span_days]
        for a in stale:
            del last[a]
        return len(last)

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag when today's or the span's distinct artifacts pass the thresholds."""
        if ev.action != RELEASE:
            return None
        day = int(ev.time // DAY)
        group = ctx.directory.person(ev.actor).peer_group
        cur, arts = self._today.get(ev.actor, (day, set()))
        if cur != day:
            if not self._flagged_since(ev.actor, cur - self.span_days):  # no poisoned baselines
                self._daily.add(group, cur, ev.actor, len(arts))
                self._spans.add(group, cur, ev.actor, self._span(ev.actor, cur))
            arts = set()
        arts.add(ev.artifact)
        self._today[ev.actor] = (day, arts)
        self._last.setdefault(ev.actor, {})[ev.artifact] = day
        daily, spanned = self._thresholds(group, ev.actor, day)
        span = self._span(ev.actor, day)
        if span >= spanned:
            return self._once_a_day(ev, f"{ev.actor} asked for {span} distinct artifacts in "
                                    f"{self.span_days} days, far more than their peers",
                                    weight=2.0, distinct=len(arts), span=span)
        if len(arts) >= daily:
            return self._once_a_day(ev, f"{ev.actor} asked for {len(arts)} distinct artifacts "
                                    "today, far more than their peers", distinct=len(arts))
        return None


class AfterFlag(Detector):
    """Access soon after a vetting flag or a resignation notice; more so when it reaches out.

    Every release within ``within_s`` after the person's latest flag is a
    finding (weight 1). Opening an artifact the person never opened before,
    once they have ``settled_s`` of history, weighs double: people who leave
    with data take what they did not work on, while a benign leaver keeps to
    their own work.
    """

    id = "SR-FLAGGED"
    title = "access soon after a vetting flag or resignation notice"
    techniques = ("T1078", "AML.T0035")

    def __init__(self, within_s: float = 30 * DAY, settled_s: float = 14 * DAY,
                 reach_weight: float = 2.0) -> None:
        super().__init__()
        self.within_s = within_s
        self.settled_s = settled_s
        self.reach_weight = reach_weight
        self._seen: dict[str, set[str]] = {}
        self._first: dict[str, float] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag releases within ``within_s`` after the person's latest flag."""
        if not _is_release(ev):
            return None
        first = self._first.setdefault(ev.actor, ev.time)
        seen = self._seen.setdefault(ev.actor, set())
        new = ev.artifact not in seen
        seen.add(ev.artifact)
        flag = ctx.flag_of(ev.actor, ev.time)
        if flag is None or not 0 <= ev.time - flag[0] <= self.within_s:
            return None
        days = (ev.time - flag[0]) / DAY
        if new and ev.time - first >= self.settled_s:
            return self._once_a_day(ev, f"{ev.actor} opened {ev.artifact}, new to them, "
                                    f"{days:.0f} days after a {flag[1]} flag",
                                    weight=self.reach_weight, flag=flag[1])
        return self._once_a_day(ev, f"{ev.actor} released a key {days:.0f} days after a "
                                f"{flag[1]} flag", flag=flag[1])


class NewHost(Detector):
    """A release from a host new to this person: another person's own host, or one never seen.

    Hosts are learnt from the log: a host's *owner* is the one person behind at
    least ``owner_share`` of its releases once it has ``owner_min`` of them (a
    shared box has no owner). Acting from a host that belongs to someone else is
    strong evidence (weight ``borrowed_weight``), and it counts from a person's
    first day; a host nobody ever used counts once the person has a history of
    ``min_events`` (new laptops are common).
    """

    id = "SR-NEWHOST"
    title = "access from a new host (another person's, or never seen)"
    techniques = ("T1078", "AML.T0012")

    def __init__(self, min_events: int = 10, owner_share: float = 0.8, owner_min: int = 10,
                 borrowed_weight: float = 2.0) -> None:
        super().__init__()
        self.min_events = min_events
        self.owner_share = owner_share
        self.owner_min = owner_min
        self.borrowed_weight = borrowed_weight
        self._hosts: dict[str, set[str]] = {}
        self._count: dict[str, int] = {}
        self._users: dict[str, dict[str, int]] = {}

    def owner(self, host: str) -> str | None:
        """The person who uses ``host`` almost exclusively, if any."""
        users = self._users.get(host)
        if not users:
            return None
        top = max(users, key=users.__getitem__)
        n = users[top]
        return top if n >= self.owner_min and n >= self.owner_share * sum(users.values()) else None

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag another person's host (any history), or an unseen host (after ``min_events``)."""
        host = ev.host
        if ev.action != RELEASE or host is None:
            return None
        mine = self._hosts.setdefault(ev.actor, set())
        users = self._users.setdefault(host, {})
        found = None
        if host not in mine:
            owner = self.owner(host)
            if owner is not None and owner != ev.actor:
                found = self._once_a_day(ev, f"{ev.actor} acted from {host}, which is "
                                         f"{owner}'s host", weight=self.borrowed_weight,
                                         host=host, owner=owner)
            elif not users and self._count.get(ev.actor, 0) >= self.min_events:
                found = self._once_a_day(ev, f"{ev.actor} acted from {host}, a host never "
                                         "seen before", host=host)
        mine.add(host)
        users[ev.actor] = users.get(ev.actor, 0) + 1
        self._count[ev.actor] = self._count.get(ev.actor, 0) + 1
        return found


class UnderCap(Detector):
    """Repeated windows at a large share of the egress cap, each far above the person's norm (T1030).

    A thief who knows the settings sizes each window's take to stay under the
    cap and under its 80 % warning; so a window counts when the person's
    released bytes reach ``near`` × the cap **and** exceed ``own_factor`` × their
    own 90th-percentile window (over ``history`` windows, once there are
    ``min_windows``) and their peer group's 90th percentile over the last
    ``peer_recent`` windows (a group-wide shift, such as a big new model
    everyone adopts, moves both). Refusals at the cap are not counted here: the
    egress meter alerts on each of them (``SR-EGRESS-CAP``). ``windows`` such windows within ``within``
    consecutive ones are an alert on their own: a heavy but steady user is a
    cap sized too close to real use, not a thief, and is not flagged.
    """

    id = "SR-CHUNKED"
    title = "repeated windows near the cap, above the person's own norm"
    techniques = ("T1030", "AML.T0025")
    severity = "high"

    def __init__(self, near: float = 0.45, days: int = 3, within_days: int = 7,
                 own_factor: float = 1.5, min_windows: int = 8, history: int = 30,
                 peer_recent: int = 7) -> None:
        super().__init__()
        self.near = near
        self.peer_recent = peer_recent
        self.days = days
        self.within_days = within_days
        self.own_factor = own_factor
        self.min_windows = min_windows
        self.history = history
        self._today: dict[str, tuple[int, int]] = {}
        self._past: dict[str, deque[int]] = {}
        self._norm: dict[str, tuple[int, float]] = {}
        self._peers = PeerPool(max(history, peer_recent))
        self._near_days: dict[str, deque[int]] = {}

    def _mark(self, person: str, day: int) -> int:
        q = self._near_days.setdefault(person, deque())
        if not q or q[-1] != day:
            q.append(day)
        while q and q[0] <= day - self.within_days:
            q.popleft()
        return len(q)

    def _own_limit(self, person: str, group: str, day: int) -> float:
        cached = self._norm.get(person)
        if cached is None or cached[0] != day:
            past = self._past.get(person, ())
            own = float(np.percentile(list(past), 90)) if len(past) >= self.min_windows else 0.0
            peer = self._peers.percentile(group, person, 90, day - self.peer_recent) or 0.0
            norm = max(own, peer)
            cached = (day, norm * self.own_factor)
            self._norm[person] = cached
        return cached[1]

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag the ``days``-th qualifying window in ``within_days``."""
        if ctx.principal_cap is None or ev.action != RELEASE:
            return None
        cap, window = ctx.principal_cap
        day = int(ev.time // window)
        if ev.decision == "allow" and ev.nbytes:
            group = ctx.directory.person(ev.actor).peer_group
            cur, total = self._today.get(ev.actor, (day, 0))
            if cur != day:
                self._past.setdefault(ev.actor, deque(maxlen=self.history)).append(total)
                if not self._flagged_since(ev.actor, cur - self.within_days):
                    self._peers.add(group, cur, ev.actor, total)
                total = 0
            total += ev.nbytes
            self._today[ev.actor] = (day, total)
            hit = total >= self.near * cap and total > self._own_limit(ev.actor, group, day)
        else:
            return None
        if hit and self._mark(ev.actor, day) >= self.days:
            return self._once_a_day(ev, f"{ev.actor} reached {self.near:.0%} of the egress cap, "
                                    f"beyond their own norm, on {self.days}+ of the last "
                                    f"{self.within_days} windows", cap=cap)
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
        name = base_name(ev.artifact)
        if name not in ctx.canaries():
            return None
        return Finding(self.id, self.severity, ev.actor, ev.time, ev.artifact,
                       f"{ev.actor} touched canary {ev.artifact} ({ev.action} {ev.decision})",
                       self.techniques, {"action": ev.action, "decision": ev.decision})


class BreakGlassUse(Detector):
    """Any break-glass: taken (``access.break-glass``) or used at the gate; critical at once.

    Break-glass is allowed by design for the people a label lists; the control
    is that every use is seen at once and reviewed by a quorum afterwards. A
    break-glass statement written straight into the store, never announced,
    is still caught by the gate's release entry carrying its id.
    """

    id = "SR-BREAKGLASS"
    title = "break-glass access taken or used"
    techniques = ("T1078", "T1548")
    severity = "critical"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag each break-glass once, when taken or at its first release."""
        if ev.decision != "allow":
            return None
        if ev.action == BREAK_GLASS_ACTION:
            bg, how = ev.details.get("break_glass"), "took break-glass access to"
        elif _is_release(ev):
            bg, how = ev.details.get("break_glass"), "released a key under break-glass for"
        else:
            return None
        if not isinstance(bg, str) or not bg or bg in self._seen:
            return None
        self._seen.add(bg)
        reason = ev.details.get("reason_given") or ev.reason
        return Finding(self.id, self.severity, ev.actor, ev.time, ev.artifact,
                       f"{ev.actor} {how} {ev.artifact} (break-glass {bg[:16]}): "
                       f"{str(reason)[:120]}; a quorum review is due",
                       self.techniques, {"break_glass": bg, "action": ev.action}, weight=2.0)


#: Refusals at the server's edge, audited by the API and the console.
EDGE_REFUSALS = frozenset({"api.request", "console.sign-in", "console.csrf"})


class EdgeProbing(Detector):
    """Many refused requests at the API or the console from one client address.

    Forged, replayed or stale signatures, CSRF attempts and failed security-key
    sign-ins are refused before they touch anything, and audited (rate-limited:
    an entry may carry a count of the refusals folded into it). Twenty in ten
    minutes from one address is someone trying credentials or captured
    requests, not a user with a skewed clock. The finding's subject is the
    address (``host:<ip>``), once a day; no baseline is involved.
    """

    id = "SR-PROBE"
    title = "refused API or console requests from one address"
    techniques = ("T1110", "T1550", "T1190")
    severity = "high"
    learns = False

    def __init__(self, threshold: int = 20, window_s: float = 600.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.window_s = window_s
        self._seen: dict[str, deque[tuple[float, int, str]]] = {}
        self._flagged: dict[str, int] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag ``threshold`` edge refusals from one address within ``window_s``."""
        if ev.decision != "deny" or ev.action not in EDGE_REFUSALS:
            return None
        host = ev.host or "unknown"
        folded = ev.details.get("suppressed")
        count = 1 + (folded if isinstance(folded, int) and folded > 0 else 0)
        q = self._seen.setdefault(host, deque())
        q.append((ev.time, count, ev.action))
        while q and q[0][0] <= ev.time - self.window_s:
            q.popleft()
        total = sum(n for _, n, _ in q)
        day = int(ev.time // DAY)
        if total < self.threshold or self._flagged.get(host) == day:
            return None
        self._flagged[host] = day
        kinds = sorted({action for _, _, action in q})
        return Finding(self.id, self.severity, f"host:{host}", ev.time, ev.object,
                       f"{total} requests from {host} were refused at the edge in "
                       f"{self.window_s / 60:.0f} min (latest: {ev.action}, {ev.reason[:100]})",
                       self.techniques, {"host": host, "refusals": total, "kinds": kinds})


def default_detectors() -> list[Detector]:
    """One instance of every rule, with the documented thresholds."""
    return [OffHours(), FirstAccess(), Volume(), SustainedVolume(), Denials(), Breadth(),
            AfterFlag(), NewHost(), UnderCap(), CanaryTouch(), BreakGlassUse(), EdgeProbing()]


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

"""Detector rules that learn what is normal and flag a departure from it.

Each compares a person's release with a baseline learnt online from the events
before it: the person's own hours (:class:`OffHours`), what their peers open
(:class:`FirstAccess`), daily and weekly bytes (:class:`Volume`,
:class:`SustainedVolume`), how many artifacts they touch (:class:`Breadth`),
which hosts are theirs (:class:`NewHost`) and how close they run to the cap
(:class:`UnderCap`). Peer baselines leave out the person and anyone the same
rule flagged (:class:`~strongroom.monitor.peers.PeerPool`). The engine keeps
these rules quiet while it is still learning (``Detector.learns``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from strongroom.monitor.detectors.rule import (
    DAY,
    HOUR,
    RELEASE,
    ActivityEvent,
    Context,
    Detector,
    Finding,
    is_release,
)
from strongroom.monitor.peers import PeerPool


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
        if not is_release(ev):
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
        if not is_release(ev):
            return None
        art = ev.artifact
        born = self._born.setdefault(art, ev.time)
        group = ctx.person(ev.actor).peer_group
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
        if not is_release(ev) or not ev.nbytes:
            return None
        day = int(ev.time // DAY)
        person = ev.actor
        group = ctx.person(person).peer_group
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
        if not is_release(ev) or not ev.nbytes:
            return None
        day = int(ev.time // DAY)
        person = ev.actor
        group = ctx.person(person).peer_group
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
        group = ctx.person(ev.actor).peer_group
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
            group = ctx.person(ev.actor).peer_group
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

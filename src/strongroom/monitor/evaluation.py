"""A synthetic lab, scripted insiders, and the detectors' recall and false-alert rate.

``strongroom monitor eval`` runs :func:`evaluate`::

    report = evaluate(seed=1)                  # 500 people, 60 days, 6 scenarios x 10
    report.summary()                           # {"recall", "false_alerts_per_1000_person_days", "scenarios"}
    sweep(range(10)).summary()                 # min/mean over seeds 0-9 (``--seeds 10``)

:func:`generate_lab` builds people (roles, compartments, offices in three
time zones, each with their own working hours, weekend habit, pace, working
set of artifacts and hosts) and 60 days of ``key.release`` events with the
noise real labs have: evening work and crunch weeks, on-call nights, travel to
another office, new laptops, pairing at a teammate's desk, looks at colleagues'
models outside one's working set, occasional refusals, big legitimate jobs, new
artifacts being adopted, benign resignations and vetting flags, and normal
new hires. :func:`inject` adds the six scripted insider scenarios of the
issue, each with randomised intensity so that not every instance trips every
rule. The events have the audit log's shape (:class:`ActivityEvent`) and go
through the same :class:`RiskEngine` the server runs. ``docs/insider-eval.md``
explains the choices and gives measured figures for several seeds.

An instance counts as detected when an alert names its subject between its
start and three days after its end. Every other alert is false.
Person-days are counted after the 14-day learning period only, since no
low-severity alert can fire before it.

Do not tune detector thresholds against one seed: report several.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from strongroom.artifacts import base_name
from strongroom.errors import InvalidInput
from strongroom.monitor.alerts import Alert
from strongroom.monitor.detectors import ActivityEvent, Directory, Person, RiskEngine

__all__ = ["SCENARIOS", "EvalReport", "Lab", "Scenario", "SeedSweep", "evaluate", "generate_lab",
           "inject", "sweep"]

DAY = 86400
HOUR = 3600
GiB = 2**30
#: 2026-01-05 00:00 UTC, a Monday.
EPOCH = 1767571200.0
CAP = 256 * GiB
LEARN_DAYS = 14
SCENARIOS = (
    "after-hours-bulk-before-leaving",
    "slow-exfiltration-under-cap",
    "colleague-host",
    "stolen-credentials-odd-hours",
    "canary-touch",
    "new-hire-probing",
)
_OFFICES = (("sf", -8, 0.6), ("london", 0, 0.25), ("zurich", 1, 0.15))
_COMPARTMENTS = ("frontier", "multimodal", "code", "safety", "infra", "evals", "applied", "data")
# role: (share, sessions per workday, share of a model's shards loaded, weekend habit)
_ROLES: dict[str, tuple[float, float, float, float]] = {
    "researcher": (0.40, 1.8, 0.30, 0.10),
    "research-engineer": (0.25, 2.2, 0.40, 0.06),
    "infra": (0.10, 2.5, 0.50, 0.05),
    "eval": (0.10, 2.5, 0.35, 0.04),
    "applied": (0.10, 1.3, 0.40, 0.02),
    "security": (0.05, 0.4, 0.20, 0.02),
}


@dataclass
class Artifact:
    """A model in the synthetic lab: ``name@1`` in a compartment, split into shards."""

    ref: str
    compartment: str
    shards: int
    shard_bytes: int
    born_day: int = 0

    @property
    def size(self) -> int:
        """Total bytes."""
        return self.shards * self.shard_bytes


@dataclass
class Member:
    """A person in the synthetic lab and their habits."""

    person: Person
    office_tz: int
    start_hour: float
    day_hours: float
    pace: float
    partial: float
    weekend: float
    working_set: list[str]
    hosts: list[str]
    joined: int = 0
    left: int = 10**6
    access: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Scenario:
    """One injected insider instance: who, which script, when."""

    name: str
    subject: str
    start: float
    end: float


@dataclass
class Lab:
    """People, artifacts, canaries, events and the scripted instances."""

    seed: int
    days: int
    members: dict[str, Member]
    artifacts: dict[str, Artifact]
    canaries: frozenset[str]
    events: list[ActivityEvent]
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def directory(self) -> Directory:
        """The people as the detectors see them."""
        return Directory(m.person for m in self.members.values())

    def person_days(self, from_day: int) -> int:
        """Days each person was in the lab from ``from_day`` on, summed."""
        return sum(max(0, min(self.days, m.left) - max(from_day, m.joined))
                   for m in self.members.values())


def _event(t: float, actor: str, art: Artifact, shard: int, host: str, *,
           decision: str = "allow", error: str | None = None) -> ActivityEvent:
    details: dict[str, Any] = {"host": host, "purpose": "load"}
    if error:
        details["error"] = error
    return ActivityEvent(t, actor, "key.release", f"{art.ref}/model-{shard:05d}.safetensors",
                         decision, "load", details, f"model-{shard:05d}.safetensors",
                         art.shard_bytes)


class _Gate:
    """The synthetic gate: access by compartment, and the per-principal daily cap."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.used: dict[tuple[str, int], int] = {}

    def load(self, rng: random.Random, m: Member, art: Artifact, t: float, host: str,
             shards: int) -> list[ActivityEvent]:
        actor = m.person.principal
        if art.compartment not in m.access:
            return [_event(t, actor, art, 0, host, decision="deny", error="AccessDenied")]
        out = []
        first = rng.randrange(art.shards)
        for k in range(shards):
            t += rng.uniform(2, 40)
            key = (actor, int(t // DAY))
            used = self.used.get(key, 0)
            if used + art.shard_bytes > CAP:
                out.append(_event(t, actor, art, (first + k) % art.shards, host,
                                  decision="deny", error="BudgetExceeded"))
                break
            self.used[key] = used + art.shard_bytes
            out.append(_event(t, actor, art, (first + k) % art.shards, host))
        return out


def _pick(rng: random.Random, table: dict[str, tuple[float, float, float, float]]) -> str:
    r = rng.random()
    for name, row in table.items():
        r -= row[0]
        if r <= 0:
            return name
    return next(iter(table))


def generate_lab(seed: int = 1, people: int = 500, days: int = 60) -> Lab:
    """People, artifacts and ``days`` of ordinary activity (no insiders yet)."""
    if people < 50 or days < 40:
        raise InvalidInput("the synthetic lab needs at least 50 people and 40 days",
                           obj="monitor eval", remedy="pass --people >= 50 and --days >= 40")
    rng = random.Random(seed)  # noqa: S311 (a reproducible simulation)
    artifacts: dict[str, Artifact] = {}
    for comp in (*_COMPARTMENTS, "shared"):
        for k in range(rng.randint(6, 10) if comp != "shared" else 3):
            size = min(800 * GiB, rng.lognormvariate(math.log(30 * GiB), 0.9))
            shards = max(1, min(160, round(size / (5 * GiB))))
            born = 0 if k < 5 or comp == "shared" else rng.randint(10, days - 10)
            ref = f"{comp}-model-{k}@1"
            artifacts[ref] = Artifact(ref, comp, shards, int(size / shards), born)
    canary_names = frozenset({"helios-405b-instruct-rc2", "scaling-laws-internal-2026q3",
                              "atlas-70b-rm-final"})
    for name in canary_names:
        artifacts[f"{name}@1"] = Artifact(f"{name}@1", "shared", 4, 3 * GiB)
    members: dict[str, Member] = {}
    for i in range(people):
        role = _pick(rng, _ROLES)
        _, pace, partial, weekend = _ROLES[role]
        comp = "infra" if role == "infra" else rng.choice(_COMPARTMENTS)
        office = rng.choices(_OFFICES, weights=[o[2] for o in _OFFICES])[0]
        own = [a for a in artifacts.values() if a.compartment == comp and a.born_day == 0]
        weights = [1 / (r + 1) for r in range(len(own))]
        k = min(len(own), rng.randint(2, 5))
        chosen = {a.ref for a in rng.choices(own, weights=weights, k=k)}
        chosen.add(rng.choice([a.ref for a in artifacts.values()
                               if a.compartment == "shared" and base_name(a.ref)
                               not in canary_names]))
        principal = f"u{i:04d}"
        access = {comp, "shared"} | (set(_COMPARTMENTS) if role in ("infra", "security") else set())
        members[principal] = Member(
            Person(principal, role, comp), office[1],
            start_hour=min(12.0, max(6.5, rng.gauss(9.3, 0.9))),
            day_hours=min(11.0, max(6.0, rng.gauss(8.5, 0.8))),
            pace=pace * rng.lognormvariate(0, 0.35), partial=partial,
            weekend=min(0.5, rng.betavariate(1, 1 / weekend)),
            working_set=sorted(chosen), hosts=[f"ws-{i:04d}", f"lt-{i:04d}"], access=access)
    lab = Lab(seed, days, members, artifacts, canary_names, [])
    pool = [m for m in members.values() if m.person.role != "security"]
    for m in rng.sample(pool, k=people * 4 // 100):  # normal new hires
        m.joined = rng.randint(15, days - 10)
    _simulate(lab, rng)
    return lab


def _simulate(lab: Lab, rng: random.Random) -> None:
    gate = _Gate(lab)
    days = lab.days
    members = list(lab.members.values())
    crunch = {c: rng.randint(LEARN_DAYS, days - 6) for c in _COMPARTMENTS}
    holiday = rng.randint(LEARN_DAYS, days - 5)
    oncall = {m.person.principal: rng.randint(0, days // 7) for m in members
              if m.person.role == "infra"}
    travel = {m.person.principal: (rng.randint(0, days - 6), rng.choice(_OFFICES)[1])
              for m in rng.sample(members, k=len(members) * 3 // 100)}
    laptop = {m.person.principal: rng.randint(LEARN_DAYS, days - 1)
              for m in rng.sample(members, k=len(members) * 2 // 100)}
    # pairing and hot-desking: a working-hours session from a teammate's workstation
    borrow: dict[str, tuple[set[int], str]] = {}
    for m in rng.sample(members, k=len(members) * 4 // 100):
        mates = [x for x in members if x is not m and x.office_tz == m.office_tz
                 and x.person.compartment == m.person.compartment]
        if mates:
            borrow[m.person.principal] = (
                {rng.randint(max(m.joined, 0) + 1, days - 1) for _ in range(rng.randint(1, 3))},
                rng.choice(mates).hosts[0])
    for m in rng.sample(members, k=len(members) * 2 // 100):  # benign resignations
        notice = rng.randint(LEARN_DAYS, days - 5)
        _flag(lab, m, notice, "resignation", rng)
        m.left = notice + 14
    for m in rng.sample(members, k=len(members) // 100):  # benign vetting flags
        _flag(lab, m, rng.randint(LEARN_DAYS, days - 5), "vetting", rng)
    events = lab.events
    for m in members:
        p = m.person.principal
        for day in range(max(0, m.joined), min(days, m.left)):
            weekday = (day % 7) < 5
            if day == holiday or (not weekday and rng.random() > m.weekend):
                continue
            for art in lab.artifacts.values():  # adopting newly published models
                if (art.born_day and art.born_day <= day and art.compartment
                        == m.person.compartment and art.ref not in m.working_set
                        and rng.random() < 0.08):
                    m.working_set.append(art.ref)
            sessions = _poisson(rng, m.pace * (1.0 if weekday else 0.5)
                                * (1.6 if crunch[m.person.compartment] <= day
                                   < crunch[m.person.compartment] + 5 else 1.0))
            tz = m.office_tz
            trip = travel.get(p)
            on_trip = trip is not None and trip[0] <= day < trip[0] + 5
            if on_trip and trip is not None:
                tz = trip[1]
            host = m.hosts[1] if on_trip else m.hosts[0]
            if laptop.get(p, days) <= day:
                host = f"ws-new-{p}"
            late = 3.0 if crunch[m.person.compartment] <= day < crunch[
                m.person.compartment] + 5 else 0.0
            big = rng.random() < 0.01
            for _ in range(sessions):
                local = rng.uniform(m.start_hour, m.start_hour + m.day_hours + late)
                if rng.random() < 0.02:  # the odd evening
                    local = rng.uniform(19, 24)
                t = EPOCH + day * DAY + (local - tz) * HOUR
                here = host if rng.random() > 0.15 else m.hosts[1]
                lent = borrow.get(p)
                if lent is not None and day in lent[0] and rng.random() < 0.5:
                    here = lent[1]
                _session(lab, gate, rng, m, t, here, big)
            if p in oncall and oncall[p] * 7 <= day < oncall[p] * 7 + 7 and rng.random() < 0.5:
                t = EPOCH + day * DAY + (rng.uniform(0, 5) - tz) * HOUR
                _session(lab, gate, rng, m, t, m.hosts[1], False)
    events.sort(key=lambda e: e.time)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _flag(lab: Lab, m: Member, day: int, kind: str, rng: random.Random) -> None:
    t = EPOCH + day * DAY + (rng.uniform(9, 17) - m.office_tz) * HOUR
    lab.events.append(ActivityEvent(t, "hr-system", "person.flag", m.person.principal, "allow",
                                    kind, {"kind": kind}))


def _session(lab: Lab, gate: _Gate, rng: random.Random, m: Member, t: float, host: str,
             big: bool) -> None:
    if rng.random() < 0.03:  # a refusal: wrong compartment, expired evidence
        art = lab.artifacts[rng.choice(m.working_set)]
        lab.events.append(_event(t, m.person.principal, art, 0, host, decision="deny",
                                 error="AccessDenied"))
        return
    today = (t - EPOCH) // DAY
    if rng.random() < 0.01:  # a look at a colleague's model or a baseline, now and then kept
        other = [a for a in lab.artifacts.values() if a.compartment in m.access
                 and a.ref not in m.working_set and a.born_day <= today - 7
                 and base_name(a.ref) not in lab.canaries]
        if other:
            art = rng.choice(other)
            if rng.random() < 0.3:
                m.working_set.append(art.ref)
            shards = max(1, round(art.shards * rng.uniform(0.05, 0.5)))
            lab.events.extend(gate.load(rng, m, art, t, host, shards))
            return
    live = [r for r in m.working_set if lab.artifacts[r].born_day <= today]
    if not live:
        return
    art = lab.artifacts[rng.choice(live)]
    share = min(1.0, m.partial * (3 if big else 1) * rng.uniform(0.3, 1.7))
    shards = max(1, min(art.shards, round(art.shards * share * rng.uniform(0.1, 1.0))))
    lab.events.extend(gate.load(rng, m, art, t, host, shards))


# -- scripted insiders ---------------------------------------------------------------


def _night(rng: random.Random, m: Member, day: int, lo: float, hi: float) -> float:
    return EPOCH + day * DAY + (rng.uniform(lo, hi) - m.office_tz) * HOUR


def _rare_artifacts(lab: Lab, m: Member, n: int, rng: random.Random) -> list[Artifact]:
    mine = [a for a in lab.artifacts.values() if a.compartment in m.access
            and a.ref not in m.working_set and a.born_day == 0
            and base_name(a.ref) not in lab.canaries]
    rng.shuffle(mine)
    return mine[:n]


def inject(lab: Lab, per_scenario: int = 10, seed: int | None = None) -> None:
    """Add ``per_scenario`` instances of each scripted insider to the lab's events."""
    rng = random.Random(lab.seed * 7919 + 17 if seed is None else seed)  # noqa: S311
    gate = _Gate(lab)
    for ev in lab.events:
        if ev.action == "key.release" and ev.decision == "allow" and ev.nbytes:
            key = (ev.actor, int(ev.time // DAY))
            gate.used[key] = gate.used.get(key, 0) + ev.nbytes
    veterans = [m for m in lab.members.values() if m.joined == 0 and m.left > lab.days
                and m.person.role != "security"]
    subjects = rng.sample(veterans, k=per_scenario * 5)
    added: list[ActivityEvent] = []
    last = lab.days - 8
    for i in range(per_scenario):
        # 1. after-hours bulk loads in the days after a resignation notice
        m = subjects[i]
        d = rng.randint(LEARN_DAYS + 8, last)
        _flag(lab, m, d, "resignation", rng)
        nights = rng.randint(2, 4)
        for n in range(1, nights + 1):
            usual = lab.artifacts[rng.choice(m.working_set)]
            for art in [*_rare_artifacts(lab, m, rng.randint(1, 3), rng), usual]:
                t = _night(rng, m, d + n, 20.5, 25.5)
                added += gate.load(rng, m, art, t, m.hosts[rng.randrange(2)],
                                   max(1, int(art.shards * rng.uniform(0.5, 1.0))))
        lab.scenarios.append(Scenario(SCENARIOS[0], m.person.principal,
                                      EPOCH + d * DAY, EPOCH + (d + nights + 1) * DAY))
        # 2. slow exfiltration just under the cap, in working hours
        m = subjects[per_scenario + i]
        d = rng.randint(LEARN_DAYS + 8, last - 4)
        target = max((a for a in lab.artifacts.values() if a.compartment in m.access
                      and base_name(a.ref) not in lab.canaries), key=lambda a: a.size)
        frac = rng.uniform(0.5, 0.97)
        span = rng.randint(5, 10)
        for n in range(span):
            day = d + n
            quota = int(CAP * frac) - gate.used.get((m.person.principal, day), 0)
            per_day = max(0, quota // target.shard_bytes)
            t = EPOCH + day * DAY + (m.start_hour + 1 - m.office_tz) * HOUR
            while per_day > 0:
                chunk = min(per_day, rng.randint(2, 6))
                added += gate.load(rng, m, target, t, m.hosts[0], chunk)
                per_day -= chunk
                t += rng.uniform(0.3, 1.0) * HOUR
        lab.scenarios.append(Scenario(SCENARIOS[1], m.person.principal, EPOCH + d * DAY,
                                      EPOCH + (d + span) * DAY))
        # 3. acting from a colleague's workstation in the evening
        m = subjects[2 * per_scenario + i]
        peers = [x for x in lab.members.values() if x is not m and x.joined == 0
                 and x.person.compartment == m.person.compartment]
        colleague = rng.choice(peers) if peers else rng.choice(veterans)
        d = rng.randint(LEARN_DAYS + 8, last)
        evenings = rng.randint(1, 3)
        for n in range(evenings):
            for art in _rare_artifacts(lab, m, rng.randint(1, 3), rng):
                t = _night(rng, colleague, d + n, 18.5, 22.5)
                added += gate.load(rng, m, art, t, colleague.hosts[0],
                                   max(1, int(art.shards * rng.uniform(0.4, 1.0))))
        lab.scenarios.append(Scenario(SCENARIOS[2], m.person.principal, EPOCH + d * DAY,
                                      EPOCH + (d + evenings) * DAY))
        # 4. stolen credentials used at odd hours from an unknown host
        m = subjects[3 * per_scenario + i]
        d = rng.randint(LEARN_DAYS + 8, last)
        host = f"ext-{rng.getrandbits(32):08x}"
        nights = rng.randint(1, 2)
        for n in range(nights):
            probes = rng.sample(list(lab.artifacts.values()), k=rng.randint(6, 14))
            for art in probes:
                if base_name(art.ref) in lab.canaries:
                    continue
                t = _night(rng, m, d + n, 1.0, 5.0)
                added += gate.load(rng, m, art, t, host,
                                   max(1, int(art.shards * rng.uniform(0.2, 0.8))))
        lab.scenarios.append(Scenario(SCENARIOS[3], m.person.principal, EPOCH + d * DAY,
                                      EPOCH + (d + nights) * DAY))
        # 5. a canary touch during the working day
        m = subjects[4 * per_scenario + i]
        d = rng.randint(LEARN_DAYS + 1, last)
        canary = lab.artifacts[f"{sorted(lab.canaries)[i % len(lab.canaries)]}@1"]
        t = _night(rng, m, d, m.start_hour, m.start_hour + m.day_hours)
        added += gate.load(rng, m, canary, t, m.hosts[0], 1)
        lab.scenarios.append(Scenario(SCENARIOS[4], m.person.principal, t, t))
    _inject_new_hires(lab, gate, rng, per_scenario, added)
    lab.events.extend(added)
    lab.events.sort(key=lambda e: e.time)


def _inject_new_hires(lab: Lab, gate: _Gate, rng: random.Random, count: int,
                      added: list[ActivityEvent]) -> None:
    """6. a newly hired person who probes many artifacts in their first weeks."""
    base = len(lab.members)
    for i in range(count):
        role = rng.choice(["researcher", "research-engineer", "eval"])
        comp = rng.choice(_COMPARTMENTS)
        principal = f"u{base + i:04d}"
        d = rng.randint(LEARN_DAYS + 8, lab.days - 12)
        own = sorted(a.ref for a in lab.artifacts.values() if a.compartment == comp
                     and a.born_day == 0)
        m = Member(Person(principal, role, comp), 0, 9.0, 8.5, 2.0, 0.4, 0.05,
                   own[:2], [f"ws-{base + i:04d}", f"lt-{base + i:04d}"], joined=d,
                   access={comp, "shared"})
        lab.members[principal] = m
        span = rng.randint(5, 10)
        for n in range(span):
            day = d + n
            if day % 7 >= 5:
                continue
            for _ in range(rng.randint(1, 3)):  # ordinary work
                t = _night(rng, m, day, 9, 18)
                art = lab.artifacts[rng.choice(m.working_set)]
                added += gate.load(rng, m, art, t, m.hosts[0], rng.randint(1, 4))
            probes = rng.sample(list(lab.artifacts.values()), k=rng.randint(3, 9))
            for art in probes:
                if base_name(art.ref) in lab.canaries:
                    continue
                t = _night(rng, m, day, 9, 19)
                added += gate.load(rng, m, art, t, m.hosts[0],
                                   max(1, int(art.shards * rng.uniform(0.3, 1.0))))
        lab.scenarios.append(Scenario(SCENARIOS[5], principal, EPOCH + d * DAY,
                                      EPOCH + (d + span) * DAY))


# -- scoring -------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Per-scenario and overall recall, and false alerts per 1,000 person-days."""

    seed: int
    people: int
    days: int
    events: int
    person_days: int
    alerts: int
    false_alerts: int
    scenarios: dict[str, dict[str, Any]]
    seconds: float
    false_by_rule: dict[str, int]

    @property
    def recall(self) -> float:
        """Detected instances ÷ injected instances, all scenarios."""
        total = sum(s["instances"] for s in self.scenarios.values())
        return sum(s["detected"] for s in self.scenarios.values()) / total if total else 0.0

    @property
    def false_alert_rate(self) -> float:
        """False alerts per 1,000 person-days."""
        return 1000 * self.false_alerts / self.person_days if self.person_days else 0.0

    def summary(self) -> dict[str, Any]:
        """``{"recall", "false_alerts_per_1000_person_days", "scenarios"}``."""
        return {"recall": round(self.recall, 4),
                "false_alerts_per_1000_person_days": round(self.false_alert_rate, 4),
                "scenarios": self.scenarios}


def _alert_time(a: Alert) -> float:
    return float(a.details.get("time", 0))


def score(lab: Lab, alerts: list[Alert], seconds: float = 0.0) -> EvalReport:
    """Match alerts to the injected instances."""
    unique = {a.dedup_key: a for a in alerts}
    grace = 3 * DAY
    per: dict[str, dict[str, Any]] = {n: {"instances": 0, "detected": 0, "rules": {}}
                                      for n in SCENARIOS}
    explained: set[str] = set()
    for sc in lab.scenarios:
        row = per[sc.name]
        row["instances"] += 1
        hits = [a for a in unique.values() if a.subject == sc.subject
                and sc.start - HOUR <= _alert_time(a) <= sc.end + grace]
        if hits:
            row["detected"] += 1
            for a in hits:
                explained.add(a.dedup_key)
                row["rules"][a.rule] = row["rules"].get(a.rule, 0) + 1
    for row in per.values():
        row["recall"] = round(row["detected"] / row["instances"], 4) if row["instances"] else 0.0
    false = [a for k, a in unique.items() if k not in explained]
    by_rule: dict[str, int] = {}
    for a in false:
        by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
    people = len(lab.members)
    return EvalReport(lab.seed, people, lab.days, len(lab.events), lab.person_days(LEARN_DAYS),
                      len(unique), len(false), per, seconds, by_rule)


def evaluate(seed: int = 1, people: int = 500, days: int = 60,
             per_scenario: int = 10) -> EvalReport:
    """Generate the lab, inject the insiders, run the detectors, score them."""
    t0 = time.perf_counter()
    lab = generate_lab(seed, people, days)
    inject(lab, per_scenario)
    engine = RiskEngine(directory=lab.directory, canaries=lab.canaries,
                        principal_cap=(CAP, DAY), learn_s=LEARN_DAYS * DAY)
    alerts = engine.run(lab.events)
    return score(lab, alerts, time.perf_counter() - t0)


#: The issue's target: recall at least this ...
TARGET_RECALL = 0.9
#: ... at no more than this many false alerts per 1,000 person-days.
TARGET_FALSE_RATE = 1.0


@dataclass
class SeedSweep:
    """The evaluation over several seeds: the spread that one seed hides."""

    reports: list[EvalReport]

    def summary(self) -> dict[str, Any]:
        """Min/mean recall, max/mean false-alert rate, per-scenario min/mean, seeds on target."""
        recalls = [r.recall for r in self.reports]
        rates = [r.false_alert_rate for r in self.reports]
        n = len(self.reports)
        scenarios = {name: {"min": round(min(r.scenarios[name]["recall"] for r in self.reports), 4),
                            "mean": round(sum(r.scenarios[name]["recall"]
                                              for r in self.reports) / n, 4)}
                     for name in SCENARIOS}
        return {"seeds": [r.seed for r in self.reports],
                "recall": {"min": round(min(recalls), 4), "mean": round(sum(recalls) / n, 4)},
                "false_alerts_per_1000_person_days": {"max": round(max(rates), 4),
                                                      "mean": round(sum(rates) / n, 4)},
                "scenarios": scenarios,
                "on_target": [r.seed for r in self.reports if r.recall >= TARGET_RECALL
                              and r.false_alert_rate <= TARGET_FALSE_RATE]}


def sweep(seeds: Iterable[int], people: int = 500, days: int = 60,
          per_scenario: int = 10) -> SeedSweep:
    """:func:`evaluate` for each seed."""
    reports = [evaluate(seed, people, days, per_scenario) for seed in seeds]
    if not reports:
        raise InvalidInput("no seeds to evaluate", obj="monitor eval", remedy="pass --seeds >= 1")
    return SeedSweep(reports)

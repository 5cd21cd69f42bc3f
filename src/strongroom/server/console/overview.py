"""The console's overview: the deployment at a glance, for security officers and auditors.

``GET /console/overview?span=24h|7d`` shows, each as a server-drawn chart
(:mod:`.charts`) with its numbers in a table:

* **releases and denials over time** (``key.release`` entries of the audit log,
  per hour or per 6 hours), with the bytes released;
* **top principals by egress** against their per-principal budgets
  (:meth:`~strongroom.monitor.egress.EgressMeter.top_principals`, ``usage``);
* **pending requests**, **open alerts by severity**, break-glass awaiting review;
* **checkpoint age and witness cosignature lag** (:func:`strongroom.runtime.metrics.read_vitals`,
  the figures ``/metrics`` exports);
* **seal state of each host**: live for this host; for the others only what the
  deployment recorded — their ``keys.unseal``/``keys.seal`` entries (``server``),
  seal requests and ``keys.seal-all`` orders, their last key release (``server``
  in the entry), and the monitor lease they hold — each with its time and entry.

The log has no columns to index but the entry index, so the release counts are
a running tally per console process (:class:`ReleaseTally`): the first view
reads the window's entries (at most :data:`SCAN_LIMIT`, and says so when the
window held more), later views read only the entries appended since.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from strongroom.server.console import charts
from strongroom.server.console.core import AUDITORS, Console, ConsoleError
from strongroom.units import duration, human_bytes

if TYPE_CHECKING:
    from strongroom.audit.entry import AuditEvent
    from strongroom.audit.log import AuditLog

__all__ = ["SPANS", "HostState", "ReleaseTally", "add_routes"]

#: The spans the overview offers: name -> (seconds, bucket seconds).
SPANS = {"24h": (24 * 3600, 3600), "7d": (7 * 86400, 6 * 3600)}
#: How a span reads in a sentence.
SPAN_WORDS = {"24h": "24 hours", "7d": "7 days"}
#: Entries the tally reads at most in one view (the first view of a busy log stops here).
SCAN_LIMIT = 50_000
#: Entries read per query.
BATCH = 2000
#: Principals shown in the egress chart.
TOP_PRINCIPALS = 8
#: Requests listed on the overview (all are counted).
LISTED_REQUESTS = 5
_HOUR = 3600
_KEEP_S = SPANS["7d"][0]
_RELEASE = b'"action":"key.release"'
_KEYS = b'"action":"keys.'
#: Seal-state facts by audit action: what the entry says about its host.
_SEAL_FACTS = {"keys.unseal": ("unsealed", "unsealed"), "keys.seal": ("sealed", "sealed"),
               "keys.seal-request": ("sealed", "an officer sealed it")}
_SEAL_ALL = "keys.seal-all"


@dataclass
class HostState:
    """What the audit log records about one host's seal state (the latest fact wins)."""

    host: str
    state: str = "unknown"
    how: str = ""
    at: float = 0.0
    index: int = -1
    last_release_at: float = 0.0
    last_release_index: int = -1


@dataclass
class ReleaseTally:
    """Release and denial counts per hour and hosts' seal facts, kept up to date incrementally."""

    #: hour (epoch seconds // 3600) -> [allowed, denied, bytes released]
    hours: dict[int, list[int]] = field(default_factory=dict)
    hosts: dict[str, HostState] = field(default_factory=dict)
    #: the newest ``keys.seal-all`` order: (time, entry index)
    seal_all: tuple[float, int] | None = None
    #: entries below this index have been read
    upto: int = 0
    #: the earliest time the counts cover (after a first view that hit the scan limit)
    covers_from: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, log: AuditLog, now: float) -> None:
        """Read the entries appended since the last view (at most :data:`SCAN_LIMIT`)."""
        from strongroom.runtime.monitor_loop import first_index_since
        from strongroom.server.console.audit_explorer import LogReader

        reader = LogReader(log)
        size = reader.size()
        with self.lock:
            start = self.upto
            if start == 0 or size - start > SCAN_LIMIT:  # first view, or a gap too big to read
                start = max(first_index_since(log, now - _KEEP_S, size), size - SCAN_LIMIT, 0)
                self.hours.clear()
                self.covers_from = now - _KEEP_S
                if start > 0 and start == size - SCAN_LIMIT:
                    self.covers_from = reader.at(start)
            for lo in range(start, size, BATCH):
                for _, body in reader.bodies(lo, min(size, lo + BATCH)):
                    if _RELEASE in body or _KEYS in body:
                        self._count(_parse(body))
            self.upto = size
            floor = int((now - _KEEP_S) // _HOUR)
            for hour in [h for h in self.hours if h < floor]:
                del self.hours[hour]

    def _count(self, ev: AuditEvent | None) -> None:
        if ev is None:
            return
        server = ev.details.get("server")
        host = self.hosts.setdefault(server, HostState(server)) \
            if isinstance(server, str) and server else None
        if ev.action == "key.release":
            slot = self.hours.setdefault(int(ev.at // _HOUR), [0, 0, 0])
            if ev.decision == "allow":
                slot[0] += 1
                slot[2] += int(ev.nbytes or 0)
            elif ev.decision == "deny":
                slot[1] += 1
            if host is not None:  # a gate that decided was unsealed then
                host.last_release_at, host.last_release_index = ev.at, ev.index
                if ev.index > host.index:
                    host.state, host.how, host.at, host.index = \
                        "unsealed", "released a key", ev.at, ev.index
        elif ev.action == _SEAL_ALL:
            self.seal_all = (ev.at, ev.index)
        elif ev.action in _SEAL_FACTS and host is not None and ev.index > host.index:
            host.state, host.how = _SEAL_FACTS[ev.action]
            host.at, host.index = ev.at, ev.index

    def buckets(self, span: str, now: float) -> list[tuple[float, list[int]]]:
        """``(bucket start, [allowed, denied, bytes])`` over ``span``, oldest first."""
        length, step = SPANS[span]
        first = (int(now - length) // step + 1) * step
        out = []
        with self.lock:
            for start in range(first, int(now) + 1, step):
                total = [0, 0, 0]
                for hour in range(start // _HOUR, (start + step) // _HOUR):
                    for i, v in enumerate(self.hours.get(hour, ())):
                        total[i] += v
                out.append((float(start), total))
        return out


def _parse(body: bytes) -> AuditEvent | None:
    from strongroom.audit.entry import AuditEvent
    from strongroom.errors import IntegrityError

    try:
        return AuditEvent.from_body(body)
    except IntegrityError:
        return None


def _clock(t: float, span: str) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%H:%M") if span == "24h" else d.strftime("%a %H:%M")


def release_chart(tally: ReleaseTally, span: str, now: float) -> dict[str, Any]:
    """The releases-and-denials chart and its table rows."""
    rows = tally.buckets(span, now)
    step = SPANS[span][1]
    allowed = sum(r[1][0] for r in rows)
    denied = sum(r[1][1] for r in rows)
    released = sum(r[1][2] for r in rows)
    busiest = max(rows, key=lambda r: r[1][0] + r[1][1], default=None)
    desc = (f"{allowed:,} key releases allowed ({human_bytes(released)}) and {denied:,} denied "
            f"in the last {SPAN_WORDS[span]}")
    if busiest is not None and busiest[1][0] + busiest[1][1]:
        desc += f"; busiest from {_clock(busiest[0], span)} UTC"
    buckets = [charts.Bucket(_clock(t, span), {"allow": v[0], "deny": v[1]},
                             f"{_clock(t, span)}-{_clock(t + step, span)} UTC: {v[0]:,} "
                             f"allowed ({human_bytes(v[2])}), {v[1]:,} denied")
               for t, v in rows]
    svg = charts.columns("releases-chart", "Key releases and denials over time", desc, buckets,
                         [charts.Series("allow", "allowed", "s-allow"),
                          charts.Series("deny", "denied", "s-deny")])
    table = [{"from": _clock(t, span), "allowed": v[0], "denied": v[1], "bytes": v[2]}
             for t, v in rows if v[0] or v[1]]
    return {"svg": svg, "desc": desc, "rows": table, "allowed": allowed, "denied": denied,
            "bytes": released}


def egress_chart(console: Console, now: float) -> dict[str, Any]:
    """The principals charged most in the last day against their tightest principal budget."""
    from strongroom.monitor.egress import EgressMeter

    meter = EgressMeter(console.ctx.store)
    rows: list[dict[str, Any]] = []
    for principal, _ in meter.top_principals(now - 86400, TOP_PRINCIPALS):
        usage = [u for u in meter.usage(principal, None, now) if u.budget.scope == "principal"]
        if not usage:
            continue
        u = max(usage, key=lambda x: x.fraction)
        rows.append({"principal": principal, "used": u.used, "cap": u.budget.cap_bytes,
                     "window": duration(u.budget.window_s), "fraction": u.fraction})
    bars = [charts.Bar(r["principal"], r["used"], r["cap"],
                       f"{human_bytes(r['used'])} of {human_bytes(r['cap'])} in "
                       f"{r['window']} ({_percent(r['fraction'])})",
                       "b-bad" if r["fraction"] >= 0.8 else "b-ok") for r in rows]
    desc = (f"{len(rows)} principals were charged in the last day; the highest is "
            f"{rows[0]['principal']} at {_percent(rows[0]['fraction'])} of their budget"
            if rows else "no principal was charged in the last day")
    svg = charts.bars("egress-chart", "Top principals by egress against their budgets", desc,
                      bars) if rows else None
    return {"svg": svg, "desc": desc, "rows": rows}


def _percent(fraction: float) -> str:
    from strongroom.server.console.pages import percent

    return percent(fraction).removesuffix(" used")


def alert_chart(open_by_severity: dict[str, int]) -> dict[str, Any]:
    """Open alerts by severity, most severe first."""
    from strongroom.monitor.alerts import SEVERITIES

    order = list(reversed(SEVERITIES))
    top = charts.nice_ceiling(max(open_by_severity.values(), default=0))
    total = sum(open_by_severity.values())
    desc = (", ".join(f"{open_by_severity.get(s, 0)} {s}" for s in order) + " alerts open"
            if total else "no alert is open")
    bars = [charts.Bar(s, open_by_severity.get(s, 0), top,
                       f"{open_by_severity.get(s, 0):,} open", f"b-{s}") for s in order]
    return {"svg": charts.bars("alerts-chart", "Open alerts by severity", desc, bars,
                               label_width=80, text_width=80, width=340),
            "desc": desc, "total": total,
            "rows": [{"severity": s, "open": open_by_severity.get(s, 0)} for s in order]}


def log_health(vitals: Any) -> dict[str, Any]:
    """Checkpoint age, entries not yet covered, and each witness's cosignature lag."""
    age = None if vitals.checkpoint_at is None else max(0.0, vitals.now - vitals.checkpoint_at)
    uncovered = max(0, vitals.audit_size - vitals.checkpoint_size)
    lag = sorted(vitals.witness_lag_s.items())
    top = charts.nice_ceiling(max([v for _, v in lag] + [60.0]))
    bars = [charts.Bar(name, v, top, "up to date" if v <= 0 else f"{duration(v)} behind",
                       "b-bad" if v > 300 else "b-ok") for name, v in lag]
    desc = ("; ".join(f"{name}: {'up to date' if v <= 0 else duration(v) + ' behind'}"
                      for name, v in lag) if lag else "")
    return {"age": age, "checkpoint_at": vitals.checkpoint_at, "size": vitals.audit_size,
            "checkpoint_size": vitals.checkpoint_size, "uncovered": uncovered,
            "stale": uncovered > 0 and (age is None or age > 60),
            "lag": lag, "svg": charts.bars("witness-chart", "Witness cosignature lag", desc,
                                           bars, label_width=110, text_width=110, width=380)
            if lag else None,
            "lag_desc": desc}


def host_rows(console: Console, tally: ReleaseTally, vitals: Any) -> list[dict[str, Any]]:
    """Each host the deployment knows of: this one live, the others as last recorded."""
    here = console.ctx.settings.host_id
    lease = vitals.monitor
    names = set(tally.hosts) | {here} | ({lease.owner} if lease is not None else set())
    rows = []
    for name in sorted(names):
        h = tally.hosts.get(name, HostState(name))
        state, how, at, index = h.state, h.how, h.at, h.index
        if tally.seal_all is not None and tally.seal_all[1] > index:
            state, how, (at, index) = "sealed", "a seal-all order", tally.seal_all
        row = {"host": name, "here": name == here, "state": state, "how": how,
               "at": at or None, "index": index if index >= 0 else None,
               "live": False, "release_at": h.last_release_at or None,
               "release_index": h.last_release_index if h.last_release_index >= 0 else None,
               "lease": None}
        if name == here:
            row.update(live=True, state="sealed" if vitals.sealed else "unsealed")
        if lease is not None and lease.owner == name:
            row["lease"] = {"heartbeat": lease.heartbeat_at,
                            "held": lease.expires_at > vitals.now}
        rows.append(row)
    rows.sort(key=lambda r: (not r["here"], r["host"]))
    return rows


def add_routes(router: APIRouter, console: Console) -> None:
    """Add ``/console/overview``."""
    from strongroom.server.console import break_glass, data

    ctx = console.ctx
    tally = ReleaseTally()

    @router.get("/console/overview", include_in_schema=False)
    def overview(request: Request, span: str = "24h") -> HTMLResponse:
        # a plain def: FastAPI runs it in its thread pool, so a first (long) read of the
        # log does not stall the event loop
        sess = console.session(request)
        me = console.person(sess)
        console.require_role(me, *AUDITORS)
        if span not in SPANS:
            raise ConsoleError(400, f"unknown span {span[:20]!r}: use one of "
                               f"{', '.join(SPANS)}")
        from strongroom.runtime.metrics import read_vitals

        now = time.time()
        vitals = read_vitals(ctx.store, ctx.keys, ctx.settings.host_id)
        tally.update(ctx.audit(), now)
        pending = [i for i in data.inbox(console, me, limit=50) if not i.granted and not i.denied]
        open_alerts = {sev: n for (sev, unacked), n in vitals.alerts.items() if unacked}
        glass = break_glass.uses(console, now)
        return console.page(
            request, "overview.html", sess, span=span, spans=list(SPANS), now=now,
            releases=release_chart(tally, span, now), egress=egress_chart(console, now),
            alerts=alert_chart(open_alerts), pending=pending[:LISTED_REQUESTS],
            pending_count=len(pending), log=log_health(vitals),
            hosts=host_rows(console, tally, vitals), covers_from=tally.covers_from,
            glass_pending=[g for g in glass if not g["reviewed"]],
            glass_overdue=[g for g in glass if g["overdue"]])

"""The console's audit explorer: filtered pages of the log, one entry's evidence, exports.

Filters live in the query string (``/console/audit?actor=bob&decision=deny``),
so a link names a search exactly and can go into a ticket. Pages are newest
first and paged with a cursor on the entry index (``before=N``: entries below
N), never an offset, so a page is stable while the log grows::

    f = AuditFilter.from_query(request.query_params)
    page = scan(log, f, before=None)       # up to PAGE entries, newest first
    page.older                              # the next page's cursor, or None

The stored log has no columns to index besides the entry index (entries are
canonical JSON, hashed as stored), so a filter is applied to entries read
in batches backwards from the cursor. A page stops after :data:`SCAN_LIMIT`
entries read even when it found fewer than a page of matches, and says how
far back it searched: a rare filter on a huge log costs bounded time per page.
A time range is first narrowed to an index range by bisection on entry times
(entries are numbered in commit order; their times are taken shortly before
the commit, so the bisection widens its bound by :data:`TIME_SLACK_S`).

Exports (CSV or a JSON array of the entries' exact bytes) stream the filter's
matches oldest first, one batch in memory at a time, up to the log's size
when the export started; each export is itself audited (``audit.export``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from strongroom.errors import InvalidInput
from strongroom.timefmt import parse_utc, utc_stamp

if TYPE_CHECKING:
    from strongroom.audit.entry import AuditEvent
    from strongroom.audit.log import AuditLog

__all__ = ["ALERT_ACTIONS", "PAGE", "SCAN_LIMIT", "AuditFilter", "AuditPage", "LogReader",
           "export_csv", "export_json", "scan"]

#: Entries shown on one page.
PAGE = 50
#: Entries read for one page at most (a rare filter pages through the log in steps this big).
SCAN_LIMIT = 10_000
#: Entries read per database query.
BATCH = 1000
#: How far an entry's time may run ahead of a later entry's (encode to commit, at most the
#: append timeout): time bounds found by bisection are widened by this much.
TIME_SLACK_S = 60.0
#: Audit actions of alerts themselves (raised, acknowledged, assigned).
ALERT_ACTIONS = ("alert.raise", "alert.ack", "alert.assign")
#: Decisions offered in the filter (entries of alerts record a severity instead).
DECISIONS = ("allow", "deny")
#: Columns of the CSV export (``details`` as canonical JSON).
CSV_COLUMNS = ("index", "time", "actor", "action", "object", "decision", "reason",
               "request_id", "host", "bytes", "details")
_MAX_FIELD = 200


@dataclass(frozen=True)
class AuditFilter:
    """What an auditor searches for; every field optional, text matched case-insensitively."""

    since: str = ""
    until: str = ""
    actor: str = ""
    action: str = ""
    object: str = ""
    decision: str = ""
    host: str = ""
    q: str = ""
    alerts: bool = False
    _since_t: float | None = field(default=None, compare=False, repr=False)
    _until_t: float | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> AuditFilter:
        """The filter a query string names (unknown keys ignored; bad times refused)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name.startswith("_") or f.name == "alerts":
                continue
            text = str(params.get(f.name, "")).strip()
            if len(text) > _MAX_FIELD:
                raise InvalidInput(f"the {f.name} filter is longer than {_MAX_FIELD} characters",
                                   obj="audit filter", remedy="shorten it")
            values[f.name] = text
        if values["decision"] and values["decision"] not in DECISIONS:
            raise InvalidInput(f"unknown decision {values['decision']!r}", obj="audit filter",
                               remedy=f"use one of {', '.join(DECISIONS)} (or leave it empty)")
        values["alerts"] = str(params.get("alerts", "")) in ("1", "on", "true")
        since_t = parse_utc(values["since"], obj="since") if values["since"] else None
        until_t = parse_utc(values["until"], obj="until") if values["until"] else None
        if since_t is not None and until_t is not None and since_t > until_t:
            raise InvalidInput("the time range ends before it starts", obj="audit filter",
                               remedy="swap 'from' and 'to'")
        return cls(**values, _since_t=since_t, _until_t=until_t)

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(getattr(self, f.name) for f in fields(self) if not f.name.startswith("_"))

    def query(self, **extra: str | int | None) -> str:
        """The query string naming this filter (plus ``extra``): stable, empty fields left out."""
        items: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("_") or not value:
                continue
            items.append((f.name, "1" if value is True else str(value)))
        items += [(k, str(v)) for k, v in extra.items() if v is not None and v != ""]
        return urlencode(items)

    @functools.cached_property
    def _needles(self) -> list[bytes]:
        """Lower-case byte strings every match must contain (a cheap test before parsing)."""
        raw = [self.actor, self.action, self.object, self.host, self.q]
        # The stored bytes are canonical JSON (UTF-8, escapes only where JSON needs them);
        # bytes.lower() folds ASCII only, so text with other letters is left to matches().
        out = [json.dumps(t.lower())[1:-1].encode() for t in raw if t and t.isascii()]
        if self.decision:  # canonical JSON: exactly this, lower case already
            out.append(b'"decision":' + json.dumps(self.decision).encode())
        if self.alerts:
            out.append(b'"action":"alert.')
        return out

    def may_match(self, body: bytes) -> bool:
        """False when ``body`` cannot match (case-folded substring test on the raw bytes)."""
        needles = self._needles
        if not needles:
            return True
        low = body.lower()
        return all(n in low for n in needles)

    def matches(self, ev: AuditEvent) -> bool:
        """Whether ``ev`` passes every filter that is set."""
        def has(needle: str, text: str) -> bool:
            return not needle or needle.lower() in text.lower()

        if not (has(self.actor, ev.actor) and has(self.action, ev.action)
                and has(self.object, ev.object)):
            return False
        if self.decision and ev.decision != self.decision:
            return False
        if self.alerts and ev.action not in ALERT_ACTIONS:
            return False
        if self.host and not has(self.host, str(ev.details.get("host") or "")):
            return False
        if self.q and self.q.lower() not in ev.body.decode("utf-8", "replace").lower():
            return False
        if self._since_t is not None or self._until_t is not None:
            at = ev.at
            if self._since_t is not None and at < self._since_t:
                return False
            if self._until_t is not None and at > self._until_t:
                return False
        return True

    def with_time(self, since: str | None = None, until: str | None = None) -> AuditFilter:
        """This filter with another time range."""
        s = self.since if since is None else since
        u = self.until if until is None else until
        return replace(self, since=s, until=u,
                       _since_t=parse_utc(s, obj="since") if s else None,
                       _until_t=parse_utc(u, obj="until") if u else None)


@dataclass(frozen=True)
class AuditPage:
    """One page of matches, newest first, and where the next (older) page starts."""

    events: list[AuditEvent]
    size: int
    newest: int
    searched_to: int
    older: int | None

    @property
    def exhausted_scan(self) -> bool:
        """True when the page stopped at :data:`SCAN_LIMIT` rather than on a full page."""
        return self.older is not None and len(self.events) < PAGE

    @property
    def searched(self) -> int:
        """Entries this page read."""
        return self.newest - self.searched_to


class LogReader:
    """What the explorer reads: the log's size, entries, and raw bodies in index ranges.

    Bodies are read without parsing (one read snapshot a batch), so a filter
    tests the bytes first and parses only the entries that may match.
    """

    def __init__(self, log: AuditLog) -> None:
        from strongroom.audit.tree import StoredTree

        self.log = log
        self.tree = StoredTree(log.store)

    def size(self) -> int:
        """Entries committed."""
        return self.log.size()

    def at(self, index: int) -> float:
        """When entry ``index`` was written (epoch seconds)."""
        return self.log.event(index).at

    def bodies(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """``(index, canonical bytes)`` of entries ``start <= index < end``, in order."""
        with self.tree.read("read audit entries") as conn:
            return [(i, body) for i, body, _ in self.tree.rows(conn, start, end)]


def _index_after(reader: LogReader, t: float, size: int) -> int:
    """The smallest index whose entry's time is after ``t`` (bisection; ``size`` if none)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        if reader.at(mid) <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _bounds(reader: LogReader, f: AuditFilter, size: int) -> tuple[int, int]:
    """The index range ``[low, high)`` a filter's time range can match in."""
    high = size
    low = 0
    if f._until_t is not None and size:
        high = min(size, _index_after(reader, f._until_t + TIME_SLACK_S, size))
    if f._since_t is not None and size:
        low = max(0, _index_after(reader, f._since_t - TIME_SLACK_S, size) - 1)
    return low, max(low, high)


def _candidates(f: AuditFilter, rows: list[tuple[int, bytes]]) -> Iterator[AuditEvent]:
    from strongroom.audit.entry import AuditEvent

    for _, body in rows:
        if f.may_match(body):
            ev = AuditEvent.from_body(body)
            if f.matches(ev):
                yield ev


def scan(log: AuditLog, f: AuditFilter, *, before: int | None = None,
         limit: int = PAGE, scan_limit: int = SCAN_LIMIT) -> AuditPage:
    """Up to ``limit`` matches of ``f`` below index ``before`` (default: the newest), newest first."""
    reader = LogReader(log)
    size = reader.size()
    low, high = _bounds(reader, f, size)
    if before is not None:
        if before < 0:
            raise InvalidInput("the page cursor is negative", obj="audit page",
                               remedy="follow the page's Older/Newest links")
        high = min(high, before)
    found: list[AuditEvent] = []
    end = high
    step = 2 * limit  # small first reads: an unfiltered or common filter's page is near the top
    while end > low:
        start = max(low, end - step, high - scan_limit)
        step = min(BATCH, step * 2)
        if start >= end:  # read as much as one page may: say how far it got
            return AuditPage(found, size, high, end, end)
        rows = reader.bodies(start, end)
        rows.reverse()
        for ev in _candidates(f, rows):
            found.append(ev)
            if len(found) >= limit:
                return AuditPage(found, size, high, ev.index,
                                 ev.index if ev.index > low else None)
        end = start
    return AuditPage(found, size, high, low, None)


def _forward(log: AuditLog, f: AuditFilter) -> Iterator[AuditEvent]:
    """Matches of ``f`` oldest first, up to the size when called, one batch in memory."""
    reader = LogReader(log)
    low, high = _bounds(reader, f, reader.size())
    for start in range(low, high, BATCH):
        yield from _candidates(f, reader.bodies(start, min(high, start + BATCH)))


def _csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text (no formula injection: =, +, -, @, tab, CR)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(log: AuditLog, f: AuditFilter) -> Iterator[bytes]:
    """The matches as CSV (:data:`CSV_COLUMNS`), a header row then one row per entry."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for n, ev in enumerate(_forward(log, f)):
        writer.writerow([_csv_cell(v) for v in (
            ev.index, ev.time, ev.actor, ev.action, ev.object, ev.decision, ev.reason,
            ev.request_id, ev.details.get("host"), ev.nbytes,
            json.dumps(ev.details, sort_keys=True, separators=(",", ":")))])
        if n % 200 == 199:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def export_json(log: AuditLog, f: AuditFilter) -> Iterator[bytes]:
    """The matches as a JSON array of the entries' exact canonical bytes (leaf-hashable)."""
    yield b"["
    chunk: list[bytes] = []
    first = True
    for ev in _forward(log, f):
        chunk.append(b"\n" + ev.body if first else b",\n" + ev.body)
        first = False
        if len(chunk) >= 200:
            yield b"".join(chunk)
            chunk = []
    chunk.append(b"\n]\n")
    yield b"".join(chunk)


def describe(f: AuditFilter) -> str:
    """The filter in words, for the audit entry an export writes."""
    parts = [f"{k}={v}" for k, v in (("since", f.since), ("until", f.until), ("actor", f.actor),
                                     ("action", f.action), ("object", f.object),
                                     ("decision", f.decision), ("host", f.host), ("q", f.q))
             if v]
    if f.alerts:
        parts.append("alerts")
    return ", ".join(parts) or "everything"


def stamp_of(ev: AuditEvent) -> str:
    """An entry's time at second precision (UTC)."""
    return utc_stamp(ev.at)

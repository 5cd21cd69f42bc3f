"""Restrictive access statements live in the audit log; their table rows are a checked cache.

Signatures make a statement row's *presence* trustworthy; nothing makes its
*absence* so (DESIGN rule 1). A database administrator who deletes a
revocation, a denial or a Grant revocation would reopen access. So every
statement that restricts access — kinds in :data:`RESTRICTIVE_KINDS` — is
also an entry of the Merkle audit log, carrying its signed envelope and the
lookup keys it was stored under (:func:`journal_details`), and
:class:`RestrictionJournal` keeps the two in agreement:

* it follows the audit log and collects every restrictive envelope recorded
  there (the log's integrity is the audit package's job: signed, witnessed
  checkpoints);
* a restrictive row the log does not hold yet is journaled (appended);
* a journaled statement whose row is missing, or whose row lost signatures or
  moved to another kind, subject or resource, is **tampering**: the row is
  restored from the log (the restriction holds again before the next release
  is decided) and ``on_tamper`` is called (the runtime raises the critical
  alert ``SR-STATE-TAMPER`` naming the row and the log entry).

Use it like this::

    journal = RestrictionJournal(store, audit, on_tamper=alert_officers)
    journal.reconcile()          # at unseal, before the first release; then on an interval
    rule.on_change = journal.changed   # GrantEvidence: before it reads a changed table

:meth:`RestrictionJournal.changed` reconciles when the access statements'
marker changed (any insert or deletion), so a deleted row is restored before
the next decision that could read its absence; the runtime also reconciles
on an interval, which catches edits that leave the marker as it was.

What a run costs is bounded as the table grows. A run that finds the marker
changed (and the first, at unseal) compares every restrictive row with the
journal. One that finds it as the last run left it (the interval's usual
case: no row inserted or deleted since) looks up by digest only the
statements the log recorded since, plus one slice of a sweep over the whole
journal sized by :func:`sweep_size`: an in-place edit that leaves the marker
unchanged is found within ``sweep_max_s`` (60 s) plus one interval, sooner
while the journal is small enough to sweep whole within ``sweep_share`` of a
core, or at once by the next run that sees the marker move.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from strongroom.access import statements
from strongroom.errors import InvalidInput
from strongroom.store.db import Store
from strongroom.store.tables.access import AccessStatement

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent, AuditLog

__all__ = [
    "JOURNAL_ACTION",
    "RESTRICTIVE_KINDS",
    "STATEMENT_DETAIL",
    "RestrictionJournal",
    "Tampered",
    "journal_details",
    "journaled_statement",
    "sweep_size",
]

#: Statement kinds whose absence would reopen access (a code-owner set replaces older ones).
RESTRICTIVE_KINDS = frozenset({"revocation", "denial", "grant-revocation", "review",
                               "codeowners"})
#: The audit action of an entry the journal itself appends for a row not yet in the log.
JOURNAL_ACTION = "access.restriction"
#: The audit detail holding a statement: ``{"kind", "subject", "resource", "envelope"}``.
STATEMENT_DETAIL = "statement"
#: Audit entries read per query while following the log.
_PAGE = 2000
#: Longest time a sweep of the journal takes to compare every statement once.
SWEEP_MAX_S = 60.0
#: Share of one core a sweep may take (from its measured cost per item) to go round faster.
SWEEP_SHARE = 0.025
#: Digests looked up per ``IN (...)`` query.
_CHUNK = 500


def sweep_size(size: int, dt: float, cost: float, max_s: float, share: float) -> int:
    """Items a sweep over ``size`` items takes next, ``dt`` seconds after its last step.

    Enough that a cycle ends within ``max_s`` of the clock, and more while the measured
    ``cost`` per item (seconds; 0 when unknown) fits in ``share`` of a core; at least one.
    """
    n = math.ceil(size * dt / max_s) if max_s > 0 else size
    if cost > 0 and share > 0:
        n = max(n, int(share * dt / cost))
    return max(n, 1)


def journal_details(kind: str, env: str, *, subject: str, resource: str = "") -> dict[str, Any]:
    """Audit details that let the log re-derive a stored statement (splat into ``record``)."""
    return {STATEMENT_DETAIL: {"kind": kind, "subject": subject, "resource": resource,
                               "envelope": env}}


@dataclass(frozen=True)
class Journaled:
    """A restrictive statement as the audit log recorded it."""

    kind: str
    subject: str
    resource: str
    envelope: str
    index: int


def journaled_statement(ev: AuditEvent) -> tuple[str, Journaled] | None:
    """The (digest, statement) a log entry records, if it records a restrictive one."""
    st = ev.details.get(STATEMENT_DETAIL) if isinstance(ev.details, Mapping) else None
    if not isinstance(st, Mapping):
        return None
    kind, env = st.get("kind"), st.get("envelope")
    subject, resource = st.get("subject", ""), st.get("resource", "")
    if (kind not in RESTRICTIVE_KINDS or not isinstance(env, str)
            or not isinstance(subject, str) or not isinstance(resource, str)):
        return None
    try:
        digest = statements.payload_digest(env)  # derived from the envelope, not believed
    except InvalidInput:
        return None
    return digest, Journaled(str(kind), subject, resource, env, ev.index)


@dataclass(frozen=True)
class Tampered:
    """A restrictive row the table lost or altered, and the log entry that proves it."""

    digest: str
    kind: str
    subject: str
    index: int
    what: str  # "missing" or "altered"
    #: The table the row belongs in.
    table: str = "access_statements"

    def describe(self) -> str:
        """One line for an alert or a log."""
        return (f"{self.kind} {self.digest[:16]} (subject {self.subject[:32]}) was {self.what} "
                f"in {self.table}; audit entry #{self.index} holds it")


@dataclass(frozen=True)
class _Row:
    kind: str
    subject: str
    resource: str
    envelope: str


class RestrictionJournal:
    """Keeps restrictive statement rows and their audit-log entries in agreement (thread-safe)."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        on_tamper: Callable[[list[Tampered]], None] = lambda _: None,
        actor: str = "strongroom",
        clock: Callable[[], float] = time.monotonic,
        sweep_max_s: float = SWEEP_MAX_S,
        sweep_share: float = SWEEP_SHARE,
    ) -> None:
        self.store = store
        self.audit = audit
        self.on_tamper = on_tamper
        self.actor = actor
        self.clock = clock
        self.sweep_max_s = sweep_max_s
        self.sweep_share = sweep_share
        #: Statements the last run looked up by digest (0 after a run that read every row).
        self.looked_up = 0
        self._lock = threading.Lock()
        self._cursor = 0
        self._journal: dict[str, Journaled] = {}
        self._order: list[str] = []  # the journal's digests, in the order first journaled
        self._fresh: dict[str, None] = {}  # digests the log recorded since the last run
        self._sweep = 0  # the position in _order the sweep looks up next
        self._last: float | None = None  # the clock at the last run
        self._cost = 0.0  # measured seconds per statement looked up (0: not measured)
        self._marker: tuple[int, int, int] | None = None
        self._failed = False  # the last run raised: the next compares every row

    def changed(self, mark: tuple[int, int, int]) -> bool:
        """The statements' marker reads ``mark``: reconcile unless the last run saw it.

        True when it ran (re-read the marker: restored rows changed it). The
        evidence rule calls it before it reads the table anew.
        """
        if mark == self._marker:
            return False
        self.reconcile()
        return True

    def _take(self, events: list[AuditEvent]) -> None:
        for ev in events:
            found = journaled_statement(ev)
            if found is None:
                continue
            digest, st = found
            known = self._journal.get(digest)
            self._fresh[digest] = None
            if known is None:
                self._order.append(digest)
            else:  # several entries for one statement: keep every signature
                try:
                    st = Journaled(known.kind, known.subject, known.resource,
                                   statements.merge(known.envelope, st.envelope), known.index)
                except InvalidInput:
                    st = known
            self._journal[digest] = st

    def _follow(self) -> None:
        end = self.audit.size()
        while self._cursor < end:
            stop = min(end, self._cursor + _PAGE)
            self._take(self.audit.events(self._cursor, stop))
            self._cursor = stop

    def _rows(self) -> dict[str, _Row]:
        with self.store.session(readonly=True) as s:
            rows = s.execute(select(AccessStatement.digest, AccessStatement.kind,
                                    AccessStatement.subject, AccessStatement.resource,
                                    AccessStatement.envelope)
                             .where(AccessStatement.kind.in_(sorted(RESTRICTIVE_KINDS)))).all()
        return {str(d): _Row(str(k), str(sub), str(res), str(env))
                for d, k, sub, res, env in rows}

    def _rows_of(self, digests: list[str]) -> dict[str, _Row]:
        """The restrictive rows stored under ``digests`` (by the unique digest index)."""
        found: dict[str, _Row] = {}
        with self.store.session(readonly=True) as s:
            for i in range(0, len(digests), _CHUNK):
                rows = s.execute(select(AccessStatement.digest, AccessStatement.kind,
                                        AccessStatement.subject, AccessStatement.resource,
                                        AccessStatement.envelope)
                                 .where(AccessStatement.digest.in_(digests[i:i + _CHUNK])))
                # The kind is filtered here, not in SQL: a planner may then pick the kind index.
                found.update((str(d), _Row(str(k), str(sub), str(res), str(env)))
                             for d, k, sub, res, env in rows if k in RESTRICTIVE_KINDS)
        return found

    def _slice(self, now: float) -> list[str]:
        """The sweep's next digests (under the lock; it wraps round the journal)."""
        order = self._order
        if not order or self._last is None:
            return []
        n = min(len(order), sweep_size(len(order), max(0.0, now - self._last), self._cost,
                                       self.sweep_max_s, self.sweep_share))
        start = self._sweep if self._sweep < len(order) else 0
        taken = order[start:start + n]
        taken += order[:n - len(taken)]  # wrapped round
        self._sweep = (start + n) % len(order) if len(taken) < len(order) else 0
        return taken

    def reconcile(self, *, full: bool = False) -> list[Tampered]:
        """Follow the log, journal new rows, restore lost ones; the tampering found.

        Every restrictive row when ``full``, at the first run, or when the marker moved
        since the last run; else the statements logged since and one sweep slice.
        """
        with self._lock:
            started = time.perf_counter()
            now = self.clock()
            marker = statements.marker(self.store)  # read first: what follows is at least as new
            self._follow()
            full = full or self._last is None or marker != self._marker or self._failed
            sweep = self._sweep
            self._failed = True  # until this run succeeds: a failed one makes the next full
            if full:
                rows = self._rows()
                digests: Iterable[str] = self._journal
                self.looked_up = 0
            else:
                todo = list({**self._fresh, **dict.fromkeys(self._slice(now))})
                try:
                    rows = self._rows_of(todo)
                except BaseException:
                    self._sweep = sweep  # looked up by the next run
                    raise
                digests = todo
                self.looked_up = len(todo)
                if todo:  # the whole run's wall time: conservative on a loaded host
                    self._cost = (time.perf_counter() - started) / len(todo)
            self._fresh.clear()
            self._last = now
            journal = self._journal
            tampered = [t for t in (self._compare(d, journal[d], rows.get(d))
                                    for d in digests) if t is not None]
            for t in tampered:
                j = self._journal[t.digest]
                statements.restore(self.store, j.kind, j.envelope, subject=j.subject,
                                   resource=j.resource)
            if full:  # an unmoved marker: no row was inserted since the last run
                self._journal_new(rows)
            if tampered:
                marker = statements.marker(self.store)
            self._marker, self._failed = marker, False
        if tampered:
            self.on_tamper(tampered)
        return tampered

    @staticmethod
    def _compare(digest: str, j: Journaled, row: _Row | None) -> Tampered | None:
        if row is None:
            return Tampered(digest, j.kind, j.subject, j.index, "missing")
        try:
            kept = (row.envelope == j.envelope
                    or statements.signatures(j.envelope) <= statements.signatures(row.envelope))
        except InvalidInput:
            kept = False
        if (row.kind, row.subject, row.resource) != (j.kind, j.subject, j.resource) or not kept:
            return Tampered(digest, j.kind, j.subject, j.index, "altered")
        return None

    def _journal_new(self, rows: Mapping[str, _Row]) -> None:
        """Append the restrictive rows the log does not hold yet (each once)."""
        new = [(d, r) for d, r in rows.items() if d not in self._journal]
        if not new:
            return
        indexes = self.audit.append_many(
            {"actor": self.actor, "action": JOURNAL_ACTION, "obj": f"{r.kind} {d[:16]}",
             "decision": "allow", "reason": "restrictive statement kept in the log",
             "details": journal_details(r.kind, r.envelope, subject=r.subject,
                                        resource=r.resource)}
            for d, r in new)
        for (d, r), index in zip(new, indexes, strict=True):
            self._journal[d] = Journaled(r.kind, r.subject, r.resource, r.envelope, index)
            self._order.append(d)

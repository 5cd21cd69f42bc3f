"""The gate's guard against deleted rows: restrictive state re-derived from the audit log.

DESIGN rule 1, "absence is evidence": revocations, denials and egress charges
restrict access, and a database administrator can delete rows. The guard
composes the two checks that keep their tables honest against the verified
audit log, and runs them at unseal, before releases when something changed,
and on an interval in a background thread:

* :class:`~strongroom.access.restrictions.RestrictionJournal` — restrictive
  access statements (revocations, denials, Grant revocations, break-glass
  reviews, code owners) journaled in the log and restored when their rows go;
* :class:`EgressLedgerCheck` — every ``key.release`` allow entry within the
  budgets' horizon has its egress ledger row; a lost row is charged again
  (the meter also refuses to count less than it already knew: ``suspect``).

Tampering found raises the critical alert ``SR-STATE-TAMPER`` naming the
row and the audit entry that proves it, and the tables are repaired before
the next release is decided.

The guard also carries out **seal orders**: ``strongroom seal --all`` (a
security officer's signed request to any one server) writes a
``keys.seal-all`` entry to the shared audit log; every host's guard that sees
one written after its own unseal seals that host within one interval. An
order lives in the append-only, witnessed log, so deleting it later reopens
nothing, and a row forged into the database cannot pass for one without
breaking the log's verification.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from strongroom.access.restrictions import RestrictionJournal, Tampered, sweep_size
from strongroom.errors import StrongroomError
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.monitor.egress import ChargeRow, EgressMeter, charge_row

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from strongroom.audit.entry import AuditEvent
    from strongroom.audit.log import AuditLog
    from strongroom.store.db import Store

__all__ = ["SEAL_ORDER_ACTION", "SWEEP_MAX_S", "SWEEP_SHARE", "TAMPER_RULE", "EgressLedgerCheck",
           "SealOrders", "StateGuard"]

TAMPER_RULE = "SR-STATE-TAMPER"
#: The audit action of an order to seal every host sharing the database.
SEAL_ORDER_ACTION = "keys.seal-all"
#: Longest lifetime budget a ledger row can count against (a Grant's longest duration).
_GRANT_HORIZON_S = 7 * 24 * 3600
#: How far a ledger row's stamp may trail its audit entry's time (clock skew between hosts).
_STAMP_MARGIN_S = 3600.0
#: Audit entries read per query while following the log.
_PAGE = 2000
#: Longest time the ledger check's sweep takes to look up every row of the horizon once.
SWEEP_MAX_S = 60.0
#: Share of one core the sweep may take (from its measured cost per id) to go round faster.
SWEEP_SHARE = 0.025
_log = logging.getLogger(__name__)


class EgressLedgerCheck:
    """The egress ledger holds a row for every release the audit log says was allowed.

    It follows the log itself (a cursor of its own), so that :meth:`repair` can
    run inside the meter's ledger transaction without waiting on anything else
    the guard holds. Its cost per call is bounded, not proportional to the
    horizon (a lab releasing 100k shards a day holds ~700k rows in 7 days):

    * **New entries, every call.** The release entries read since the last call
      are looked up by charge id (primary key): work proportional to what is new.
      A deleted *new* row is put back at the next call (the guard's interval).
    * **Full passes** compare every row of the horizon (one read of the ledger's
      ids, a set difference): at the first call (unseal), with ``full=True``
      (the guard passes it when the meter is ``suspect``) and in :meth:`repair`.
    * **A sweep** looks up a slice of the horizon's rows, in log order, on every
      call, sized so a whole cycle takes at most ``sweep_max_s`` (60 s) of the
      clock, and larger when its measured cost per id allows (``sweep_share`` of
      one core, 2.5 %: a small ledger is swept whole on every call). A row deleted
      at any age is therefore put back, and alerted, within ``sweep_max_s`` plus
      one interval of its deletion (62 s with the defaults), whatever the ledger's
      size. At 700k rows that is ~23k ids an interval of 2 s (~2-3 us an id measured
      on SQLite at 200k rows: 2.5-3.5 % of one core; 115-180 ms an interval measured at
      700k on a loaded host), where the check it replaced read every id of the horizon
      every interval (0.35 s at 200k rows, 1.2-2.5 s at 700k on that host).

    Between sweeps a deleted old row is not trusted blindly either: the meter's
    cache of a running host never counts less than it knew (``suspect``), but a
    total the cache loads afresh (after an epoch change, for a principal or a
    Grant it had not loaded, after pruning) reads the table as it is, so a row
    deleted since the last sweep can go uncounted there for up to that bound.

    Rows are kept in log order (entries arrive in index order) and pruned from
    the front as they leave the horizon; calls copy only the slice they check.
    """

    def __init__(self, meter: EgressMeter, audit: AuditLog, *,
                 clock: Callable[[], float] = time.time,
                 sweep_max_s: float = SWEEP_MAX_S, sweep_share: float = SWEEP_SHARE) -> None:
        self.meter = meter
        self.audit = audit
        self.clock = clock
        self.sweep_max_s = sweep_max_s
        self.sweep_share = sweep_share
        #: Where spent release nonces read from the log go (the evidence rule's ``remember``).
        self.remember_nonce: Callable[[str, float], None] | None = None
        #: Charge ids looked up by the last call (its new entries and its sweep slice).
        self.looked_up = 0
        self._lock = threading.Lock()
        self._cursor = 0  # the next audit index to read
        # The release rows read from the log, in log order; positions count from the first
        # row ever read, and self._rows[0] is at position self._base.
        self._rows: list[tuple[ChargeRow, int]] = []
        self._base = 0
        self._head = 0  # position of the oldest row still in the horizon
        self._checked = 0  # rows before this position were checked once as new
        self._sweep = 0  # the position the sweep looks up next
        self._cycle = (0, 0)  # the positions the current sweep cycle covers
        self._last: float | None = None  # the clock at the last call
        self._cost = 0.0  # measured seconds of the sweep's lookup per id (0: not measured)
        self._restored: list[Tampered] = []

    def horizon(self) -> float:
        """The oldest charge any budget still counts (window budgets and Grant lifetimes)."""
        longest = max((b.window_s for b in self.meter.budgets()), default=0)
        return self.clock() - max(longest, _GRANT_HORIZON_S)

    def _follow(self, floor: float) -> int:
        """Read the log's new release entries and forget the rows older than ``floor``;
        the end position (under the lock)."""
        end = self.audit.size()
        now = self.clock()
        rows = self._rows
        while self._cursor < end:
            stop = min(end, self._cursor + _PAGE)
            for ev in self.audit.events(self._cursor, stop):
                row = charge_row(ev)
                if row is None:
                    continue
                rows.append((row, ev.index))
                nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
                if (self.remember_nonce is not None and isinstance(nonce, str)
                        and isinstance(expires, int) and expires > now):
                    self.remember_nonce(nonce, float(expires))  # spent at another gate
            self._cursor = stop
        last = self._base + len(rows)
        # Entry times follow the index but for clock skew between hosts: prune the front
        # while it is out of the horizon; a late straggler is skipped by _within.
        head = self._head
        while head < last and rows[head - self._base][0][4] < floor:
            head += 1
        self._head = head
        if head - self._base > max(_PAGE, len(rows) // 2):  # amortised O(1) per row
            del rows[:head - self._base]
            self._base = head
        return last

    def _within(self, start: int, stop: int, floor: float) -> list[tuple[ChargeRow, int]]:
        """The rows at positions [start, stop) still within the horizon (a copy of the slice)."""
        i, j = max(start, self._head) - self._base, stop - self._base
        return [r for r in self._rows[i:j] if r[0][4] >= floor] if i < j else []

    def repair(self, conn: Connection) -> int:
        """Put back, in the meter's transaction ``conn``, the logged charges the ledger lost.

        A full pass (the meter calls it when a total fell: which row went is unknown).
        """
        floor = self.horizon()
        with self._lock:
            end = self._follow(floor)
            rows = self._within(self._head, end, floor)
        held = self.meter.ids_since(floor - _STAMP_MARGIN_S, conn)
        lost = {r[0][0]: r for r in rows if r[0][0] not in held}
        if lost:
            lost = {c: lost[c] for c in sorted(lost.keys() - self.meter.held(conn, list(lost)))}
        if lost:
            self.meter.insert(conn, [r[0] for r in lost.values()])
            with self._lock:
                self._restored += [_lost(r) for r in lost.values()]
        return len(lost)

    def check(self, *, full: bool = False) -> list[Tampered]:
        """Charge again the releases whose ledger rows are gone; what was lost since last asked.

        ``full`` (and the first call) compares the whole horizon: one read of the
        ledger's ids in it (less a margin for the ledger's stamps, which may trail
        the entries' times). Otherwise the new entries and one sweep slice are
        looked up by id. Only ids found missing are looked up again, under the
        ledger lock, and put back.
        """
        started = time.perf_counter()
        floor = self.horizon()
        now = self.clock()
        with self._lock:
            end = self._follow(floor)
            full = full or self._last is None
            before = self._checked, self._last, self._sweep, self._cycle
            if full:
                rows = self._within(self._head, end, floor)
                self._sweep, self._cycle = end, (end, end)  # the next cycle starts afresh
            else:
                rows = self._within(self._checked, end, floor) + self._slice(now, end, floor)
            self._checked, self._last = end, now
        try:
            return self._compare(rows, floor if full else None, started)
        except BaseException:  # unchecked: the next call looks these rows up again
            with self._lock:
                self._checked, self._last, self._sweep, self._cycle = before
            raise

    def _compare(self, rows: list[tuple[ChargeRow, int]], floor: float | None, started: float
                 ) -> list[Tampered]:
        """Look ``rows`` up in the ledger and put back the ones it lost (see :meth:`check`):
        against every id stamped after ``floor`` when given (a full pass), else by id."""
        if floor is not None:
            held = self.meter.ids_since(floor - _STAMP_MARGIN_S)
            lost = {r[0][0]: r for r in rows if r[0][0] not in held}
            self.looked_up = 0
        else:
            missing = self.meter.missing(list({r[0][0]: None for r in rows})) if rows else set()
            lost = {r[0][0]: r for r in rows if r[0][0] in missing}
            self.looked_up = len(rows)
            if rows:  # the whole call's wall time: conservative on a loaded host
                self._cost = (time.perf_counter() - started) / len(rows)
        restored = (set(self.meter.restore_rows([lost[c][0] for c in sorted(lost)]))
                    if lost else set())
        with self._lock:
            found, self._restored = self._restored, []
        return found + [_lost(lost[c]) for c in sorted(lost) if c in restored]

    def _slice(self, now: float, end: int, floor: float) -> list[tuple[ChargeRow, int]]:
        """The sweep's next rows (under the lock): enough that a cycle ends within
        ``sweep_max_s``, more when the measured cost per id fits in ``sweep_share``."""
        assert self._last is not None
        start, stop = self._cycle
        if self._sweep >= stop:  # a cycle ended: the next covers the horizon as it is now
            start, stop = self._head, end
            self._cycle, self._sweep = (start, stop), start
        n = sweep_size(stop - start, max(0.0, now - self._last), self._cost,
                       self.sweep_max_s, self.sweep_share)
        first = max(self._sweep, self._head)
        last = min(stop, first + n)
        self._sweep = last
        return self._within(first, last, floor)


def _lost(entry: tuple[ChargeRow, int]) -> Tampered:
    row, index = entry
    return Tampered(row[0], "egress charge", row[1], index, "missing", table="egress_charges")


class SealOrders:
    """Follows the audit log from a host's unseal and finds ``keys.seal-all`` orders."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.cursor = audit.size()  # orders written before this unseal do not apply

    def next_order(self) -> AuditEvent | None:
        """The first order written since the last call, or None."""
        end = self.audit.size()
        while self.cursor < end:
            stop = min(end, self.cursor + _PAGE)
            events = self.audit.events(self.cursor, stop)
            self.cursor = stop
            for ev in events:
                if ev.action == SEAL_ORDER_ACTION and ev.decision == "allow":
                    return ev
        return None


class StateGuard:
    """Runs the restriction journal and the ledger check; implements ``release.StateGuard``."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        meter: EgressMeter | None,
        alerts: AlertManager,
        *,
        actor: str = "strongroom",
        interval_s: float = 2.0,
        on_seal_order: Callable[[AuditEvent], object] | None = None,
    ) -> None:
        self.alerts = alerts
        self.interval_s = interval_s
        self.seal_orders = SealOrders(audit) if on_seal_order is not None else None
        self.on_seal_order = on_seal_order
        self.egress = EgressLedgerCheck(meter, audit) if meter is not None else None
        if meter is not None and self.egress is not None:
            meter.repair = self.egress.repair
        self.journal = RestrictionJournal(store, audit, on_tamper=self._tampered, actor=actor)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Before a release: repair the ledger now if the meter saw a total fall (a flag).

        Deleted statement rows are restored when the evidence rule sees the
        statements change (``GrantEvidence.on_change`` is :meth:`RestrictionJournal.changed`),
        before it reads them; everything else runs in the background thread.
        """
        meter = self.egress.meter if self.egress is not None else None
        if meter is not None and meter.suspect.is_set():
            self.check_egress()

    def check_egress(self, *, full: bool = False) -> list[Tampered]:
        """Follow the log and put back lost ledger rows now.

        The new entries and a slice of the sweep (:class:`EgressLedgerCheck`); the
        whole horizon when ``full``, at the first call (unseal), or when the meter is
        ``suspect`` (a total it reloaded fell: some row is gone, which one is unknown).
        """
        if self.egress is None:
            return []
        with self._lock:
            suspect = self.egress.meter.suspect.is_set()
            self.egress.meter.suspect.clear()
            lost = self.egress.check(full=full or suspect)
        if lost:
            self._tampered(lost)
        return lost

    def reconcile(self) -> list[Tampered]:
        """Everything now (at unseal, and from the background thread)."""
        if self.seal_orders is not None and self.on_seal_order is not None:
            order = self.seal_orders.next_order()
            if order is not None:
                _log.warning("sealing: %s ordered every host sealed (audit entry %d)",
                             order.actor, order.index)
                self.on_seal_order(order)
                return []
        return self.journal.reconcile() + self.check_egress()

    def _tampered(self, found: list[Tampered]) -> None:
        for t in found:
            self.alerts.raise_alert(Alert(
                rule=TAMPER_RULE, severity="critical", subject=t.subject[:64] or "database",
                obj=f"{t.kind} {t.digest[:16]}",
                message=f"restrictive state deleted behind the gate's back: {t.describe()}; "
                        "it was restored from the audit log and still applies",
                dedup_key=f"{TAMPER_RULE}:{t.kind}:{t.digest}:{t.index}",
                details={"kind": t.kind, "digest": t.digest, "audit_index": t.index,
                         "what": t.what},
                techniques=("T1565.001", "T1070")))

    def start(self) -> None:
        """Reconcile on the interval in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.reconcile()
                except StrongroomError as exc:  # the next release fails closed on the same error
                    _log.warning("state guard: %s", exc.message)

        self._thread = threading.Thread(target=run, name="strongroom-state-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (at seal)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(RuntimeError):
                thread.join(timeout=5)

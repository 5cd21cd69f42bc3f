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

from strongroom.access.restrictions import RestrictionJournal, Tampered
from strongroom.errors import StrongroomError
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.monitor.egress import ChargeRow, EgressMeter, charge_row

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from strongroom.audit.entry import AuditEvent
    from strongroom.audit.log import AuditLog
    from strongroom.store.db import Store

__all__ = ["SEAL_ORDER_ACTION", "TAMPER_RULE", "EgressLedgerCheck", "SealOrders", "StateGuard"]

TAMPER_RULE = "SR-STATE-TAMPER"
#: The audit action of an order to seal every host sharing the database.
SEAL_ORDER_ACTION = "keys.seal-all"
#: Longest lifetime budget a ledger row can count against (a Grant's longest duration).
_GRANT_HORIZON_S = 7 * 24 * 3600
#: How far a ledger row's stamp may trail its audit entry's time (clock skew between hosts).
_STAMP_MARGIN_S = 3600.0
#: Audit entries read per query while following the log.
_PAGE = 2000
_log = logging.getLogger(__name__)


class EgressLedgerCheck:
    """The egress ledger holds a row for every release the audit log says was allowed.

    It follows the log itself (a cursor of its own), so that :meth:`repair` can
    run inside the meter's ledger transaction without waiting on anything else
    the guard holds.
    """

    def __init__(self, meter: EgressMeter, audit: AuditLog, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.meter = meter
        self.audit = audit
        self.clock = clock
        #: Where spent release nonces read from the log go (the evidence rule's ``remember``).
        self.remember_nonce: Callable[[str, float], None] | None = None
        self._lock = threading.Lock()
        self._cursor = 0
        self._rows: dict[str, tuple[ChargeRow, int]] = {}
        self._restored: list[Tampered] = []

    def horizon(self) -> float:
        """The oldest charge any budget still counts (window budgets and Grant lifetimes)."""
        longest = max((b.window_s for b in self.meter.budgets()), default=0)
        return self.clock() - max(longest, _GRANT_HORIZON_S)

    def _follow(self) -> dict[str, tuple[ChargeRow, int]]:
        """Read the log's new release entries; the rows within the horizon (a copy)."""
        with self._lock:
            end = self.audit.size()
            now = self.clock()
            while self._cursor < end:
                stop = min(end, self._cursor + _PAGE)
                for ev in self.audit.events(self._cursor, stop):
                    row = charge_row(ev)
                    if row is None:
                        continue
                    self._rows[row[0]] = (row, ev.index)
                    nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
                    if (self.remember_nonce is not None and isinstance(nonce, str)
                            and isinstance(expires, int) and expires > now):
                        self.remember_nonce(nonce, float(expires))  # spent at another gate
                self._cursor = stop
            floor = self.horizon()
            for cid in [c for c, (row, _) in self._rows.items() if row[4] < floor]:
                del self._rows[cid]
            return dict(self._rows)

    def repair(self, conn: Connection) -> int:
        """Put back, in the meter's transaction ``conn``, the logged charges the ledger lost."""
        rows = self._follow()
        lost = set(rows) - self.meter.held(conn, list(rows))
        if lost:
            self.meter.insert(conn, [rows[c][0] for c in sorted(lost)])
            with self._lock:
                self._restored += [_lost(rows[c]) for c in sorted(lost)]
        return len(lost)

    def check(self) -> list[Tampered]:
        """Charge again the releases whose ledger rows are gone; what was lost since last asked.

        One read of the ledger's ids in the horizon (less a margin for the ledger's
        stamps, which may trail the entries' times), compared in memory; only ids it
        lacks are looked up again, under the ledger lock, and put back.
        """
        rows = self._follow()
        held = self.meter.ids_since(self.horizon() - _STAMP_MARGIN_S)
        lost = sorted(set(rows) - held)
        restored = set(self.meter.restore_rows([rows[c][0] for c in lost])) if lost else set()
        with self._lock:
            found, self._restored = self._restored, []
        return found + [_lost(rows[c]) for c in lost if c in restored]


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

    def check_egress(self) -> list[Tampered]:
        """Follow the log and put back lost ledger rows now."""
        if self.egress is None:
            return []
        with self._lock:
            self.egress.meter.suspect.clear()
            lost = self.egress.check()
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

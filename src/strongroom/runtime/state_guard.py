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
    from strongroom.audit.log import AuditEvent, AuditLog
    from strongroom.store.db import Store

__all__ = ["TAMPER_RULE", "EgressLedgerCheck", "StateGuard"]

TAMPER_RULE = "SR-STATE-TAMPER"
#: Longest lifetime budget a ledger row can count against (a Grant's longest duration).
_GRANT_HORIZON_S = 7 * 24 * 3600
_log = logging.getLogger(__name__)


class EgressLedgerCheck:
    """The egress ledger holds a row for every release the audit log says was allowed."""

    def __init__(self, meter: EgressMeter, *, clock: Callable[[], float] = time.time) -> None:
        self.meter = meter
        self.clock = clock
        self._rows: dict[str, tuple[ChargeRow, AuditEvent]] = {}

    def horizon(self) -> float:
        """The oldest charge any budget still counts (window budgets and Grant lifetimes)."""
        longest = max((b.window_s for b in self.meter.budgets()), default=0)
        return self.clock() - max(longest, _GRANT_HORIZON_S)

    def observe(self, events: list[AuditEvent]) -> None:
        """Remember the release entries among ``events`` (newer pages after older ones)."""
        for ev in events:
            row = charge_row(ev)
            if row is not None:
                self._rows[row[0]] = (row, ev)

    def check(self) -> list[Tampered]:
        """Charge again the releases whose ledger rows are gone; what was missing."""
        floor = self.horizon()
        for cid in [c for c, (row, _) in self._rows.items() if row[4] < floor]:
            del self._rows[cid]
        lost = self.meter.missing(list(self._rows))
        if not lost:
            return []
        found = [self._rows[c] for c in sorted(lost)]
        self.meter.record_events([ev for _, ev in found])
        return [Tampered(row[0], "egress charge", row[1], ev.index, "missing",
                         table="egress_charges") for row, ev in found]


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
    ) -> None:
        self.alerts = alerts
        self.interval_s = interval_s
        self.egress = EgressLedgerCheck(meter) if meter is not None else None
        self.journal = RestrictionJournal(store, audit, on_tamper=self._tampered, actor=actor,
                                          interval_s=interval_s,
                                          listener=self._listen)
        self._egress_due = 0.0
        #: Where spent release nonces read from the log go (the evidence rule's ``remember``).
        self.remember_nonce: Callable[[str, float], None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _listen(self, events: list[AuditEvent]) -> None:
        if self.egress is not None:
            self.egress.observe(events)
        remember = self.remember_nonce
        if remember is None:
            return
        now = time.time()
        for ev in events:  # nonces other gates on this database spent: refused here as replays
            if ev.action != "key.release" or ev.decision != "allow":
                continue
            nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
            if isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                remember(nonce, float(expires))

    def check(self) -> None:
        """Before a release: reconcile what changed or is due (cheap otherwise)."""
        self.journal.check()
        meter = self.egress.meter if self.egress is not None else None
        if meter is not None and (meter.suspect.is_set()
                                  or time.monotonic() >= self._egress_due):
            self.check_egress()

    def check_egress(self) -> list[Tampered]:
        """Follow the log and put back lost ledger rows now."""
        if self.egress is None:
            return []
        with self._lock:
            self.egress.meter.suspect.clear()
            self.journal.follow()
            lost = self.egress.check()
            self._egress_due = time.monotonic() + self.interval_s
        if lost:
            self._tampered(lost)
        return lost

    def reconcile(self) -> list[Tampered]:
        """Everything now (at unseal, and from the background thread)."""
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

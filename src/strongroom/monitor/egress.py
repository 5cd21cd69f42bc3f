"""Egress budgets: how many bytes of weights may leave, per principal, per artifact, lab-wide.

The release gate charges every shard's size *before* its file key leaves;
:class:`EgressMeter` implements :class:`strongroom.release.ports.EgressPort`::

    meter = EgressMeter(store, alerts=alerts, budgets=[
        Budget("principal", "*", 24 * 3600, 256 * GiB),   # each person or service
        Budget("artifact", "*", 24 * 3600, 512 * GiB),    # each model, all principals together
        Budget("lab", "*", 24 * 3600, 4 * TiB),           # everything
    ])
    meter.charge_with_event(audit, "alice", shard_size, time.time(), artifact="atlas-70b@3",
                            charge_id=nonce, event=allow_event)  # with the audit entry
    meter.charge("alice", shard_size, time.time(), artifact="atlas-70b@3", charge_id=nonce)
    meter.refund("alice", shard_size, now, charge_id=nonce)      # undo a plain charge
    meter.time_to_exfiltrate([("atlas-70b@3", 140 * GiB)])       # how long a full theft takes

Rules it keeps:

* **Hard stop at the cap, warning before it.** A charge that would take any
  applicable budget over its cap raises :class:`~strongroom.errors.BudgetExceeded`
  and records nothing (and raises a ``high`` alert once per window); a charge
  that crosses ``warn_fraction`` of a cap raises a ``warning`` alert.
* **Durable and shared.** Charges live in ``egress_charges``; the check and the
  insert run in one transaction that holds the ledger lock (SQLite's
  ``BEGIN IMMEDIATE``; the ``UPDATE`` of the one ``egress_ledger`` row on
  PostgreSQL), so several gates on one database, a restart, or a budget change
  in flight never let more through than the cap in force when the charge was
  decided.
* **Grant budgets.** A charge may name a lifetime byte budget
  (``budget=(budget_id, cap_bytes)``: a Grant's request digest or a
  break-glass id, and its byte budget). Inside the same locked transaction
  the ledger checks what is already charged under that id (an indexed sum,
  read once and then kept as a running total like the window totals)
  and refuses a charge that would pass the cap
  with :class:`~strongroom.errors.AccessDenied` (:class:`GrantBudgetSpent`),
  recording nothing. Every gate on the database therefore shares one budget,
  and a release refused later (egress cap, failed audit commit) consumes none.
* **Charged with the audit event.** The release gate calls
  :meth:`EgressMeter.charge_with_event`: the charge is decided inside the audit
  log's group commit (the meter is the append's
  :class:`~strongroom.audit.log.AppendGuard`), so the ledger row and the
  ``allow`` entry commit together, one transaction and one fsync per batch. A
  charge id already in the ledger is refused there as a replay.
* **Running totals.** Each window's total is kept in memory, loaded once from
  the ledger and then updated as charges are recorded. The ``egress_ledger``
  row's generation, bumped by every change to charges or budgets, tells a
  process when another one (or a failed batch) changed the ledger. If only
  charges were appended since (the row's epoch is unchanged), the process reads
  just the rows stamped since its newest one (every charge is stamped at or after
  the ledger's high water), so CPU per release does not grow with the number of
  hosts; a refund, a repair or a budget change bumps the epoch too, and the
  process then reloads instead of trusting its totals. Totals never count less
  than they knew: rows deleted behind the meter's back stay counted until the
  state guard puts them back from the audit log. Totals a transaction changed
  are used again only once it is known to have committed.
* **Idempotent.** ``charge_id`` (the release evidence's nonce) is the primary
  key: a retried charge or a replayed audit event (:meth:`EgressMeter.record_events`,
  :meth:`EgressMeter.backfill`) is charged once.
* **Clock safety.** A charge is stamped at the latest time the ledger has seen,
  never earlier: a clock stepped backwards cannot age charges out of the window
  early (it raises a ``warning`` alert instead).

Budgets set with :meth:`EgressMeter.set_budget` are stored and override the
constructor's defaults with the same scope, subject and window. An artifact
budget's subject is an artifact *name* (all its versions) or ``*`` (each
artifact separately). Do not call :meth:`charge` without ``artifact`` on the
release path: artifact budgets can only apply to charges that name it.

The pieces live beside this module: the budgets as values in
:mod:`strongroom.monitor.budgets`, the ledger's SQL and the in-memory running
totals in :mod:`strongroom.monitor.ledger`, the time-to-exfiltrate report in
:mod:`strongroom.monitor.exfil_report`. This module holds the meter (charging,
group commit, alerts, replay and backfill) and re-exports the names callers
import from it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, delete, select
from sqlalchemy.orm import Session

from strongroom.artifacts import base_name
from strongroom.errors import AccessDenied, BudgetExceeded, InvalidInput, StrongroomError
from strongroom.monitor.alerts import Alert
from strongroom.monitor.budgets import (
    DAY,
    DEFAULT_BUDGETS,
    UNKNOWN_ARTIFACT,
    Budget,
    BudgetUsage,
    GiB,
    GrantBudgetSpent,
    TiB,
    applicable,
)
from strongroom.monitor.exfil_report import ExfiltrationEstimate, time_to_exfiltrate
from strongroom.monitor.ledger import (
    MAX_BUDGET_ID,
    ChargeRow,
    LedgerCache,
    LedgerRound,
    LedgerStore,
    charge_row,
)
from strongroom.store.tables.monitor import EgressBudgetRow, EgressCharge

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent, AuditLog
    from strongroom.monitor.alerts import AlertManager
    from strongroom.store.db import Store

__all__ = [
    "DAY",
    "DEFAULT_BUDGETS",
    "Budget",
    "BudgetUsage",
    "ChargeRow",
    "EgressMeter",
    "ExfiltrationEstimate",
    "GiB",
    "GrantBudgetSpent",
    "TiB",
    "applicable",
    "charge_row",
]

#: A clock that is this many seconds behind the ledger's newest charge is reported.
CLOCK_SKEW_TOLERANCE_S = 2.0


@dataclass(eq=False)
class _PendingCharge:
    """One charge waiting for its batch; whoever decides the batch fills in the outcome."""

    principal: str
    nbytes: int
    now: float
    artifact: str
    charge_id: str
    #: The lifetime budget this charge counts against: (budget id, cap in bytes).
    budget: tuple[str, int] | None = None
    t: float = 0.0
    done: bool = False
    duplicate: bool = False
    clock_back: float = 0.0
    refused: tuple[Budget, int] | None = None
    #: Bytes already charged under ``budget`` when this charge was refused for it.
    budget_spent: int | None = None
    warnings: list[tuple[Budget, int]] = field(default_factory=list)
    error: BaseException | None = None
    #: The totals as of this charge's transaction, published only once it committed.
    decided: LedgerCache | None = None

    @property
    def admitted(self) -> bool:
        """Recorded in the ledger (not a duplicate, not refused)."""
        return not self.duplicate and self.refused is None and self.budget_spent is None


class EgressMeter:
    """Byte budgets over sliding windows, charged at key release (``release.ports.EgressPort``).

    It is also an :class:`~strongroom.audit.log.AppendGuard`: :meth:`charge_with_event`
    decides a charge inside the audit append's transaction.
    """

    def __init__(
        self,
        store: Store,
        *,
        budgets: Sequence[Budget] = DEFAULT_BUDGETS,
        warn_fraction: float = 0.8,
        alerts: AlertManager | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < warn_fraction <= 1:
            raise InvalidInput("warn_fraction must be in (0, 1]", obj="egress meter")
        self.store = store
        self.defaults = {b.key: b for b in budgets}
        self.warn_fraction = warn_fraction
        self.alerts = alerts
        self.clock = clock
        # Serialises this meter's own transactions (the audit writer never takes it).
        self._lock = threading.Lock()
        self._db = LedgerStore(store)
        # The totals as of the newest committed generation this process knows.
        self._ledger: LedgerCache | None = None
        self._publish_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: list[_PendingCharge] = []
        self._leading = False
        #: Set when a reloaded total fell below what this process knew (rows deleted?).
        self.suspect = threading.Event()
        #: Puts back, inside the given ledger transaction, charges the audit log holds but the
        #: ledger lost; returns how many (the runtime's state guard sets it).
        self.repair: Callable[[Connection], int] | None = None

    # -- budgets -----------------------------------------------------------

    def _changed(self, conn: Connection) -> None:
        """Lock the ledger for a change that invalidates cached totals (reloaded next time)."""
        self._db.lock(conn, rewrite=True)
        self._ledger = None

    def _budgets(self, s: Session | Connection) -> list[Budget]:
        return self._db.budgets(s, self.defaults)

    def budgets(self) -> list[Budget]:
        """Every budget in force: stored ones over the defaults."""
        with self.store.session(readonly=True) as s:
            return self._budgets(s)

    def set_budget(self, budget: Budget) -> None:
        """Store (or replace) a budget; charges decided after this returns obey it."""
        with self._lock, self.store.session() as s:
            self._changed(s.connection())
            row = s.get(EgressBudgetRow, budget.key)
            if row is None:
                s.add(EgressBudgetRow(scope=budget.scope, subject=budget.subject,
                                      window_s=budget.window_s, cap_bytes=budget.cap_bytes,
                                      updated_at=datetime.now(UTC)))
            else:
                row.cap_bytes = budget.cap_bytes
                row.updated_at = datetime.now(UTC)

    # -- usage -------------------------------------------------------------

    def usage(self, principal: str, artifact: str | None = None,
              now: float | None = None) -> list[BudgetUsage]:
        """Use of every budget that applies to ``principal`` (and ``artifact``) right now."""
        now = self.clock() if now is None else now
        with self.store.session(readonly=True) as s:
            t = max(now, self._db.high_water(s))
            out = []
            for b in applicable(self._budgets(s), principal, artifact):
                subject = {"principal": principal, "lab": "*",
                           "artifact": base_name(artifact or "?")}[b.scope]
                out.append(BudgetUsage(b, subject, self._db.used(s, b, principal, artifact, t)))
            return out

    def top_principals(self, since: float, limit: int = 10) -> list[tuple[str, int]]:
        """Who was charged most since ``since``: ``(principal, bytes)``, most first (a read)."""
        from sqlalchemy import func

        total = func.sum(EgressCharge.nbytes)
        q = (select(EgressCharge.principal, total).where(EgressCharge.at >= since)
             .group_by(EgressCharge.principal).order_by(total.desc(), EgressCharge.principal)
             .limit(limit))
        with self.store.session(readonly=True) as s:
            return [(str(p), int(n or 0)) for p, n in s.execute(q)]

    def spent(self, budget_ids: Sequence[str]) -> dict[str, int]:
        """Bytes charged so far under each Grant or break-glass budget id (lifetime; a read)."""
        with self.store.session(readonly=True) as s:
            return self._db.budget_totals(s.connection(), list(budget_ids))

    # -- deciding ----------------------------------------------------------

    def _current(self, conn: Connection, generation: int, epoch: int
                 ) -> tuple[LedgerCache, bool]:
        """The cached ledger, caught up if only appends happened since, else a fresh one;
        and whether the generation moved with no row appended (someone else's doing).

        Under the ledger lock. A newer generation of the cache's epoch means other
        processes only appended charges, each stamped at or after the newest
        before it: the rows stamped since the cache's high water are all it lacks
        (one indexed read of those rows, not a reload of whole windows). Only a
        transaction that added rows moves the generation, so finding none is
        suspect: rows deleted by hand and the generation bumped to force a reload.
        """
        ledger = self._ledger
        if ledger is not None and ledger.epoch == epoch:
            moved_empty = False
            if ledger.generation != generation:
                moved_empty = ledger.catch_up(self._db.since(conn, ledger.high)) == 0
                ledger.generation = generation
            return ledger, moved_empty
        return self._fresh(conn, generation, epoch), False

    def _fresh(self, conn: Connection, generation: int, epoch: int) -> LedgerCache:
        """A cache read from the rows (totals loaded lazily), at ``generation`` and ``epoch``."""
        high = self._db.high_water(conn)
        at_high = [] if high == float("-inf") else [r[0] for r in self._db.since(conn, high)]
        return LedgerCache(generation, self._budgets(conn), high, epoch, at_high)

    def missing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger does not hold (a read; no ledger lock).

        On SQLite a read-only snapshot: it never waits for another connection's write
        lock (the audit log's bound is what a release may wait for).
        """
        return self._db.missing(ids)

    def _decide(self, conn: Connection, batch: Sequence[_PendingCharge],
                queued: LedgerRound | None = None) -> None:
        """Decide ``batch`` in arrival order inside ``conn``'s transaction; fill in each outcome.

        Each charge sees the ones before it. The totals are taken out of the
        cache and updated as the rows are written; they go back (:meth:`_publish`)
        only once the transaction is known to have committed. ``queued``: the ledger
        lock and the held ids already sent (PostgreSQL, :meth:`queue_first`); the rows
        are then left in it for :meth:`writes` instead of being written here.
        """
        if queued is None:
            generation, epoch = self._db.lock(conn)
            held = None
        else:
            generation, epoch, held = queued.locked()
        previous = self._ledger
        # The cache itself while it is valid (caught up on other hosts' appends).
        current, moved_empty = self._current(conn, generation, epoch)
        self._ledger = None  # nobody may use totals that this transaction is changing
        ledger, fresh = self._prepare(conn, current, batch, held)
        if moved_empty or (previous is not None and ledger is not previous
                           and ledger.fell_below(previous)):
            # Charges leave a total only by ageing out or by a refund: rows deleted behind
            # the meter's back look the same, and so does a generation moved with no row
            # added. The runtime's repair puts back, in this very transaction, the rows
            # whose releases the audit log holds; the totals are then read again, so this
            # batch is decided on the ledger the log vouches for. (A cache that caught up
            # still counts the deleted rows: it never counts less than it knew.)
            self.suspect.set()
            if self.repair is not None and self.repair(conn):
                # Old rows went back in: other processes must rebuild, not catch up.
                generation, epoch = self._db.lock(conn, rewrite=True)
                if moved_empty:  # this cache never lost the rows: keep it, at the new epoch
                    ledger.generation, ledger.epoch = generation, epoch
                else:
                    ledger = self._fresh(conn, generation, epoch)
                # Again: a row put back may be a charge id this batch now replays.
                ledger, fresh = self._prepare(conn, ledger, batch)
        spent = ledger.spent
        rows: list[ChargeRow] = []
        for it in fresh:
            high = ledger.high
            if it.now < high - CLOCK_SKEW_TOLERANCE_S:
                it.clock_back = high - it.now
            it.t = t = max(it.now, high)
            bid = None if it.budget is None else it.budget[0]
            if it.budget is not None and spent[it.budget[0]] + it.nbytes > it.budget[1]:
                it.budget_spent = spent[it.budget[0]]
                continue
            for b, key in ledger.applicable(it.principal, it.artifact):
                so_far = ledger.windows[key].used(t, high)
                if so_far + it.nbytes > b.cap_bytes:
                    it.refused = (b, so_far)
                    it.warnings.clear()
                    break
                if so_far < self.warn_fraction * b.cap_bytes <= so_far + it.nbytes:
                    it.warnings.append((b, so_far + it.nbytes))
            if it.refused is None:
                rows.append((it.charge_id, it.principal, it.artifact, it.nbytes, t, bid))
                ledger.add(it.principal, it.artifact, t, it.nbytes, it.charge_id)
                if bid is not None:
                    spent[bid] += it.nbytes
        if queued is not None:  # written with the batch's entries; the lock holds the row
            queued.rows = rows
            ledger.generation = generation + 1 if rows else generation
        else:
            self._db.insert(conn, rows)
            ledger.generation = self._db.appended(conn) if rows else generation
        ledger.prune()
        for it in batch:
            it.decided = ledger

    def _prepare(self, conn: Connection, ledger: LedgerCache, batch: Sequence[_PendingCharge],
                 held: set[str] | None = None) -> tuple[LedgerCache, list[_PendingCharge]]:
        """Mark replays in ``batch``; load every total its new charges need (under the lock).

        ``held``: which of the batch's charge ids the ledger holds, read under the lock
        (None: read here).
        """
        seen = self._db.held(conn, [it.charge_id for it in batch]) if held is None else held
        fresh: list[_PendingCharge] = []
        for it in batch:
            it.duplicate = it.charge_id in seen
            if not it.duplicate:
                seen.add(it.charge_id)
                fresh.append(it)
        # Load every total this batch needs before any of its rows is counted.
        for it in fresh:
            for _, key in ledger.applicable(it.principal, it.artifact):
                if key not in ledger.windows:
                    self._db.load(conn, ledger, key)
        # Lifetime budgets: totals of this generation (read under the ledger lock when not
        # known yet), counted here as rows are decided, like the window totals.
        spent = ledger.spent
        missing = list(dict.fromkeys(it.budget[0] for it in fresh
                                     if it.budget is not None and it.budget[0] not in spent))
        if missing:
            spent.update(self._db.budget_totals(conn, missing))
        return ledger, fresh

    def _publish(self, batch: Sequence[_PendingCharge]) -> None:
        """After a batch committed: its totals become the cache (unless a newer one is there)."""
        ledger = batch[0].decided if batch else None
        if ledger is None:
            return
        with self._publish_lock:
            cached = self._ledger
            if cached is None or cached.generation < ledger.generation:
                self._ledger = ledger

    # -- charging ----------------------------------------------------------

    def _pending(self, principal: str, nbytes: int, now: float, artifact: str | None,
                 charge_id: str | None,
                 budget: tuple[str, int] | None = None) -> _PendingCharge:
        if nbytes < 0 or not principal:
            raise InvalidInput("a charge needs a principal and a size >= 0",
                               obj=principal or "egress charge")
        if budget is not None and (not budget[0] or len(budget[0]) > MAX_BUDGET_ID
                                   or budget[1] < 0):
            raise InvalidInput(f"a byte budget needs an id of 1 to {MAX_BUDGET_ID} "
                               "characters and a cap >= 0", obj=principal)
        return _PendingCharge(principal, nbytes, now, artifact or UNKNOWN_ARTIFACT,
                              charge_id or f"auto:{secrets.token_hex(12)}", budget)

    def charge(self, principal: str, nbytes: int, now: float, *, artifact: str | None = None,
               charge_id: str | None = None, budget: tuple[str, int] | None = None) -> None:
        """Record the bytes or raise BudgetExceeded (then nothing is recorded).

        ``budget`` (budget id, lifetime cap in bytes) also charges a Grant's
        byte budget; :class:`GrantBudgetSpent` when it would pass the cap.

        Concurrent charges are group-committed: one caller leads and decides a
        whole batch in one ledger transaction (in arrival order, each seeing
        the ones before it), so the ledger costs one commit per batch rather
        than one per release, with the same all-or-nothing, cap-exact result.
        A charge id already in the ledger is a retry or a replay: a no-op.
        """
        item = self._pending(principal, nbytes, now, artifact, charge_id, budget)
        self._group_commit(item)
        if item.error is not None:
            raise item.error
        if not item.duplicate:
            self._report(item)

    def joins(self, audit: object) -> bool:
        """Whether :meth:`charge_with_event` can charge inside ``audit``'s transactions.

        True for an :class:`~strongroom.audit.log.AuditLog` on this meter's database.
        """
        from strongroom.audit.log import AuditLog

        return isinstance(audit, AuditLog) and (
            audit.store is self.store or audit.store.engine.url == self.store.engine.url)

    def charge_with_event(self, audit: AuditLog, principal: str, nbytes: int, now: float, *,
                          artifact: str | None = None, charge_id: str | None = None,
                          event: Mapping[str, Any],
                          budget: tuple[str, int] | None = None) -> int:
        """Charge and append ``event`` (keywords of ``AuditLog.append``) in one transaction.

        The charge is decided inside the audit batch's transaction, so the
        ledger row and the audit entry commit together: an acknowledged event
        is charged, a failed append (:class:`~strongroom.errors.AuditUnavailable`)
        charged nothing, and a crash leaves both or neither. Returns the entry's
        index. Raises :class:`~strongroom.errors.BudgetExceeded` (nothing
        appended or recorded) or :class:`~strongroom.errors.AccessDenied` when
        ``charge_id`` is already in the ledger (the evidence was spent, possibly
        by another process on this database). ``budget`` (budget id, lifetime
        cap in bytes) is a Grant's or break-glass byte budget, charged in the
        same transaction: :class:`GrantBudgetSpent` (an AccessDenied; nothing
        appended or recorded) when the charge would pass its cap. Needs
        :meth:`joins` to be true.
        """
        item = self._pending(principal, nbytes, now, artifact, charge_id, budget)
        index = audit.append_if(self, item, **event)
        if item.duplicate:
            raise AccessDenied("the evidence was already used (replay): its nonce is already "
                               "charged in the egress ledger", obj=f"{item.artifact} for "
                               f"{principal}", remedy="sign a fresh request for each release")
        self._report(item)
        if index is None:  # pragma: no cover - refused items raise in _report
            raise BudgetExceeded("the egress charge was refused", obj=principal)
        return index

    def charge_many_with_event(self, audit: AuditLog, charges: Sequence[Mapping[str, Any]]
                               ) -> list[int | StrongroomError]:
        """Several :meth:`charge_with_event` in one audit batch, decided in order.

        Each charge is a mapping of that method's keywords (``principal``,
        ``nbytes``, ``now``, ``event`` and optionally ``artifact``,
        ``charge_id``, ``budget``). A charge sees the ones before it in the same
        transaction, so two charges against one budget are counted in order and
        the one that passes the cap is refused. Each result is the entry's index
        (durable once this returns) or the refusal that method would have raised
        for it; nothing is appended or recorded for a refused charge. Raises
        :class:`~strongroom.errors.AuditUnavailable` when the batch failed
        (nothing of it charged).
        """
        results: list[int | StrongroomError | None] = [None] * len(charges)
        claimed: list[tuple[_PendingCharge, Mapping[str, Any]]] = []
        where: list[int] = []
        for i, c in enumerate(charges):
            try:
                item = self._pending(str(c["principal"]), int(c["nbytes"]), float(c["now"]),
                                     c.get("artifact"), c.get("charge_id"), c.get("budget"))
            except InvalidInput as exc:
                results[i] = exc
                continue
            claimed.append((item, c["event"]))
            where.append(i)
        indices = audit.append_many_if(self, claimed)
        for i, (item, _), index in zip(where, claimed, indices, strict=True):
            if item.duplicate:
                results[i] = AccessDenied(
                    "the evidence was already used (replay): its nonce is already charged in "
                    "the egress ledger", obj=f"{item.artifact} for {item.principal}",
                    remedy="sign a fresh request for each release")
                continue
            try:
                self._report(item)
            except (BudgetExceeded, AccessDenied) as exc:
                results[i] = exc
                continue
            results[i] = index if index is not None else BudgetExceeded(
                "the egress charge was refused", obj=item.principal)
        return cast(list[int | StrongroomError], results)  # every position was filled above

    # AppendGuard
    def admit(self, conn: Connection, claims: Sequence[Any],
              queued: LedgerRound | None = None) -> list[bool]:
        """Decide the claims (:class:`_PendingCharge`) in the audit batch's transaction.

        ``queued``: what :meth:`queue_first` sent in the batch's first round trip.
        """
        self._decide(conn, claims, queued)
        return [it.admitted for it in claims]

    # PipelinedGuard (PostgreSQL: the audit writer's round trips carry the ledger's statements)
    def queue_first(self, conn: Connection, claims: Sequence[Any]) -> LedgerRound:
        """Send the ledger lock and the read of the claims' held charge ids (not answered yet)."""
        return self._db.queue_lock(conn, [it.charge_id for it in claims])

    def writes(self, queued: LedgerRound) -> list[tuple[str, list[Any]]]:
        """The rows :meth:`admit` charged and the generation's bump, as statements."""
        return self._db.append_statements(queued.rows)

    def settle(self, claims: Sequence[Any], committed: bool) -> None:
        """Keep the batch's totals if it committed (else the next batch reloads them)."""
        if committed:
            self._publish(claims)

    def _report(self, item: _PendingCharge) -> None:
        """After the decision: clock, cap and warning alerts; BudgetExceeded when refused."""
        principal, artifact, t, nbytes = item.principal, item.artifact, item.t, item.nbytes
        if item.budget_spent is not None and item.budget is not None:
            raise GrantBudgetSpent(item.budget[0], item.budget_spent, item.budget[1],
                                   obj=f"{artifact} for {principal}")
        if item.clock_back:
            self._alert("SR-EGRESS-CLOCK", "warning", principal, artifact,
                        f"the clock is {item.clock_back:.0f} s behind the egress ledger; charges "
                        "are stamped at the ledger's latest time", f"clock:{int(t // 3600)}",
                        {"behind_s": round(item.clock_back, 3)})
        if item.refused is not None:
            b, used = item.refused
            where = b.describe(principal, artifact)
            self._alert("SR-EGRESS-CAP", "high", principal, artifact,
                        f"{principal} was stopped at the egress cap {where}: {used} of "
                        f"{b.cap_bytes} bytes used, {nbytes} more asked for",
                        f"cap:{where}:{principal}:{int(t // b.window_s)}",
                        {"budget": where, "used": used, "cap": b.cap_bytes, "asked": nbytes})
            raise BudgetExceeded(
                f"releasing {nbytes} bytes would exceed the egress budget {where} "
                f"({used} of {b.cap_bytes} bytes used)", obj=f"{artifact} for {principal}",
                remedy="wait for the window to move on, or ask a security officer to raise "
                "the budget (`strongroom monitor egress`)")
        for b, total in item.warnings:
            where = b.describe(principal, artifact)
            self._alert("SR-EGRESS-WARN", "warning", principal, artifact,
                        f"{principal} has used {total} of {b.cap_bytes} bytes of the egress "
                        f"budget {where} ({total / max(1, b.cap_bytes):.0%})",
                        f"warn:{where}:{principal}:{int(t // b.window_s)}",
                        {"budget": where, "used": total, "cap": b.cap_bytes})

    def _group_commit(self, item: _PendingCharge) -> None:
        with self._cond:
            self._queue.append(item)
            while not item.done:
                if not self._leading:
                    self._leading = True
                    batch, self._queue = self._queue, []
                    break
                self._cond.wait()
            else:
                return
        try:
            self._decide_alone(batch)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()

    def _decide_alone(self, batch: list[_PendingCharge]) -> None:
        """Decide and record ``batch`` in a ledger transaction of its own."""
        try:
            with self._lock, self._db.begin() as conn:
                self._decide(conn, batch)
            self._publish(batch)
        except BaseException as exc:
            for it in batch:
                it.error = exc
        finally:
            for it in batch:
                it.done = True

    def refund(self, principal: str, nbytes: int, now: float, *,
               charge_id: str | None = None) -> None:
        """Undo a charge whose release was refused later (e.g. the audit append failed)."""
        with self._lock, self.store.session() as s:
            self._changed(s.connection())
            if charge_id is not None:
                s.execute(delete(EgressCharge).where(EgressCharge.charge_id == charge_id))
                return
            row = s.scalars(select(EgressCharge)
                            .where(EgressCharge.principal == principal,
                                   EgressCharge.nbytes == nbytes)
                            .order_by(EgressCharge.at.desc()).limit(1)).first()
            if row is not None:
                s.delete(row)

    def _alert(self, rule: str, severity: str, principal: str, artifact: str, message: str,
               key: str, details: dict[str, Any]) -> None:
        if self.alerts is None:
            return
        self.alerts.raise_alert(Alert(rule=rule, severity=severity, subject=principal,
                                      obj=artifact, message=message, dedup_key=key,
                                      details=details, techniques=("T1030", "AML.T0025")))

    # -- replay ------------------------------------------------------------

    def record_events(self, events: Iterable[AuditEvent]) -> int:
        """Charge past ``key.release`` allow events idempotently; return how many were new.

        Each is keyed by its evidence nonce (as the gate charges it) or else its
        audit index, so replaying the same events charges nothing twice, and
        counted against the Grant (request digest) or break-glass budget its
        details name. Caps are not checked: these bytes already left.
        """
        return self.record_rows([row for row in map(charge_row, events) if row is not None])

    def record_rows(self, rows: Sequence[ChargeRow]) -> int:
        """Insert the ledger rows (:func:`charge_row`) not already held; how many were new."""
        return len(self.restore_rows(rows))

    def restore_rows(self, rows: Sequence[ChargeRow]) -> list[str]:
        """Insert the ledger rows not already held; the charge ids actually inserted."""
        by_id = {row[0]: row for row in rows}
        if not by_id:
            return []
        with self._lock, self._db.begin() as conn:
            self._changed(conn)
            held = self.held(conn, list(by_id))
            new = [row for cid, row in by_id.items() if cid not in held]
            self.insert(conn, new)
        return [row[0] for row in new]

    def ids_since(self, floor: float, conn: Connection | None = None) -> set[str]:
        """Charge ids of the ledger rows stamped after ``floor`` (a read; no ledger lock),
        in ``conn``'s transaction when given."""
        return self._db.ids_since(floor, conn)

    def held(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger holds, read in ``conn``'s transaction."""
        return self._db.held(conn, ids)

    def insert(self, conn: Connection, rows: Sequence[ChargeRow]) -> None:
        """Insert ledger rows in ``conn``'s transaction (the caller holds the ledger lock)."""
        self._db.insert(conn, rows)

    def backfill(self, audit: AuditLog, now: float | None = None) -> int:
        """Charge the audit log's releases inside the longest window that the ledger lacks."""
        now = self.clock() if now is None else now
        horizon = now - max((b.window_s for b in self.budgets()), default=DAY)
        added, batch = 0, []
        for ev in audit.recent(horizon):
            batch.append(ev)
            if len(batch) >= 2000:
                added, batch = added + self.record_events(batch), []
        return added + self.record_events(batch)

    # -- reporting ---------------------------------------------------------

    def time_to_exfiltrate(self, artifacts: Iterable[tuple[str, int]], *,
                           compression: float = 1.0,
                           principal: str = "*") -> list[ExfiltrationEstimate]:
        """For each (artifact, size): how long a theft takes under the budgets in force.

        See :func:`strongroom.monitor.exfil_report.time_to_exfiltrate`.
        """
        return time_to_exfiltrate(self.budgets(), artifacts, compression=compression,
                                  principal=principal)

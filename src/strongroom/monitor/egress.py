"""Egress budgets: how many bytes of weights may leave, per principal, per artifact, lab-wide.

The release gate charges every shard's size *before* its file key leaves;
:class:`EgressMeter` implements :class:`strongroom.release.EgressMeter`::

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
  read once per ledger generation and then kept as a running total like the
  window totals, so reloaded whenever another process changed the ledger)
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
  process when another one (or a failed batch) changed the ledger; it then
  reloads instead of trusting its totals. Totals a transaction changed are used
  again only once it is known to have committed.
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
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import ColumnElement, Connection, delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from strongroom.errors import AccessDenied, BudgetExceeded, InvalidInput, StorageError
from strongroom.monitor.alerts import Alert
from strongroom.store.db import READONLY
from strongroom.store.tables.monitor import EgressBudgetRow, EgressCharge

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent, AuditLog
    from strongroom.monitor.alerts import AlertManager
    from strongroom.store.db import Store

__all__ = [
    "DEFAULT_BUDGETS",
    "Budget",
    "BudgetUsage",
    "EgressMeter",
    "ExfiltrationEstimate",
    "GiB",
    "GrantBudgetSpent",
    "TiB",
    "applicable",
    "artifact_name",
]

GiB = 1024**3
TiB = 1024**4
DAY = 24 * 3600
Scope = Literal["principal", "artifact", "lab"]
SCOPES: tuple[Scope, ...] = ("principal", "artifact", "lab")
#: A clock that is this many seconds behind the ledger's newest charge is reported.
CLOCK_SKEW_TOLERANCE_S = 2.0
UNKNOWN_ARTIFACT = "?"
ACTION = "key.release"


def _event_time(ev: AuditEvent) -> float:
    return datetime.fromisoformat(ev.time.replace("Z", "+00:00")).timestamp()


def artifact_name(ref: str) -> str:
    """``name@version`` -> ``name``; a bare name stays as it is."""
    return ref.split("@", 1)[0]


@dataclass(frozen=True)
class Budget:
    """At most ``cap_bytes`` released in any ``window_s`` seconds, for one scope and subject."""

    scope: Scope
    subject: str
    window_s: int
    cap_bytes: int

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidInput(f"unknown budget scope {self.scope!r}", obj="egress budget",
                               remedy=f"use one of {', '.join(SCOPES)}")
        if self.window_s <= 0 or self.cap_bytes < 0 or not self.subject:
            raise InvalidInput("a budget needs a subject, a window > 0 s and a cap >= 0 bytes",
                               obj=f"{self.scope} budget {self.subject}")
        if self.scope == "lab" and self.subject != "*":
            raise InvalidInput("the lab-wide budget's subject must be '*'", obj="lab budget")

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the budget: scope, subject, window."""
        return (self.scope, self.subject, self.window_s)

    @property
    def rate(self) -> float:
        """Sustained bytes per second this budget allows."""
        return self.cap_bytes / self.window_s

    def applies(self, principal: str, artifact: str | None) -> bool:
        """Whether a charge by ``principal`` for ``artifact`` counts against this budget."""
        if self.scope == "lab":
            return True
        if self.scope == "principal":
            return self.subject in ("*", principal)
        if artifact is None or artifact == UNKNOWN_ARTIFACT:
            return False
        return self.subject == "*" or self.subject in (artifact, artifact_name(artifact))

    def describe(self, principal: str, artifact: str | None) -> str:
        """Human name, e.g. ``principal alice / 24 h``."""
        who = {"principal": principal, "artifact": artifact_name(artifact or "?"),
               "lab": "lab-wide"}[self.scope]
        label = who if self.scope == "lab" else f"{self.scope} {who}"
        return f"{label} / {_window(self.window_s)}"


#: Defaults when an operator set nothing: sized so a 140 GiB model takes days, not minutes.
DEFAULT_BUDGETS: tuple[Budget, ...] = (
    Budget("principal", "*", DAY, 256 * GiB),
    Budget("artifact", "*", DAY, 1 * TiB),
    Budget("lab", "*", DAY, 8 * TiB),
)


def applicable(budgets: Iterable[Budget], principal: str, artifact: str | None) -> list[Budget]:
    """The budgets a charge counts against: a named subject's budget replaces ``*`` for its window."""
    hits = [b for b in budgets if b.applies(principal, artifact)]
    named = {(b.scope, b.window_s) for b in hits if b.subject != "*"}
    return [b for b in hits if b.subject != "*" or (b.scope, b.window_s) not in named
            or b.scope == "lab"]


def _window(seconds: int) -> str:
    if seconds % DAY == 0:
        return f"{seconds // DAY * 24} h"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds} s"


@dataclass(frozen=True)
class BudgetUsage:
    """How much of one budget is used in the window ending now."""

    budget: Budget
    subject: str
    used: int

    @property
    def remaining(self) -> int:
        """Bytes still allowed in this window."""
        return max(0, self.budget.cap_bytes - self.used)

    @property
    def fraction(self) -> float:
        """Used / cap (1.0 when the cap is 0)."""
        return self.used / self.budget.cap_bytes if self.budget.cap_bytes else 1.0


@dataclass(frozen=True)
class ExfiltrationEstimate:
    """How long stealing a whole artifact takes under today's budgets (one principal)."""

    artifact: str
    size: int
    compression: float
    binding: Budget | None
    rate_bytes_per_s: float
    seconds: float
    min_seconds: float

    @property
    def days(self) -> float:
        """``seconds`` in days."""
        return self.seconds / DAY

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        b = self.binding
        return {"artifact": self.artifact, "size": self.size, "compression": self.compression,
                "binding_budget": None if b is None else
                {"scope": b.scope, "subject": b.subject, "window_s": b.window_s,
                 "cap_bytes": b.cap_bytes},
                "rate_bytes_per_s": self.rate_bytes_per_s, "seconds": self.seconds,
                "min_seconds": self.min_seconds, "days": self.days}


class GrantBudgetSpent(AccessDenied):
    """A charge would take a Grant's (or break-glass) lifetime byte budget past its cap.

    ``used`` is what the ledger held under ``budget_id`` when the charge was
    decided, so a gate can warm its in-memory hint with it.
    """

    def __init__(self, budget_id: str, used: int, cap: int, *, obj: str) -> None:
        super().__init__(f"the grant's byte budget is spent ({used} of {cap} bytes used)",
                         obj=obj, remedy="request access again with a larger budget")
        self.budget_id = budget_id
        self.used = used
        self.cap = cap


def _like_escape(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    decided: _Ledger | None = None

    @property
    def admitted(self) -> bool:
        """Recorded in the ledger (not a duplicate, not refused)."""
        return not self.duplicate and self.refused is None and self.budget_spent is None


#: What a running total is kept for: scope, who (principal, artifact name or ``*``), window.
WindowKey = tuple[str, str, int]


def _who(scope: str, principal: str, artifact: str) -> str:
    """Whose charges a budget of ``scope`` sums: the principal, the artifact's name, or all."""
    if scope == "principal":
        return principal
    return artifact_name(artifact) if scope == "artifact" else "*"


ChargeRow = tuple[str, str, str, int, float, str | None]


def charge_row(ev: AuditEvent) -> ChargeRow | None:
    """The ledger row a ``key.release`` allow entry stands for, keyed as the gate charges it.

    (charge id: the evidence nonce or else ``audit:<index>``; principal;
    artifact; bytes; time; Grant or break-glass budget id). ``None`` for any
    other entry.
    """
    if ev.action != ACTION or ev.decision != "allow" or ev.nbytes is None:
        return None
    nonce = ev.details.get("nonce")
    cid = nonce if isinstance(nonce, str) and nonce else f"audit:{ev.index}"
    bid = ev.details.get("request_digest") or ev.details.get("break_glass")
    budget_id = bid if isinstance(bid, str) and len(bid) <= _MAX_BUDGET_ID else None
    return (cid, ev.actor, ev.object.split("/", 1)[0], int(ev.nbytes), _event_time(ev),
            budget_id)


class _Window:
    """The charges one window key sees, oldest first, and their running total."""

    __slots__ = ("entries", "total", "window_s")

    def __init__(self, window_s: int, rows: Iterable[tuple[float, int]]) -> None:
        self.window_s = window_s
        self.entries: deque[tuple[float, int]] = deque(rows)
        self.total = sum(n for _, n in self.entries)

    def used(self, t: float, floor: float) -> int:
        """Bytes charged after ``t - window_s``; forgets what no charge at or after ``floor`` sees."""
        q = self.entries
        gone = floor - self.window_s
        while q and q[0][0] <= gone:
            self.total -= q.popleft()[1]
        edge = t - self.window_s
        used = self.total
        for at, n in q:  # only entries in (floor - window, t - window]: few or none
            if at > edge:
                break
            used -= n
        return used

    def add(self, at: float, nbytes: int) -> None:
        """Count a new charge (stamped at or after every charge already counted)."""
        self.entries.append((at, nbytes))
        self.total += nbytes


class _Ledger:
    """What this process knows of the ledger at one generation: budgets, high water, totals.

    Valid only while the database's ``egress_ledger.generation`` equals
    ``generation``; every transaction that changes charges or budgets bumps it,
    so a change by another process (or a rolled-back batch) forces a reload.
    """

    __slots__ = ("budgets", "generation", "high", "hits", "lengths", "spent", "windows")

    def __init__(self, generation: int, budgets: list[Budget], high: float) -> None:
        self.generation = generation
        self.budgets = budgets
        self.high = high
        self.windows: dict[WindowKey, _Window] = {}
        #: Lifetime bytes charged under each Grant / break-glass budget id loaded so far.
        self.spent: dict[str, int] = {}
        self.hits: dict[tuple[str, str], list[tuple[Budget, WindowKey]]] = {}
        self.lengths = {scope: sorted({b.window_s for b in budgets if b.scope == scope})
                        for scope in SCOPES}

    def applicable(self, principal: str, artifact: str) -> list[tuple[Budget, WindowKey]]:
        """The budgets a charge counts against, each with the running total it is checked on."""
        found = self.hits.get((principal, artifact))
        if found is None:
            if len(self.hits) > _MAX_CACHED:
                self.hits.clear()
            found = [(b, (b.scope, _who(b.scope, principal, artifact), b.window_s))
                     for b in applicable(self.budgets, principal, artifact)]
            self.hits[principal, artifact] = found
        return found

    def add(self, principal: str, artifact: str, at: float, nbytes: int) -> None:
        """Count a recorded charge in every loaded total whose filter it matches."""
        windows = self.windows
        for scope in SCOPES:
            if scope == "artifact" and artifact == UNKNOWN_ARTIFACT:
                continue
            who = _who(scope, principal, artifact)
            for length in self.lengths[scope]:
                w = windows.get((scope, who, length))
                if w is not None:
                    w.add(at, nbytes)
        if at > self.high:
            self.high = at

    def prune(self) -> None:
        """Forget totals that hold no charge any more (bounded memory for idle principals)."""
        if len(self.spent) > _MAX_CACHED:
            self.spent.clear()  # reloaded on demand (one query per batch)
        if len(self.windows) > _MAX_CACHED:
            floor = self.high
            for key in [k for k, w in self.windows.items() if w.used(floor, floor) == 0]:
                del self.windows[key]


#: Entries kept in the per-(principal, artifact) and per-window caches before pruning.
_MAX_CACHED = 4096
#: Charge ids checked per ``IN (...)`` query.
_ID_CHUNK = 500
#: Longest budget id ``egress_charges.budget_id`` holds (a request digest is far shorter).
_MAX_BUDGET_ID = 128


class EgressMeter:
    """Byte budgets over sliding windows, charged at key release (``release.EgressMeter``).

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
        self._pg = store.dialect == "postgresql"
        mark = "%s" if self._pg else "?"
        self._mark = mark
        # Statements are built from constants and placeholders only (no values).
        # Locks the row (PostgreSQL) and bumps the generation in one statement.
        self._sql_bump = ("UPDATE egress_ledger SET generation = generation + 1 WHERE id = 1 "
                          "RETURNING generation")
        self._sql_insert = ("INSERT INTO egress_charges (charge_id, principal, artifact, "  # noqa: S608
                            f"nbytes, at, budget_id) VALUES ({mark}, {mark}, {mark}, {mark}, "
                            f"{mark}, {mark})")
        # The totals as of the newest committed generation this process knows.
        self._ledger: _Ledger | None = None
        self._publish_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: list[_PendingCharge] = []
        self._leading = False
        #: Set when a reloaded total fell below what this process knew (rows deleted?).
        self.suspect = threading.Event()
        #: Puts back, inside the given ledger transaction, charges the audit log holds but the
        #: ledger lost; returns how many (the runtime's state guard sets it).
        self.repair: Callable[[Connection], int] | None = None

    # -- transactions ------------------------------------------------------

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); errors become StorageError."""
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"egress ledger transaction failed: {type(exc).__name__}",
                               obj=self.store.url,
                               remedy="check that the database is reachable and writable") from exc

    def _lock_ledger(self, conn: Connection) -> int:
        """Lock the ledger for this transaction and bump its generation; the one before.

        Every transaction that may change charges or budgets calls this first.
        SQLite: the transaction's ``BEGIN IMMEDIATE`` already holds the write
        lock. PostgreSQL: the ``UPDATE`` locks the one state row until commit.
        """
        gen = conn.exec_driver_sql(self._sql_bump).scalar()
        if gen is None:
            raise StorageError("the egress ledger's state row is missing", obj=self.store.url,
                               remedy="run the migrations (Store.open) on this database")
        return int(gen) - 1

    def _changed(self, conn: Connection) -> None:
        """Lock the ledger for a change that invalidates cached totals (reloaded next time)."""
        self._lock_ledger(conn)
        self._ledger = None

    # -- budgets -----------------------------------------------------------

    def _budgets(self, s: Session | Connection) -> list[Budget]:
        merged = dict(self.defaults)
        rows = s.execute(select(EgressBudgetRow.scope, EgressBudgetRow.subject,
                                EgressBudgetRow.window_s, EgressBudgetRow.cap_bytes))
        for scope, subject, window_s, cap in rows:
            b = Budget(cast(Scope, scope), str(subject), int(window_s), int(cap))
            merged[b.key] = b
        return sorted(merged.values(), key=lambda b: b.key)

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

    @staticmethod
    def _where(scope: str, who: str) -> ColumnElement[bool]:
        if scope == "principal":
            return EgressCharge.principal == who
        if scope == "artifact":
            return or_(EgressCharge.artifact == who,
                       EgressCharge.artifact.like(_like_escape(who) + "@%", escape="\\"))
        return EgressCharge.nbytes >= 0

    def _filter(self, b: Budget, principal: str, artifact: str | None) -> ColumnElement[bool]:
        return self._where(b.scope, _who(b.scope, principal, artifact or UNKNOWN_ARTIFACT))

    def _used(self, s: Session, b: Budget, principal: str, artifact: str | None,
              now: float) -> int:
        # No upper bound on time: charges stamped "in the future" (clock stepped back) count.
        total = s.scalar(select(func.coalesce(func.sum(EgressCharge.nbytes), 0))
                         .where(self._filter(b, principal, artifact),
                                EgressCharge.at > now - b.window_s))
        return int(total or 0)

    @staticmethod
    def _high_water(s: Session | Connection) -> float:
        latest = s.execute(select(func.max(EgressCharge.at))).scalar()
        return float(latest) if latest is not None else float("-inf")

    def usage(self, principal: str, artifact: str | None = None,
              now: float | None = None) -> list[BudgetUsage]:
        """Use of every budget that applies to ``principal`` (and ``artifact``) right now."""
        now = self.clock() if now is None else now
        with self.store.session(readonly=True) as s:
            t = max(now, self._high_water(s))
            out = []
            for b in applicable(self._budgets(s), principal, artifact):
                subject = {"principal": principal, "lab": "*",
                           "artifact": artifact_name(artifact or "?")}[b.scope]
                out.append(BudgetUsage(b, subject, self._used(s, b, principal, artifact, t)))
            return out

    # -- deciding ----------------------------------------------------------

    def _current(self, conn: Connection, generation: int) -> _Ledger:
        """The cached ledger if it is still this generation's, else a fresh one (totals lazy)."""
        ledger = self._ledger
        if ledger is None or ledger.generation != generation:
            ledger = _Ledger(generation, self._budgets(conn), self._high_water(conn))
        return ledger

    def _load(self, conn: Connection, ledger: _Ledger, key: WindowKey) -> _Window:
        scope, who, window_s = key
        q = select(EgressCharge.at, EgressCharge.nbytes).where(self._where(scope, who))
        if ledger.high != float("-inf"):
            q = q.where(EgressCharge.at > ledger.high - window_s)
        rows = conn.execute(q.order_by(EgressCharge.at)).all()
        w = _Window(window_s, ((float(at), int(n)) for at, n in rows))
        ledger.windows[key] = w
        return w

    def _charged(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger already holds."""
        found: set[str] = set()
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i:i + _ID_CHUNK]
            marks = ", ".join([self._mark] * len(chunk))
            rows: Any = conn.exec_driver_sql(
                f"SELECT charge_id FROM egress_charges WHERE charge_id IN ({marks})",  # noqa: S608
                tuple(chunk))
            found.update(str(r[0]) for r in rows)
        return found

    def missing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger does not hold (a read; no ledger lock).

        On SQLite a read-only snapshot: it never waits for another connection's write
        lock (the audit log's bound is what a release may wait for).
        """
        try:
            with self.store.engine.connect().execution_options(**{READONLY: True}) as conn:
                return set(ids) - self._charged(conn, ids)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the egress ledger: {type(exc).__name__}",
                               obj=self.store.url,
                               remedy="check that the database is reachable") from exc

    def _budget_totals(self, conn: Connection, ids: Sequence[str]) -> dict[str, int]:
        """Bytes the ledger holds under each of ``ids`` (lifetime, no window).

        One grouped query per :data:`_ID_CHUNK` ids, answered from the
        ``(budget_id, nbytes)`` index alone.
        """
        found = dict.fromkeys(ids, 0)
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i:i + _ID_CHUNK]
            marks = ", ".join([self._mark] * len(chunk))
            rows: Any = conn.exec_driver_sql(
                "SELECT budget_id, coalesce(sum(nbytes), 0) FROM egress_charges "  # noqa: S608
                f"WHERE budget_id IN ({marks}) GROUP BY budget_id", tuple(chunk))
            found.update((str(bid), int(total or 0)) for bid, total in rows)
        return found

    def _decide(self, conn: Connection, batch: Sequence[_PendingCharge]) -> None:
        """Decide ``batch`` in arrival order inside ``conn``'s transaction; fill in each outcome.

        Each charge sees the ones before it. The totals are taken out of the
        cache and updated as the rows are written; they go back (:meth:`_publish`)
        only once the transaction is known to have committed.
        """
        generation = self._lock_ledger(conn)
        previous = self._ledger
        self._ledger = None  # nobody may use totals that this transaction is changing
        ledger, fresh = self._prepare(conn, self._current(conn, generation), batch)
        if previous is not None and ledger is not previous and self._fell(previous, ledger):
            # Charges leave a total only by ageing out or by a refund: rows deleted behind
            # the meter's back look the same. The runtime's repair puts back, in this very
            # transaction, the rows whose releases the audit log holds; the totals are then
            # read again, so this batch is decided on the ledger the log vouches for.
            self.suspect.set()
            if self.repair is not None and self.repair(conn):
                fresh_ledger = _Ledger(generation, ledger.budgets, self._high_water(conn))
                ledger, fresh = self._prepare(conn, fresh_ledger, batch)
        spent = ledger.spent
        rows: list[tuple[str, str, str, int, float, str | None]] = []
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
                ledger.add(it.principal, it.artifact, t, it.nbytes)
                if bid is not None:
                    spent[bid] += it.nbytes
        if rows:
            conn.exec_driver_sql(self._sql_insert, rows)
        ledger.generation = generation + 1
        ledger.prune()
        for it in batch:
            it.decided = ledger

    def _prepare(self, conn: Connection, ledger: _Ledger, batch: Sequence[_PendingCharge]
                 ) -> tuple[_Ledger, list[_PendingCharge]]:
        """Mark replays in ``batch``; load every total its new charges need (under the lock)."""
        seen = self._charged(conn, [it.charge_id for it in batch])
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
                    self._load(conn, ledger, key)
        # Lifetime budgets: totals of this generation (read under the ledger lock when not
        # known yet), counted here as rows are decided, like the window totals.
        spent = ledger.spent
        missing = list(dict.fromkeys(it.budget[0] for it in fresh
                                     if it.budget is not None and it.budget[0] not in spent))
        if missing:
            spent.update(self._budget_totals(conn, missing))
        return ledger, fresh

    @staticmethod
    def _fell(previous: _Ledger, ledger: _Ledger) -> bool:
        """Whether a reloaded total counts less than the cached one did (at the same time)."""
        at = max(ledger.high, previous.high)
        for key, w in ledger.windows.items():
            old = previous.windows.get(key)
            if old is not None and w.used(at, at) < old.used(at, at):
                return True
        return any(bid in ledger.spent and ledger.spent[bid] < used
                   for bid, used in previous.spent.items())

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
        if budget is not None and (not budget[0] or len(budget[0]) > _MAX_BUDGET_ID
                                   or budget[1] < 0):
            raise InvalidInput(f"a byte budget needs an id of 1 to {_MAX_BUDGET_ID} "
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

    # AppendGuard
    def admit(self, conn: Connection, claims: Sequence[Any]) -> list[bool]:
        """Decide the claims (:class:`_PendingCharge`) in the audit batch's transaction."""
        self._decide(conn, claims)
        return [it.admitted for it in claims]

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
            with self._lock, self._begin() as conn:
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
        by_id = {row[0]: row for row in rows}
        if not by_id:
            return 0
        with self._lock, self._begin() as conn:
            self._changed(conn)
            held = self.held(conn, list(by_id))
            new = [row for cid, row in by_id.items() if cid not in held]
            self.insert(conn, new)
        return len(new)

    def held(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger holds, read in ``conn``'s transaction."""
        return self._charged(conn, ids)

    def insert(self, conn: Connection, rows: Sequence[ChargeRow]) -> None:
        """Insert ledger rows in ``conn``'s transaction (the caller holds the ledger lock)."""
        if rows:
            conn.exec_driver_sql(self._sql_insert, list(rows))

    def backfill(self, audit: AuditLog, now: float | None = None) -> int:
        """Charge the audit log's releases inside the longest window that the ledger lacks."""
        now = self.clock() if now is None else now
        horizon = now - max((b.window_s for b in self.budgets()), default=DAY)
        end = audit.size()
        added = 0
        while end > 0:
            start = max(0, end - 2000)
            events = audit.events(start, end)
            added += self.record_events(events)
            if not events or _event_time(events[0]) <= horizon:
                break
            end = start
        return added

    # -- reporting ---------------------------------------------------------

    def time_to_exfiltrate(self, artifacts: Iterable[tuple[str, int]], *,
                           compression: float = 1.0,
                           principal: str = "*") -> list[ExfiltrationEstimate]:
        """For each (artifact, size): size ÷ compression ÷ the tightest applicable cap rate.

        ``compression`` is original ÷ compressed size of what must cross the
        budget (1.0: bf16 weights barely compress). ``min_seconds`` is the
        shortest wall time a patient thief needs: a full cap now, then one per
        window.
        """
        if compression <= 0:
            raise InvalidInput("the compression factor must be > 0", obj="exfiltration report")
        budgets = self.budgets()
        out = []
        for ref, size in artifacts:
            hits = applicable(budgets, principal, ref)
            moved = size / compression
            binding = min(hits, key=lambda b: b.rate, default=None)
            if binding is None or binding.cap_bytes == 0:
                rate = math.inf if binding is None else 0.0
                seconds = 0.0 if binding is None else math.inf
                min_seconds = seconds
            else:
                rate = binding.rate
                seconds = moved / rate
                min_seconds = max((math.ceil(moved / b.cap_bytes) - 1) * b.window_s
                                     for b in hits if b.cap_bytes)
            out.append(ExfiltrationEstimate(ref, size, compression, binding, rate, seconds,
                                            float(min_seconds)))
        return out

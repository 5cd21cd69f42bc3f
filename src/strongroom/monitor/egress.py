"""Egress budgets: how many bytes of weights may leave, per principal, per artifact, lab-wide.

The release gate charges every shard's size *before* its file key leaves;
:class:`EgressMeter` implements :class:`strongroom.release.EgressMeter`::

    meter = EgressMeter(store, alerts=alerts, budgets=[
        Budget("principal", "*", 24 * 3600, 256 * GiB),   # each person or service
        Budget("artifact", "*", 24 * 3600, 512 * GiB),    # each model, all principals together
        Budget("lab", "*", 24 * 3600, 4 * TiB),           # everything
    ])
    meter.charge("alice", shard_size, time.time(), artifact="atlas-70b@3", charge_id=nonce)
    meter.refund("alice", shard_size, now, charge_id=nonce)      # the audit append failed
    meter.time_to_exfiltrate([("atlas-70b@3", 140 * GiB)])       # how long a full theft takes

Rules it keeps:

* **Hard stop at the cap, warning before it.** A charge that would take any
  applicable budget over its cap raises :class:`~strongroom.errors.BudgetExceeded`
  and records nothing (and raises a ``high`` alert once per window); a charge
  that crosses ``warn_fraction`` of a cap raises a ``warning`` alert.
* **Durable and shared.** Charges live in ``egress_charges``; the check and the
  insert run in one transaction that holds the store's write lock (SQLite's
  ``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on PostgreSQL), so
  several gates on one database, a restart, or a budget change in flight never
  let more through than the cap in force when the charge was decided.
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

import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, delete, func, or_, select, text
from sqlalchemy.orm import Session

from strongroom.errors import BudgetExceeded, InvalidInput
from strongroom.monitor.alerts import Alert
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
    "TiB",
    "applicable",
    "artifact_name",
]

GiB = 1024**3
TiB = 1024**4
DAY = 24 * 3600
Scope = Literal["principal", "artifact", "lab"]
SCOPES: tuple[Scope, ...] = ("principal", "artifact", "lab")
#: The PostgreSQL advisory lock every charge and budget change takes.
_PG_LOCK_KEY = 0x5352_4547  # "SREG"
#: A clock that is this many seconds behind the ledger's newest charge is reported.
CLOCK_SKEW_TOLERANCE_S = 2.0
UNKNOWN_ARTIFACT = "?"
ACTION = "key.release"


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


def _like_escape(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class _PendingCharge:
    """One charge waiting for its batch; the leader fills in the outcome."""

    principal: str
    nbytes: int
    now: float
    artifact: str
    charge_id: str
    t: float = 0.0
    done: bool = False
    duplicate: bool = False
    clock_back: float = 0.0
    refused: tuple[Budget, int] | None = None
    warnings: list[tuple[Budget, int]] = field(default_factory=list)
    error: BaseException | None = None


def _usage_key(b: Budget, principal: str, artifact: str) -> tuple[Any, ...]:
    """What a budget's running total is kept per: the principal, the artifact name, or the lab."""
    subject = {"principal": principal, "artifact": artifact_name(artifact), "lab": "*"}[b.scope]
    return (*b.key, subject)


class EgressMeter:
    """Byte budgets over sliding windows, charged at key release (``release.EgressMeter``)."""

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
        self._lock = threading.Lock()
        self._pg = store.dialect == "postgresql"
        self._cond = threading.Condition()
        self._queue: list[_PendingCharge] = []
        self._leading = False

    # -- budgets -----------------------------------------------------------

    def _lock_ledger(self, s: Session) -> None:
        # SQLite: the session's BEGIN IMMEDIATE already holds the write lock.
        if self._pg:
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})

    def _budgets(self, s: Session) -> list[Budget]:
        merged = dict(self.defaults)
        for row in s.scalars(select(EgressBudgetRow)):
            b = Budget(row.scope, row.subject, row.window_s, row.cap_bytes)  # type: ignore[arg-type]
            merged[b.key] = b
        return sorted(merged.values(), key=lambda b: b.key)

    def budgets(self) -> list[Budget]:
        """Every budget in force: stored ones over the defaults."""
        with self.store.session() as s:
            return self._budgets(s)

    def set_budget(self, budget: Budget) -> None:
        """Store (or replace) a budget; charges decided after this returns obey it."""
        with self._lock, self.store.session() as s:
            self._lock_ledger(s)
            row = s.get(EgressBudgetRow, budget.key)
            if row is None:
                s.add(EgressBudgetRow(scope=budget.scope, subject=budget.subject,
                                      window_s=budget.window_s, cap_bytes=budget.cap_bytes,
                                      updated_at=datetime.now(UTC)))
            else:
                row.cap_bytes = budget.cap_bytes
                row.updated_at = datetime.now(UTC)

    # -- usage -------------------------------------------------------------

    def _filter(self, b: Budget, principal: str, artifact: str | None) -> ColumnElement[bool]:
        if b.scope == "principal":
            return EgressCharge.principal == principal
        if b.scope == "artifact":
            name = artifact_name(artifact or UNKNOWN_ARTIFACT)
            return or_(EgressCharge.artifact == name,
                       EgressCharge.artifact.like(_like_escape(name) + "@%", escape="\\"))
        return EgressCharge.nbytes >= 0

    def _used(self, s: Session, b: Budget, principal: str, artifact: str | None,
              now: float) -> int:
        # No upper bound on time: charges stamped "in the future" (clock stepped back) count.
        total = s.scalar(select(func.coalesce(func.sum(EgressCharge.nbytes), 0))
                         .where(self._filter(b, principal, artifact),
                                EgressCharge.at > now - b.window_s))
        return int(total or 0)

    def _high_water(self, s: Session) -> float:
        latest = s.scalar(select(func.max(EgressCharge.at)))
        return float(latest) if latest is not None else float("-inf")

    def usage(self, principal: str, artifact: str | None = None,
              now: float | None = None) -> list[BudgetUsage]:
        """Use of every budget that applies to ``principal`` (and ``artifact``) right now."""
        now = self.clock() if now is None else now
        with self.store.session() as s:
            t = max(now, self._high_water(s))
            out = []
            for b in applicable(self._budgets(s), principal, artifact):
                subject = {"principal": principal, "lab": "*",
                           "artifact": artifact_name(artifact or "?")}[b.scope]
                out.append(BudgetUsage(b, subject, self._used(s, b, principal, artifact, t)))
            return out

    # -- charging ----------------------------------------------------------

    def charge(self, principal: str, nbytes: int, now: float, *, artifact: str | None = None,
               charge_id: str | None = None) -> None:
        """Record the bytes or raise BudgetExceeded (then nothing is recorded).

        Concurrent charges are group-committed: one caller leads and decides a
        whole batch in one ledger transaction (in arrival order, each seeing
        the ones before it), so the ledger costs one commit per batch rather
        than one per release, with the same all-or-nothing, cap-exact result.
        """
        if nbytes < 0 or not principal:
            raise InvalidInput("a charge needs a principal and a size >= 0",
                               obj=principal or "egress charge")
        item = _PendingCharge(principal, nbytes, now, artifact or UNKNOWN_ARTIFACT,
                              charge_id or f"auto:{secrets.token_hex(12)}")
        self._group_commit(item)
        if item.error is not None:
            raise item.error
        if item.duplicate:
            return  # already charged: a retry or a replay
        principal, artifact, t = item.principal, item.artifact, item.t
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
            self._decide(batch)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()

    def _decide(self, batch: list[_PendingCharge]) -> None:
        """Decide and record ``batch`` in one ledger transaction; fill in each outcome."""
        try:
            with self._lock, self.store.session() as s:
                self._lock_ledger(s)
                budgets = self._budgets(s)
                high = self._high_water(s)
                used: dict[tuple[Any, ...], int] = {}
                taken: set[str] = set()
                for it in batch:
                    if it.charge_id in taken or s.get(EgressCharge, it.charge_id) is not None:
                        it.duplicate = True
                        continue
                    if it.now < high - CLOCK_SKEW_TOLERANCE_S:
                        it.clock_back = high - it.now
                    it.t = t = max(it.now, high)
                    hits = applicable(budgets, it.principal, it.artifact)
                    for b in hits:
                        key = _usage_key(b, it.principal, it.artifact)
                        if key not in used:
                            used[key] = self._used(s, b, it.principal, it.artifact, t)
                        so_far = used[key]
                        if so_far + it.nbytes > b.cap_bytes:
                            it.refused = (b, so_far)
                            break
                        if so_far < self.warn_fraction * b.cap_bytes <= so_far + it.nbytes:
                            it.warnings.append((b, so_far + it.nbytes))
                    if it.refused is not None:
                        it.warnings.clear()
                        continue
                    s.add(EgressCharge(charge_id=it.charge_id, principal=it.principal,
                                       artifact=it.artifact, nbytes=it.nbytes, at=t))
                    taken.add(it.charge_id)
                    for b in hits:
                        used[_usage_key(b, it.principal, it.artifact)] += it.nbytes
                    high = max(high, t)
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
            self._lock_ledger(s)
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
        audit index, so replaying the same events charges nothing twice. Caps
        are not checked: these bytes already left.
        """
        added = 0
        with self._lock, self.store.session() as s:
            self._lock_ledger(s)
            for ev in events:
                if ev.action != ACTION or ev.decision != "allow" or ev.nbytes is None:
                    continue
                nonce = ev.details.get("nonce")
                cid = nonce if isinstance(nonce, str) and nonce else f"audit:{ev.index}"
                if s.get(EgressCharge, cid) is not None:
                    continue
                at = datetime.fromisoformat(ev.time.replace("Z", "+00:00")).timestamp()
                s.add(EgressCharge(charge_id=cid, principal=ev.actor,
                                   artifact=ev.object.split("/", 1)[0], nbytes=int(ev.nbytes),
                                   at=at))
                s.flush()
                added += 1
        return added

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
            if not events or datetime.fromisoformat(
                    events[0].time.replace("Z", "+00:00")).timestamp() <= horizon:
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

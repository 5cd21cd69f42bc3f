"""The deployment's monitor loop: every detector over the audit log as it grows, one per database.

DESIGN rule 3, "detection runs where decisions happen": each key service
starts a :class:`MonitorLoop` when it unseals and stops it when it seals, so
``strongroom serve`` (its agent), ``strongroom unseal``'s agent and every
other host sharing the database run one. Only the holder of the database's
lease (``monitor_leases``, :class:`MonitorLease`) scans, so two hosts never
alert twice; it renews the lease every interval, and when it stops renewing
(sealed, killed) another host takes the lease over once it lapses. The lease
row carries the cursor (entries processed) and the time the holder last
caught up with the log's head, so a takeover resumes where the last holder
stopped and ``posture assess`` can tell a running loop from a stopped one
(:func:`read_lease`).

On taking the lease a loop primes its detectors' baselines by replaying the
entries of the last ``replay_days`` up to the cursor without alerting (as the
demo's replay does), then raises alerts only for entries past it; alerts go
through the key service's :class:`~strongroom.monitor.alerts.AlertManager`
(stored, audited, delivered to the sinks, de-duplicated by key); after each
scan it leads, ``after_scan`` wakes the delivery of the routes of
``alerts.yaml`` (:mod:`strongroom.monitor.alert_outbox`).
The first loop ever to run on a database starts its cursor at the log's head:
what happened before detection existed is not alerted on.

    loop = MonitorLoop(audit, alerts, engine_factory, MonitorLease(store, owner="host-a"))
    loop.start()                    # a daemon thread: tick() every interval_s
    loop.tick()                     # or one step by hand: renew or take the lease, scan
    loop.stop()                     # releases the lease: another host takes over at once
    read_lease(store)               # the holder, its cursor and when it last caught up

Settings (environment): ``STRONGROOM_MONITOR_INTERVAL_S`` (default 1 s),
``STRONGROOM_MONITOR_LEASE_S`` (default five intervals),
``STRONGROOM_MONITOR_REPLAY_DAYS`` (default 45: longer than the detectors'
learning period and an escalation case's lifetime).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.errors import StorageError, StrongroomError
from strongroom.monitor.detectors import AuditScanner, RiskEngine, default_detectors
from strongroom.store.tables.monitor import MonitorLease as LeaseRow

if TYPE_CHECKING:
    from strongroom.access.directory import DirectoryReader
    from strongroom.audit.log import AuditLog
    from strongroom.keys.keyring import Keyring
    from strongroom.monitor.alerts import AlertManager, StoredAlert
    from strongroom.store.db import Store

__all__ = ["LEASE_NAME", "LeaseState", "MonitorLease", "MonitorLoop", "MonitorSettings",
           "break_glass_reviews", "deployment_engine", "read_lease"]

#: The lease (and cursor) of the deployment's detectors in ``monitor_leases``.
LEASE_NAME = "detectors"
_DAY = 86400.0
_log = logging.getLogger(__name__)


class MonitorSettings(BaseSettings):
    """How often the monitor loop runs, how long its lease lasts, how far back it primes."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_MONITOR_", extra="ignore")

    interval_s: float = Field(default=1.0, gt=0, le=60,
                              description="how often the loop scans new audit entries")
    lease_s: float | None = Field(default=None, gt=0, le=600,
                                  description="lease lifetime (default: five intervals)")
    replay_days: float = Field(default=45.0, ge=0, le=3650,
                               description="days of log replayed to prime the baselines")

    @property
    def lease_ttl_s(self) -> float:
        """The lease's lifetime: ``lease_s``, or five intervals."""
        return self.lease_s if self.lease_s is not None else 5 * self.interval_s


@dataclass(frozen=True)
class LeaseState:
    """The lease row as read: holder, cursor and times (seconds since the epoch)."""

    owner: str
    token: str
    cursor: int
    acquired_at: float
    heartbeat_at: float
    caught_up_at: float
    expires_at: float
    interval_s: float


def read_lease(store: Store, name: str = LEASE_NAME) -> LeaseState | None:
    """The monitor lease of the database (``None``: no loop has ever run on it)."""
    with store.session(readonly=True) as s:
        row = s.get(LeaseRow, name)
        if row is None:
            return None
        return LeaseState(row.owner, row.token, int(row.cursor), row.acquired_at,
                          row.heartbeat_at, row.caught_up_at, row.expires_at, row.interval_s)


class LeaseLost(StrongroomError):
    """Another loop holds the lease now: this one stops scanning."""


class MonitorLease:
    """One contender for the database's monitor lease (``owner``: this host's id)."""

    def __init__(self, store: Store, owner: str, *, ttl_s: float = 5.0, interval_s: float = 1.0,
                 name: str = LEASE_NAME, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.owner = owner
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.name = name
        self.clock = clock
        self.token = secrets.token_hex(16)

    def acquire(self, head: int) -> bool:
        """Renew the lease when held, take it when free or lapsed; True when this one holds it.

        ``head`` (the log's size now) is the cursor of a lease row created here:
        the first loop on a database does not alert on what came before it.
        """
        now = self.clock()
        with self.store.session() as s:
            renewed = s.execute(update(LeaseRow).where(
                LeaseRow.name == self.name, LeaseRow.token == self.token
            ).values(expires_at=now + self.ttl_s, heartbeat_at=now)).rowcount  # type: ignore[attr-defined]
            if renewed == 1:
                return True
            taken = s.execute(update(LeaseRow).where(
                LeaseRow.name == self.name, LeaseRow.expires_at < now,
            ).values(owner=self.owner, token=self.token, acquired_at=now, heartbeat_at=now,
                     expires_at=now + self.ttl_s, interval_s=self.interval_s)).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                return True
            if s.get(LeaseRow, self.name) is not None:
                return False
        try:
            with self.store.session() as s:
                s.add(LeaseRow(name=self.name, owner=self.owner, token=self.token, cursor=head,
                               acquired_at=now, heartbeat_at=now, caught_up_at=now,
                               expires_at=now + self.ttl_s, interval_s=self.interval_s))
        except StorageError as exc:
            if isinstance(exc.__cause__, DbIntegrityError):  # another host created it first
                return False
            raise
        return True

    def cursor(self) -> int:
        """The entries processed so far (0 when there is no lease row)."""
        with self.store.session(readonly=True) as s:
            value = s.scalar(select(LeaseRow.cursor).where(LeaseRow.name == self.name))
            return int(value or 0)

    def advance(self, cursor: int, caught_up_at: float | None = None) -> None:
        """Record progress (never backwards) and renew; raises :class:`LeaseLost` if not held."""
        now = self.clock()
        values: dict[str, object] = {
            "cursor": case((LeaseRow.cursor < cursor, cursor), else_=LeaseRow.cursor),
            "heartbeat_at": now, "expires_at": now + self.ttl_s}
        if caught_up_at is not None:
            values["caught_up_at"] = caught_up_at
        with self.store.session() as s:
            done = s.execute(update(LeaseRow).where(
                LeaseRow.name == self.name, LeaseRow.token == self.token
            ).values(values)).rowcount  # type: ignore[attr-defined]
        if done != 1:
            raise LeaseLost("another monitor loop holds the lease", obj=self.name)

    def release(self) -> None:
        """Give the lease up (at seal): another host may take it at its next tick."""
        with contextlib.suppress(StrongroomError), self.store.session() as s:
            s.execute(update(LeaseRow).where(
                LeaseRow.name == self.name, LeaseRow.token == self.token
            ).values(expires_at=0.0))


class _LeaseScanner(AuditScanner):
    """An :class:`AuditScanner` whose cursor is the lease's, saved only while it is held."""

    def __init__(self, audit: AuditLog, engine: RiskEngine, alerts: AlertManager,
                 lease: MonitorLease, *, start: int, stopped: threading.Event) -> None:
        super().__init__(audit, engine, alerts, name=lease.name, start=start)
        self.lease = lease
        self.stopped = stopped
        self._head = 0
        self._head_at = 0.0

    def _cursor(self) -> int:
        return self.lease.cursor()

    def _save(self, position: int) -> None:
        if self.stopped.is_set():
            raise LeaseLost("the monitor loop is stopping", obj=self.lease.name)
        caught_up = self._head_at if position >= self._head else None
        self.lease.advance(position, caught_up)

    def scan(self, page: int = 5000) -> list[StoredAlert]:
        """Process every entry not yet seen; the lease records when it last caught up."""
        self._head_at = self.lease.clock()
        self._head = self.audit.size()
        return super().scan(page)


def first_index_since(audit: AuditLog, since: float, end: int) -> int:
    """The first entry below ``end`` written at or after ``since`` (a binary search by time)."""
    lo, hi = 0, end
    while lo < hi:
        mid = (lo + hi) // 2
        if audit.events(mid, mid + 1)[0].at < since:
            lo = mid + 1
        else:
            hi = mid
    return lo


class MonitorLoop:
    """Runs the detectors over the audit log every interval while it holds the lease."""

    def __init__(self, audit: AuditLog, alerts: AlertManager,
                 engine_factory: Callable[[], RiskEngine], lease: MonitorLease, *,
                 interval_s: float = 1.0, replay_s: float = 45 * _DAY) -> None:
        self.audit = audit
        self.alerts = alerts
        self.engine_factory = engine_factory
        self.lease = lease
        self.interval_s = interval_s
        self.replay_s = replay_s
        self._scanner: _LeaseScanner | None = None
        #: Called after each scan this loop leads: the alert routes' delivery step
        #: (:class:`~strongroom.monitor.alert_outbox.RouteDeliverer`), so only the leader delivers.
        self.after_scan: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def leading(self) -> bool:
        """True while this loop holds the lease (as of its last tick)."""
        return self._scanner is not None

    def tick(self) -> list[StoredAlert]:
        """Renew or take the lease; when held, scan the new entries and return the alerts raised."""
        with self._lock:
            if not self.lease.acquire(self.audit.size()):
                self._scanner = None  # a later takeover primes afresh
                return []
            if self._scanner is None:
                cursor = self.lease.cursor()
                start = first_index_since(self.audit, self.lease.clock() - self.replay_s,
                                          min(cursor, self.audit.size()))
                self._scanner = _LeaseScanner(self.audit, self.engine_factory(), self.alerts,
                                              self.lease, start=start, stopped=self._stop)
                _log.info("monitor: %s leads, priming from entry %d, alerting from %d",
                          self.lease.owner, start, cursor)
            try:
                raised = self._scanner.scan()
                raised += self._scanner.due(self.lease.clock())  # an overdue review
            except LeaseLost:
                self._scanner = None
                return []
        if self.after_scan is not None:
            self.after_scan()
        return raised

    def start(self) -> None:
        """Tick in a daemon thread every ``interval_s`` until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="strongroom-monitor",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except StrongroomError as exc:  # the database is away: try again next tick
                _log.warning("monitor: %s", exc.message)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop the thread (a replay stops at its next page) and give the lease up (at seal)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            self._scanner = None
            self.lease.release()


def deployment_engine(keyring: Keyring, store: Store, principal_cap: int) -> RiskEngine:
    """The deployment's risk engine: peers from the officer-signed directory, canaries, the cap."""
    from strongroom.access.directory import DirectoryReader
    from strongroom.monitor.canaries import CanaryRegistry
    from strongroom.monitor.peers import SignedDirectoryPeers

    reader = DirectoryReader(store, keyring.officers, keyring.officer_threshold,
                             mldsa=keyring.officer_mldsa)
    return RiskEngine(directory=SignedDirectoryPeers(reader),
                      canaries=CanaryRegistry(store).names,
                      principal_cap=(principal_cap, int(_DAY)),
                      detectors=default_detectors(review_state=break_glass_reviews(store, reader)))


def break_glass_reviews(store: Store, reader: DirectoryReader
                        ) -> Callable[[str], tuple[bool, list[str]]]:
    """Whether a break-glass has its quorum of reviews, checked from the stored statements.

    Reviews are verified against the officer-signed directory (identity or security-key
    signatures, :func:`strongroom.access.breakglass.review_status`). A break-glass whose
    statement is missing from the store cannot have a review verified: not reviewed.
    """
    from strongroom.access import statements
    from strongroom.access.breakglass import BreakGlass, review_status

    def state(bg_id: str) -> tuple[bool, list[str]]:
        env = statements.by_digest(store, bg_id)
        if env is None:
            return False, []
        try:
            bg = BreakGlass.from_statement(statements.unverified_payload(env), bg_id)
        except StrongroomError:
            return False, []
        return review_status(bg, statements.envelopes(store, "review", subject=bg_id),
                             reader.view(), reader.cache)

    return state

"""The durable outbox of the alert routes: every alert reaches every route it passes, at least once.

The monitor loop's leader runs it (one deliverer per database, so two hosts
do not both deliver)::

    outbox = RouteOutbox(store, load_alerts_config(alerts_config_path(home)))
    outbox.step()                      # enqueue new alerts per route, deliver what is due
    outbox.entries()                   # pending and failed deliveries (`strongroom alerts outbox`)
    deliverer = RouteDeliverer(outbox, leading=lambda: loop.leading)
    deliverer.start(); deliverer.wake(); deliverer.stop()

How nothing is lost:

* **Fed from the alerts table.** An alert is stored (and audited) before
  anything is sent; each round, every alert above the route's ``floor`` that
  has no row for the route gets one in ``alert_deliveries`` — ``pending``, or
  ``skipped`` by the route's filter. Whichever process raised the alert (the
  agent, the server, a CLI), the leader picks it up; a route seen for the first
  time is fed the alerts of the last ``delivery.backfill_s`` seconds.
* **Kept until accepted.** A pending row leaves that state only when the
  receiver accepted it (``delivered``) or refused that payload for good
  (``failed``: HTTP 4xx, kept and listed; ``requeue_failed`` sends it again).
  A receiver that is down backs its route off exponentially with jitter
  (``delivery.backoff_*``), in order, with no limit on attempts.
* **At least once, de-duplicable.** Every payload carries
  ``idempotency_key`` = ``strongroom-alert-<id>``; a crash between sending and
  recording, or a leadership change mid-send, may repeat a delivery, never drop
  one. A route is claimed (``alert_routes.retry_at`` moved ahead) before it is
  sent to, so two deliverers never send the same batch at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.errors import StorageError, StrongroomError
from strongroom.monitor.alert_config import (
    AlertsConfig,
    SyslogRoute,
    WebhookRoute,
    load_alerts_config,
)
from strongroom.monitor.alert_senders import Outcome, Sender, sender_for
from strongroom.monitor.alerts import StoredAlert
from strongroom.store.tables.monitor import AlertDelivery, AlertRow, RouteState

if TYPE_CHECKING:
    from strongroom.store.db import Store

__all__ = ["OutboxEntry", "RouteDeliverer", "RouteOutbox", "route_deliverer", "sample_payload"]

#: An alert older than this is assumed committed: a route's floor may move past it.
FLOOR_GRACE_S = 300.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxEntry:
    """One delivery as ``strongroom alerts outbox`` lists it (no secrets: route names only)."""

    id: int
    alert_id: int
    route: str
    state: str
    rule: str
    severity: str
    attempts: int
    created_at: float
    last_attempt_at: float | None
    delivered_at: float | None
    next_attempt_at: float | None
    last_error: str | None
    configured: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dict(self.__dict__)


def sample_payload(now: float | None = None) -> dict[str, Any]:
    """A synthetic alert for ``strongroom alerts test``: rule SR-TEST, its own idempotency key."""
    key = f"strongroom-test-{secrets.token_hex(8)}"
    at = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return {"id": 0, "rule": "SR-TEST", "severity": "info", "subject": "strongroom",
            "object": "alerts.yaml", "message": "test alert from `strongroom alerts test`",
            "details": {"test": True}, "dedup_key": key, "time": at.isoformat(),
            "idempotency_key": key, "test": True}


class RouteOutbox:
    """Enqueues new alerts per route and delivers them with back-off; see the module docstring."""

    def __init__(self, store: Store, config: AlertsConfig, *,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 senders: Mapping[str, Sender] | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.rng = rng
        self._senders: dict[str, Sender] = dict(senders or {})

    # -- enqueue -----------------------------------------------------------

    def _state(self, route: WebhookRoute | SyslogRoute) -> RouteState | None:
        """The route's row, created on first sight with the backfill floor."""
        with self.store.session() as s:
            row = s.get(RouteState, route.name)
            if row is not None:
                s.expunge(row)
                return row
            cutoff = datetime.fromtimestamp(self.clock() - self.config.delivery.backfill_s, UTC)
            floor = s.scalar(select(func.max(AlertRow.id)).where(AlertRow.first_seen < cutoff))
        try:
            with self.store.session() as s:
                row = RouteState(name=route.name, floor=int(floor or 0), created_at=self.clock(),
                                 failures=0, retry_at=0.0, last_error=None)
                s.add(row)
                s.flush()
                s.expunge(row)
                return row
        except StorageError as exc:
            if isinstance(exc.__cause__, DbIntegrityError):  # another host created it first
                return None
            raise

    def enqueue(self) -> int:
        """Give every route a row for each alert above its floor that has none; return how many."""
        added = 0
        for route in self.config.routes:
            state = self._state(route)
            if state is None:
                continue
            try:
                added += self._enqueue_route(route, state.floor)
            except StorageError as exc:
                if not isinstance(exc.__cause__, DbIntegrityError):
                    raise  # else another deliverer enqueued the same alerts: next round
        return added

    def _enqueue_route(self, route: WebhookRoute | SyslogRoute, floor: int) -> int:
        batch = self.config.delivery.batch
        now = self.clock()
        settled = datetime.fromtimestamp(now - FLOOR_GRACE_S, UTC)
        has_row = select(AlertDelivery.id).where(AlertDelivery.alert_id == AlertRow.id,
                                                 AlertDelivery.route == route.name).exists()
        with self.store.session() as s:
            new_floor = s.scalar(select(func.max(AlertRow.id)).where(
                AlertRow.id > floor, AlertRow.first_seen < settled))
            rows = list(s.scalars(select(AlertRow).where(AlertRow.id > floor, ~has_row)
                                  .order_by(AlertRow.id).limit(batch)))
            for row in rows:
                alert = StoredAlert._from_row(row)
                payload = {**alert.payload(), "idempotency_key": f"strongroom-alert-{row.id}"}
                s.add(AlertDelivery(
                    alert_id=row.id, route=route.name,
                    state="pending" if route.accepts(row.severity, row.rule) else "skipped",
                    payload=json.dumps(payload, sort_keys=True, default=str), attempts=0,
                    created_at=now))
            if len(rows) < batch and new_floor:  # caught up: older alerts all have rows
                s.execute(update(RouteState).where(RouteState.name == route.name,
                                                   RouteState.floor < new_floor)
                          .values(floor=new_floor))
        return len(rows)

    # -- delivery ----------------------------------------------------------

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failed rounds (jittered exponential)."""
        conf = self.config.delivery
        delay = min(conf.backoff_max_s, conf.backoff_initial_s * 2.0 ** max(0, failures - 1))
        return delay * (1.0 - conf.jitter * self.rng())

    def _sender(self, route: WebhookRoute | SyslogRoute) -> Sender:
        if route.name not in self._senders:
            self._senders[route.name] = sender_for(route, self.config.delivery)
        return self._senders[route.name]

    def _send(self, route: WebhookRoute | SyslogRoute,
              payloads: list[dict[str, Any]]) -> list[Outcome]:
        try:
            return self._sender(route).send(payloads)
        except (ssl.SSLError, OSError, ValueError) as exc:  # a CA or key file that will not load
            return [Outcome("retry", f"route {route.name}: cannot set up its TLS "
                                     f"({type(exc).__name__}: {str(exc)[:200]})")]

    def deliver(self) -> int:
        """Send what is due on every route; return how many deliveries the receivers accepted."""
        return sum(self._deliver_route(route) for route in self.config.routes)

    def _deliver_route(self, route: WebhookRoute | SyslogRoute) -> int:
        now = self.clock()
        with self.store.session(readonly=True) as s:
            due = [(r.id, r.payload, r.attempts) for r in s.scalars(
                select(AlertDelivery).where(AlertDelivery.route == route.name,
                                            AlertDelivery.state == "pending")
                .order_by(AlertDelivery.id).limit(self.config.delivery.batch))]
        if not due:
            return 0
        claim = now + self.config.delivery.timeout_s * (len(due) + 1) + 5.0
        with self.store.session() as s:
            held = s.execute(update(RouteState).where(
                RouteState.name == route.name, RouteState.retry_at <= now
            ).values(retry_at=claim)).rowcount  # type: ignore[attr-defined]
            failures = s.scalar(select(RouteState.failures).where(RouteState.name == route.name))
        if held != 1:
            return 0  # backing off, or another deliverer holds it
        outcomes = self._send(route, [json.loads(p) for _, p, _ in due])
        done = self.clock()
        retry = next((o for o in outcomes if o.state == "retry"), None)
        with self.store.session() as s:
            for (row_id, _, attempts), outcome in zip(due, outcomes, strict=False):
                values: dict[str, object] = {"attempts": attempts + 1, "last_attempt_at": done,
                                             "last_error": outcome.error}
                if outcome.state != "retry":
                    values["state"] = outcome.state
                if outcome.state == "delivered":
                    values["delivered_at"] = done
                s.execute(update(AlertDelivery).where(AlertDelivery.id == row_id).values(values))
            if retry is not None:
                untried = [row_id for row_id, _, _ in due[len(outcomes):]]
                if untried:  # queued behind the one that failed: they wait for the same reason
                    s.execute(update(AlertDelivery).where(AlertDelivery.id.in_(untried))
                              .values(last_error=retry.error))
                count = int(failures or 0) + 1
                wait = self.backoff(count)
                s.execute(update(RouteState).where(RouteState.name == route.name).values(
                    failures=count, retry_at=done + wait, last_error=retry.error))
                _log.warning("alerts: %s (round %d; next try in %.1f s)", retry.error, count, wait)
            else:
                s.execute(update(RouteState).where(RouteState.name == route.name).values(
                    failures=0, retry_at=0.0, last_error=None))
        return sum(o.state == "delivered" for o in outcomes)

    def step(self) -> int:
        """Enqueue new alerts, then deliver what is due; return the deliveries accepted."""
        self.enqueue()
        return self.deliver()

    def send_test(self, name: str) -> tuple[str, Outcome]:
        """Send a synthetic alert to route ``name`` now (outside the outbox); its key and outcome."""
        route = self.config.route(name)
        payload = sample_payload(self.clock())
        outcomes = self._send(route, [payload])
        return str(payload["idempotency_key"]), outcomes[0]

    # -- reading -----------------------------------------------------------

    def entries(self, *, states: tuple[str, ...] = ("pending", "failed"),
                limit: int = 100) -> list[OutboxEntry]:
        """Deliveries in ``states``, oldest first, with the route's next try and the alert's rule."""
        configured = {r.name for r in self.config.routes}
        q = (select(AlertDelivery, AlertRow.rule, AlertRow.severity, RouteState.retry_at)
             .join(AlertRow, AlertRow.id == AlertDelivery.alert_id)
             .outerjoin(RouteState, RouteState.name == AlertDelivery.route)
             .where(AlertDelivery.state.in_(states)).order_by(AlertDelivery.id).limit(limit))
        now = self.clock()
        with self.store.session(readonly=True) as s:
            return [OutboxEntry(d.id, d.alert_id, d.route, d.state, rule, severity, d.attempts,
                                d.created_at, d.last_attempt_at, d.delivered_at,
                                retry_at if d.state == "pending" and retry_at and retry_at > now
                                else None, d.last_error, d.route in configured)
                    for d, rule, severity, retry_at in s.execute(q)]

    def requeue_failed(self, name: str) -> int:
        """Put route ``name``'s failed deliveries back in the queue; return how many."""
        self.config.route(name)
        with self.store.session() as s:
            return int(s.execute(update(AlertDelivery).where(
                AlertDelivery.route == name, AlertDelivery.state == "failed"
            ).values(state="pending")).rowcount)  # type: ignore[attr-defined]


class RouteDeliverer:
    """A thread that steps the outbox when woken (each monitor tick) while ``leading()`` is true.

    Delivery runs beside detection, not inside it: a receiver that is slow to
    time out never delays the detectors.
    """

    def __init__(self, outbox: RouteOutbox, *, leading: Callable[[], bool],
                 interval_s: float = 1.0) -> None:
        self.outbox = outbox
        self.leading = leading
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Ask for a round now (the monitor loop calls this after each scan it leads)."""
        self._wake.set()

    def start(self) -> None:
        """Deliver in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="strongroom-alert-routes",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set() or not self.leading():
                continue
            try:
                self.outbox.step()
            except StrongroomError as exc:  # the database is away: next round
                _log.warning("alerts: delivery round failed: %s", exc.message)

    def stop(self) -> None:
        """Stop the thread; undelivered alerts stay in the outbox for the next leader."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=30)
            self._thread = None


def route_deliverer(store: Store, config_path: Path, *, leading: Callable[[], bool],
                    interval_s: float = 1.0) -> RouteDeliverer | None:
    """The deliverer of the routes in ``config_path`` (``None``: no routes); ConfigError if bad."""
    config = load_alerts_config(config_path)
    if not config.routes:
        return None
    _log.info("alerts: %d route(s) from %s: %s", len(config.routes), config_path,
              ", ".join(f"{r.name} -> {r.target()}" for r in config.routes))
    return RouteDeliverer(RouteOutbox(store, config), leading=leading, interval_s=interval_s)

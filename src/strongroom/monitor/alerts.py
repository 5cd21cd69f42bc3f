"""Alerts: stored once, acknowledged by a person, delivered to every sink, audited.

An :class:`Alert` is raised through an :class:`AlertManager`::

    alerts = AlertManager(store, audit=log, sinks=[JsonLinesSink(path), WebhookSink(url)])
    stored = alerts.raise_alert(Alert(rule="SR-CANARY", severity="critical", subject="mallory",
                                      obj="atlas-70b@1", message="...", dedup_key="canary:..."))
    alerts.deliver_pending()          # or alerts.start() for a background delivery thread
    alerts.ack(stored.id, by="sec-oncall", note="known red-team exercise")

What it guarantees:

* **De-duplicated.** ``dedup_key`` is unique in ``monitor_alerts``: raising the
  same alert again (a replayed audit event, a retried charge) only bumps its
  count and ``last_seen``; it is not audited or delivered a second time.
* **Audited.** A new alert is appended to the audit log (``action="alert.raise"``,
  ``decision`` = severity) before it is stored; an acknowledgement is
  ``alert.ack``. Detectors skip these actions, so alerts never feed themselves.
* **Never lost.** Each new alert is queued for every sink in the same
  transaction that stores it (``monitor_alert_outbox``). Local sinks (JSON
  lines, console) are delivered at once; webhooks are delivered by
  :meth:`AlertManager.deliver_pending` (a background thread with
  :meth:`AlertManager.start`), retried with exponential back-off and kept
  queued — across restarts — until the receiver accepts them. A receiver may
  see an alert twice after a crash mid-delivery: it carries an
  ``Idempotency-Key`` header for that.

Do not raise alerts from inside an audit-log append, and do not deliver
webhooks inline on the release path: a slow receiver would stall key releases.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.datadir import open_private_append
from strongroom.errors import InvalidInput, NotFound, StorageError, StrongroomError
from strongroom.store.tables.monitor import AlertOutbox, AlertRow

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.store.db import Store

__all__ = [
    "ALERT_ACTIONS",
    "SEVERITIES",
    "Alert",
    "AlertManager",
    "AlertSink",
    "ConsoleSink",
    "JsonLinesSink",
    "StoredAlert",
    "WebhookSink",
]

#: Severities, lowest first.
SEVERITIES = ("info", "warning", "high", "critical")
#: Audit actions the monitor writes itself (detectors ignore them).
ALERT_ACTIONS = frozenset({"alert.raise", "alert.ack", "alert.assign"})
#: Longest wait between two delivery attempts of one queued alert.
MAX_RETRY_DELAY_S = 3600.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _audit_safe(value: Any) -> Any:
    """Audit entries refuse floats: keep ints and strings, render floats as text."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _audit_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_audit_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


@dataclass(frozen=True)
class Alert:
    """Something a security team must look at: which rule, how bad, who, on what."""

    rule: str
    severity: str
    subject: str
    obj: str
    message: str
    dedup_key: str
    details: Mapping[str, Any] = field(default_factory=dict)
    techniques: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise InvalidInput(f"unknown alert severity {self.severity!r}", obj=self.rule,
                               remedy=f"use one of {', '.join(SEVERITIES)}")
        if not self.rule or not self.subject or not self.dedup_key:
            raise InvalidInput("an alert needs a rule, a subject and a de-duplication key",
                               obj=self.rule or "alert")


@dataclass(frozen=True)
class StoredAlert:
    """An alert as stored: its id, counts and acknowledgement."""

    id: int
    rule: str
    severity: str
    subject: str
    obj: str
    message: str
    details: dict[str, Any]
    dedup_key: str
    first_seen: datetime
    last_seen: datetime
    count: int
    acked_at: datetime | None
    acked_by: str | None
    ack_note: str | None
    new: bool = False
    assigned_to: str | None = None
    assigned_at: datetime | None = None

    @classmethod
    def _from_row(cls, row: AlertRow, *, new: bool = False) -> StoredAlert:
        return cls(row.id, row.rule, row.severity, row.subject, row.obj, row.message,
                   json.loads(row.details_json), row.dedup_key, row.first_seen, row.last_seen,
                   row.count, row.acked_at, row.acked_by, row.ack_note, new, row.assigned_to,
                   row.assigned_at)

    def payload(self) -> dict[str, Any]:
        """What sinks receive: a JSON-able mapping."""
        return {"id": self.id, "rule": self.rule, "severity": self.severity,
                "subject": self.subject, "object": self.obj, "message": self.message,
                "details": self.details, "dedup_key": self.dedup_key,
                "time": self.first_seen.isoformat()}


class AlertSink(Protocol):
    """Somewhere alerts go; ``deliver`` raises on failure so the alert stays queued."""

    name: str
    #: Delivered at once when raised (cheap, local) rather than by the delivery worker.
    inline: bool

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Hand one alert over; raise StrongroomError when it was not accepted."""
        ...


class JsonLinesSink:
    """Appends one JSON object per line to a file, flushed and fsynced."""

    inline = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"jsonl:{self.path}"
        self._lock = threading.Lock()

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Append the alert as one line."""
        line = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, os.fdopen(open_private_append(self.path), "a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write alert file ({exc.strerror})", obj=str(self.path),
                               remedy="check the alert file's directory and permissions") from exc


class ConsoleSink:
    """Prints one line per alert to the server's console (standard error by default)."""

    inline = True
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Print ``ALERT <severity> <rule> <subject> <object>: <message>``."""
        stream = self._stream or sys.stderr
        stream.write(f"ALERT {str(payload['severity']).upper()} {payload['rule']} "
                     f"{payload['subject']} {payload['object']}: {payload['message']}\n")
        stream.flush()


class WebhookSink:
    """HTTP(S) POST of the alert as JSON; a 2xx answer is acceptance, anything else a retry."""

    inline = False

    def __init__(self, url: str, *, timeout_s: float = 5.0, attempts: int = 3,
                 backoff_s: float = 0.2, headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput("a webhook URL must start with http:// or https://", obj=url)
        self.url = url
        self.name = f"webhook:{url}"
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.headers = dict(headers or {})

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """POST with up to ``attempts`` quick tries; raise StorageError if none was accepted."""
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "strongroom-monitor",
                   "Idempotency-Key": str(payload.get("dedup_key", "")), **self.headers}
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
                self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problem = f"{type(reason).__name__}: {reason}"
        raise StorageError(f"webhook did not accept the alert ({problem})", obj=self.url,
                           remedy="the alert stays queued; check that the receiver is up")


class AlertManager:
    """Stores, de-duplicates, audits, acknowledges and delivers alerts."""

    def __init__(
        self,
        store: Store,
        *,
        audit: AuditLog | None = None,
        sinks: Sequence[AlertSink] = (),
        clock: Callable[[], float] = time.time,
        actor: str = "monitor",
        retry_base_s: float = 5.0,
    ) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise InvalidInput("two alert sinks share a name", obj=", ".join(names))
        self.store = store
        self.audit = audit
        self.sinks = {s.name: s for s in sinks}
        self.clock = clock
        self.actor = actor
        self.retry_base_s = retry_base_s
        self._lock = threading.RLock()
        self._deliver_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # -- raising -----------------------------------------------------------

    def _existing(self, key: str) -> StoredAlert | None:
        with self.store.session() as s:
            row = s.scalars(select(AlertRow).where(AlertRow.dedup_key == key)).first()
            if row is None:
                return None
            row.count += 1
            row.last_seen = _utcnow()
            s.flush()
            return StoredAlert._from_row(row)

    def raise_alert(self, alert: Alert) -> StoredAlert:
        """Store, audit and queue ``alert``; a repeat of its dedup key only counts it."""
        with self._lock:
            existing = self._existing(alert.dedup_key)
            if existing is not None:
                return existing
            details = {**dict(alert.details), "techniques": list(alert.techniques)}
            if self.audit is not None:
                self.audit.append(actor=self.actor, action="alert.raise", obj=alert.obj,
                                  decision=alert.severity, reason=alert.message[:500],
                                  details=_audit_safe({"rule": alert.rule,
                                                       "subject": alert.subject,
                                                       "dedup_key": alert.dedup_key,
                                                       **details}))
            now = _utcnow()
            try:
                with self.store.session() as s:
                    row = AlertRow(dedup_key=alert.dedup_key, rule=alert.rule,
                                   severity=alert.severity, subject=alert.subject,
                                   obj=alert.obj, message=alert.message,
                                   details_json=json.dumps(details, sort_keys=True, default=str),
                                   first_seen=now, last_seen=now, count=1)
                    s.add(row)
                    s.flush()
                    stored = StoredAlert._from_row(row, new=True)
                    payload = json.dumps(stored.payload(), sort_keys=True, default=str)
                    for name in self.sinks:
                        s.add(AlertOutbox(alert_id=row.id, sink=name, payload=payload,
                                          attempts=0, next_attempt=0.0))
            except StorageError as exc:
                if isinstance(exc.__cause__, DbIntegrityError):  # raised concurrently elsewhere
                    again = self._existing(alert.dedup_key)
                    if again is not None:
                        return again
                raise
        self.deliver_pending(inline_only=True, alert_id=stored.id)
        return stored

    # -- reading and acknowledging ----------------------------------------

    def get(self, alert_id: int) -> StoredAlert:
        """One alert by id (NotFound if there is none)."""
        with self.store.session() as s:
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFound(f"no alert {alert_id}", obj="alerts",
                               remedy="`strongroom alerts ls` lists alerts")
            return StoredAlert._from_row(row)

    def recent(self, *, unacked: bool = False, subject: str | None = None,
             limit: int = 100, rule: str | None = None, severity: str | None = None,
             acked: bool = False, assigned_to: str | None = None) -> list[StoredAlert]:
        """Alerts, newest first (optionally only open or only acknowledged ones, one rule, one
        severity, one assignee: a name, or ``""`` for alerts assigned to nobody)."""
        q = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if assigned_to is not None:
            q = q.where(AlertRow.assigned_to == assigned_to if assigned_to
                        else AlertRow.assigned_to.is_(None))
        if unacked:
            q = q.where(AlertRow.acked_at.is_(None))
        if acked:
            q = q.where(AlertRow.acked_at.is_not(None))
        if subject is not None:
            q = q.where(AlertRow.subject == subject)
        if rule is not None:
            q = q.where(AlertRow.rule == rule)
        if severity is not None:
            q = q.where(AlertRow.severity == severity)
        with self.store.session() as s:
            return [StoredAlert._from_row(r) for r in s.scalars(q)]

    def ack(self, alert_id: int, *, by: str, note: str = "",
            statement: str | None = None) -> StoredAlert:
        """Mark an alert handled by ``by`` (audited as ``alert.ack``).

        ``statement`` is the digest of a signed acknowledgement (the console's
        security-key ack of a critical alert), kept in the audit entry.
        """
        if not by:
            raise InvalidInput("an acknowledgement needs the name of who acknowledges",
                               obj=f"alert {alert_id}")
        current = self.get(alert_id)
        if current.acked_at is not None:
            return current
        if self.audit is not None:
            self.audit.append(actor=by, action="alert.ack", obj=current.obj, decision="allow",
                              reason=note[:500], details={"alert_id": alert_id,
                                                          "rule": current.rule,
                                                          "dedup_key": current.dedup_key,
                                                          **({"statement": statement}
                                                             if statement else {})})
        with self.store.session() as s:
            s.execute(update(AlertRow).where(AlertRow.id == alert_id,
                                             AlertRow.acked_at.is_(None))
                      .values(acked_at=_utcnow(), acked_by=by, ack_note=note or None))
        return self.get(alert_id)

    def assign(self, alert_id: int, *, to: str | None, by: str) -> StoredAlert:
        """Assign an alert to ``to`` (``None``: to nobody), audited as ``alert.assign`` by ``by``."""
        if not by:
            raise InvalidInput("an assignment needs the name of who assigns",
                               obj=f"alert {alert_id}")
        current = self.get(alert_id)
        if current.assigned_to == to:
            return current
        if self.audit is not None:
            self.audit.append(actor=by, action="alert.assign", obj=current.obj, decision="allow",
                              reason=f"assigned to {to}" if to else "unassigned",
                              details={"alert_id": alert_id, "rule": current.rule,
                                       "dedup_key": current.dedup_key, "assigned_to": to,
                                       "previous": current.assigned_to})
        with self.store.session() as s:
            s.execute(update(AlertRow).where(AlertRow.id == alert_id)
                      .values(assigned_to=to, assigned_at=_utcnow() if to else None))
        return self.get(alert_id)

    # -- delivery ----------------------------------------------------------

    def pending(self) -> int:
        """Deliveries still queued (all sinks)."""
        with self.store.session() as s:
            return len(s.scalars(select(AlertOutbox.id)
                                 .where(AlertOutbox.delivered_at.is_(None))).all())

    def deliver_pending(self, *, inline_only: bool = False, alert_id: int | None = None,
                        force: bool = False) -> int:
        """Try every queued delivery that is due (``force``: due or not); return how many succeeded."""
        now = self.clock()
        q = select(AlertOutbox).where(AlertOutbox.delivered_at.is_(None)).order_by(AlertOutbox.id)
        if not force:
            q = q.where(AlertOutbox.next_attempt <= now)
        if alert_id is not None:
            q = q.where(AlertOutbox.alert_id == alert_id)
        delivered = 0
        with self._deliver_lock:
            with self.store.session() as s:
                due = [(r.id, r.sink, r.payload, r.attempts) for r in s.scalars(q)]
            for row_id, sink_name, payload, attempts in due:
                sink = self.sinks.get(sink_name)
                if sink is None or (inline_only and not sink.inline):
                    continue
                error: str | None = None
                try:
                    sink.deliver(json.loads(payload))
                except StrongroomError as exc:
                    error = str(exc)[:1000]
                with self.store.session() as s:
                    if error is None:
                        s.execute(update(AlertOutbox).where(AlertOutbox.id == row_id)
                                  .values(delivered_at=self.clock(), attempts=attempts + 1,
                                          last_error=None))
                        delivered += 1
                    else:
                        delay = min(self.retry_base_s * 2 ** attempts, MAX_RETRY_DELAY_S)
                        s.execute(update(AlertOutbox).where(AlertOutbox.id == row_id)
                                  .values(attempts=attempts + 1, next_attempt=now + delay,
                                          last_error=error))
        return delivered

    def start(self, interval_s: float = 2.0) -> None:
        """Deliver queued alerts from a background thread until :meth:`stop`."""
        if self._worker is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.deliver_pending()
                except StrongroomError:  # the store is down: try again next round
                    continue

        self._worker = threading.Thread(target=run, name="alert-delivery", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop the delivery thread (queued alerts stay queued)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(10)
            self._worker = None

    def raise_all(self, alerts: Iterable[Alert]) -> list[StoredAlert]:
        """Raise several alerts; returns the stored ones (new or repeated)."""
        return [self.raise_alert(a) for a in alerts]

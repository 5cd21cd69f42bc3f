"""Tables of the monitor (owned by ``strongroom.monitor``).

``egress_charges`` is the durable egress ledger: one row per released shard,
keyed by a charge id (the release evidence's nonce) so that a replayed event
is never charged twice; a refund deletes the row. ``budget_id`` names the
Grant (its request digest) or break-glass statement whose lifetime byte budget
the charge counts against (NULL: none, or written before budgets moved here). ``egress_budgets`` holds
the caps an operator set (scope ``principal``, ``artifact`` or ``lab``;
subject ``*`` is the default for its scope). ``monitor_alerts`` holds every
alert once (``dedup_key`` is unique) with its acknowledgement;
``monitor_alert_outbox`` is the durable delivery queue of the alert sinks;
``alert_deliveries`` is the outbox of the routes of ``alerts.yaml`` (one row per
alert and route: pending until the receiver accepted it, failed if it refused
it for good, or skipped by the route's filter) and ``alert_routes`` records
since which alert each route is fed and its back-off;
``monitor_canaries`` names the decoy artifacts; ``monitor_cursors`` records
how far a detector run has read the audit log; ``monitor_leases`` elects the one
monitor loop per database that runs the detectors in a deployment (its holder,
expiry, how far it has read and when it last caught up).

None of it is trusted for integrity: every charge and alert is also an audit
event, and the audit log is what an investigator checks.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = [
    "AlertDelivery",
    "AlertOutbox",
    "AlertRow",
    "CanaryRow",
    "EgressBudgetRow",
    "EgressCharge",
    "MonitorCursor",
    "MonitorLease",
    "RouteState",
]


class EgressCharge(Base):
    """Bytes released to one principal for one artifact at one time (seconds since the epoch)."""

    __tablename__ = "egress_charges"
    __table_args__ = (
        Index("ix_egress_charges_principal_at", "principal", "at"),
        Index("ix_egress_charges_artifact_at", "artifact", "at"),
        Index("ix_egress_charges_budget_id", "budget_id", "nbytes"),
    )

    charge_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), nullable=False)
    artifact: Mapped[str] = mapped_column(String(200), nullable=False)
    nbytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    budget_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


class EgressBudgetRow(Base):
    """An operator's cap: ``cap_bytes`` per ``window_s`` for one scope and subject."""

    __tablename__ = "egress_budgets"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_s: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cap_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AlertRow(Base):
    """One alert, stored once per de-duplication key, with its acknowledgement."""

    __tablename__ = "monitor_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(300), nullable=False, unique=True)
    rule: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    obj: Mapped[str] = mapped_column(String(500), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    details_json: Mapped[str] = mapped_column(Text, nullable=False)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ack_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The security officer handling it (migration 0012; each change is an alert.assign entry).
    assigned_to: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AlertOutbox(Base):
    """One pending (or delivered) delivery of one alert to one sink."""

    __tablename__ = "monitor_alert_outbox"
    __table_args__ = (Index("ix_monitor_alert_outbox_pending", "delivered_at", "next_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(
        ForeignKey("monitor_alerts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    sink: Mapped[str] = mapped_column(String(200), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt: Mapped[float] = mapped_column(Float, nullable=False)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AlertDelivery(Base):
    """One alert to one route of ``alerts.yaml``: pending, delivered, failed or skipped."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "route", name="uq_alert_deliveries_alert_route"),
        Index("ix_alert_deliveries_route_state", "route", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(
        ForeignKey("monitor_alerts.id", ondelete="CASCADE"), nullable=False
    )
    route: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RouteState(Base):
    """A route of ``alerts.yaml`` as the outbox knows it: where its feed starts, its back-off.

    It is fed the alerts with ids above ``floor``. ``retry_at`` (seconds since
    the epoch) is when it may be tried next: after ``failures`` failed rounds,
    or while a deliverer holds it (the claim), so that no two send at once.
    """

    __tablename__ = "alert_routes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    floor: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    retry_at: Mapped[float] = mapped_column(Float, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class CanaryRow(Base):
    """A decoy artifact: any request for its keys is an alarm."""

    __tablename__ = "monitor_canaries"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class MonitorCursor(Base):
    """How many audit entries a named detector run has consumed."""

    __tablename__ = "monitor_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MonitorLease(Base):
    """The monitor loop's lease: who runs the detectors over the shared log, and how far it got.

    ``owner`` is the holder's host id, ``token`` the holding loop instance;
    ``cursor`` counts the audit entries processed; every entry appended before
    ``caught_up_at`` (seconds since the epoch) has been processed.
    """

    __tablename__ = "monitor_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    token: Mapped[str] = mapped_column(String(64), nullable=False)
    cursor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    acquired_at: Mapped[float] = mapped_column(Float, nullable=False)
    heartbeat_at: Mapped[float] = mapped_column(Float, nullable=False)
    caught_up_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)
    interval_s: Mapped[float] = mapped_column(Float, nullable=False)

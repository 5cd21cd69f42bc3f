"""Alerts the gateway raises when a caller's traffic looks like model extraction.

The gateway hands each :class:`GatewayAlert` to a :class:`GatewayAlertSink`; the monitor
(``strongroom.monitor``) provides the real sinks, and anything with an
``emit(alert)`` method plugs in::

    sink = AuditAlertSink(vault.audit)      # every alert is also an audit event
    sink = FanOutSink([AuditAlertSink(log), monitor_sink])

A sink must not raise for a delivery problem it can retry; if it raises, the
gateway refuses the request that caused the alert (fail closed). Alerts carry
counts and hashes, never the texts a caller sent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["AuditAlertSink", "FanOutSink", "GatewayAlert", "GatewayAlertSink", "MemoryAlertSink"]


@dataclass(frozen=True)
class GatewayAlert:
    """One detection: what pattern, whose traffic, how sure, and the numbers behind it."""

    kind: str
    severity: str
    principal: str
    host: str
    message: str
    at: float
    details: Mapping[str, Any] = field(default_factory=dict)


class GatewayAlertSink(Protocol):
    """Where alerts go (the monitor's alert modules implement this)."""

    def emit(self, alert: GatewayAlert) -> None:
        """Deliver one alert."""
        ...


class MemoryAlertSink:
    """Keeps alerts in a list (for the demo, tests and an operator's status view)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.alerts: list[GatewayAlert] = []

    def emit(self, alert: GatewayAlert) -> None:
        """Remember the alert."""
        with self._lock:
            self.alerts.append(alert)


class _Appender(Protocol):
    def append(self, *, actor: str, action: str, obj: str, decision: str, reason: str = "",
               details: Mapping[str, Any] | None = None) -> int: ...


class AuditAlertSink:
    """Appends each alert to the audit log as a ``gateway.alert`` event."""

    def __init__(self, audit: _Appender, *, actor: str = "strongroom-gateway") -> None:
        self.audit = audit
        self.actor = actor

    def emit(self, alert: GatewayAlert) -> None:
        """Record the alert durably (raises AuditUnavailable if it cannot)."""
        self.audit.append(
            actor=self.actor,
            action="gateway.alert",
            obj=alert.principal,
            decision=alert.severity,
            reason=alert.message,
            details={"kind": alert.kind, "host": alert.host, **alert.details},
        )


class FanOutSink:
    """Delivers every alert to several sinks in order."""

    def __init__(self, sinks: Sequence[GatewayAlertSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, alert: GatewayAlert) -> None:
        """Deliver to each sink."""
        for sink in self.sinks:
            sink.emit(alert)

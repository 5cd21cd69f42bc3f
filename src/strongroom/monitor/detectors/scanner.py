"""The audit scanner: reads the audit log incrementally into a risk engine and raises its alerts.

Use it over the vault's log with the monitor's alert manager::

    scanner = AuditScanner(log, RiskEngine(canaries=registry.names()), alerts)
    scanner.scan()                       # raises new alerts; call again for new events

Its cursor lives in ``monitor_cursors`` under ``name``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from strongroom.monitor.detectors.engine import RiskEngine
from strongroom.monitor.detectors.rule import ActivityEvent
from strongroom.store.tables.monitor import MonitorCursor

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.monitor.alerts import AlertManager, StoredAlert


class AuditScanner:
    """Reads the audit log incrementally into a :class:`RiskEngine` and raises its alerts.

    The engine's baselines live in memory: a new scanner replays the log from
    entry ``start`` (default: the first) to rebuild them, and raises only
    alerts for entries past the stored cursor (``monitor_cursors``);
    de-duplication stops any repeat. Progress is saved after every page, so a
    long replay keeps it (and a subclass can renew a lease there).
    """

    def __init__(self, audit: AuditLog, engine: RiskEngine, alerts: AlertManager, *,
                 name: str = "detectors", start: int = 0) -> None:
        self.audit = audit
        self.engine = engine
        self.alerts = alerts
        self.name = name
        self._position = start

    def _cursor(self) -> int:
        with self.alerts.store.session() as s:
            row = s.scalars(select(MonitorCursor).where(MonitorCursor.name == self.name)).first()
            return int(row.position) if row is not None else 0

    def _save(self, position: int) -> None:
        with self.alerts.store.session() as s:
            row = s.get(MonitorCursor, self.name)
            if row is None:
                s.add(MonitorCursor(name=self.name, position=position))
            elif row.position < position:
                row.position = position

    def scan(self, page: int = 5000) -> list[StoredAlert]:
        """Process every entry not yet seen; return the alerts raised (new or repeated)."""
        cursor = self._cursor()
        size = self.audit.size()
        raised: list[StoredAlert] = []
        while self._position < size:
            end = min(size, self._position + page)
            for ev in self.audit.events(self._position, end):
                alerts = self.engine.process(ActivityEvent.from_audit(ev))
                if ev.index >= cursor:
                    raised.extend(self.alerts.raise_alert(a) for a in alerts)
            self._position = end
            if end < size:
                self._save(end)
        self._save(self._position)
        return raised

    def due(self, now: float) -> list[StoredAlert]:
        """Raise what the clock made due (call after :meth:`scan` caught up with the log)."""
        return [self.alerts.raise_alert(a) for a in self.engine.due(now)]

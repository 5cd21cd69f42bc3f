"""Checkpoints without being asked: sign new entries on an interval, push them, watch for rollback.

Whatever holds the unsealed log (the key agent, ``strongroom serve``) runs one
:class:`CheckpointPublisher`, started at unseal and stopped at seal::

    publisher = CheckpointPublisher(log, HighWater(home / HIGH_WATER_NAME, log),
                                    interval=2.0, on_rollback=raise_alert)
    publisher.start()      # checks the log against the high-water file and the witnesses
    ...
    publisher.stop()

Every ``interval`` seconds its thread compares the stored tree with the
high-water mark (one head read, one consistency proof) and, when there are new
entries, signs a checkpoint over them, records it in the high-water file and
pushes it to the witnesses (transparency logs call this the integration
period). A deletion of the log's tail is therefore unseen for at most
``interval`` plus the time the witnesses take to answer; a rollback found at
start or later marks the log (:meth:`AuditLog.require_intact` refuses from then
on) and calls ``on_rollback`` once per finding. Witnesses that are down delay
nothing but their own cosignature; :meth:`status` reports how far behind each is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strongroom.audit.highwater import (
    ROLLBACK_REMEDY,
    HighWater,
    TreeMark,
    check_extends,
    witness_marks,
)
from strongroom.errors import AuditUnavailable, IntegrityError, StrongroomError

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

__all__ = ["CheckpointPublisher", "PublisherStatus"]

log = logging.getLogger(__name__)

#: Default seconds between checkpoints over new entries (STRONGROOM_CHECKPOINT_INTERVAL_S).
DEFAULT_INTERVAL_S = 2.0


@dataclass
class PublisherStatus:
    """What the publisher has done: the latest checkpoint and each witness's lag."""

    signed_size: int = 0
    signed_at: float | None = None
    checkpoints: int = 0
    rollback: str | None = None
    #: witness name -> seconds since the oldest checkpoint it has not cosigned (0: up to date)
    witness_lag_s: dict[str, float] = field(default_factory=dict)


class CheckpointPublisher:
    """Signs and publishes checkpoints over new entries; detects a rolled-back log."""

    def __init__(
        self,
        audit: AuditLog,
        high_water: HighWater,
        interval: float = DEFAULT_INTERVAL_S,
        *,
        on_rollback: Callable[[IntegrityError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.high_water = high_water
        self.interval = interval
        self.on_rollback = on_rollback
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()
        self._seen_checkpoint = -1
        self._checkpoint_at = clock()
        self._pending: dict[str, float] = {}  # witness -> when its oldest missing cosignature was due
        self._status = PublisherStatus()

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Check the log against every mark kept outside the database, then run the thread."""
        self.check(ask_witnesses=True)
        self._thread = threading.Thread(target=self._run, name="audit-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a checkpoint being signed finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def status(self) -> PublisherStatus:
        """A copy of the current status, lags computed now."""
        now = self.clock()
        with self._tick_lock:
            s = PublisherStatus(self._status.signed_size, self._status.signed_at,
                                self._status.checkpoints, self._status.rollback)
            s.witness_lag_s = {w.name: (now - self._pending[w.name]) if w.name in self._pending
                               else 0.0 for w in self.audit.witnesses}
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # the thread must outlive one bad round; said loudly
                log.exception("audit checkpoint round failed: %s", exc)

    # -- one round -----------------------------------------------------------------

    def check(self, *, ask_witnesses: bool = False) -> bool:
        """Compare the stored log with the high-water marks (and the witnesses'); False: rolled back."""
        try:
            marks = self.high_water.marks()
            if ask_witnesses:
                marks += witness_marks(self.audit)
            size, root, _ = self.audit.head()
            for mark in sorted(marks, key=lambda m: m.size, reverse=True):
                check_extends(self.audit, mark, (size, root))
        except IntegrityError as exc:
            self._found(exc)
            return False
        self._remember_cosigned(marks)
        return True

    def _remember_cosigned(self, marks: list[TreeMark]) -> None:
        for mark in marks:
            if mark.source.startswith("witness ") and mark.note is not None:
                try:
                    self.high_water.record(mark.note, "cosigned")
                except (IntegrityError, OSError) as exc:  # e.g. a witness without the log's note
                    log.warning("not kept as high-water: %s: %s", mark.describe(), exc)

    def tick(self) -> None:
        """One round: check for rollback, then sign and publish when due."""
        with self._tick_lock:
            if self._status.rollback is not None or not self.check():
                return
            size, _, cp_size = self.audit.head()
            now = self.clock()
            if cp_size != self._seen_checkpoint:
                self._seen_checkpoint, self._checkpoint_at = cp_size, now
            aged = now - self._checkpoint_at >= self.interval
            if aged and (size > cp_size or self._pending):
                self._publish(now)
            elif cp_size > self.high_water.size():
                latest = self.audit.latest_checkpoint()  # signed by another process
                if latest is not None:
                    self.high_water.record(latest)

    def _publish(self, now: float) -> None:
        try:
            note = self.audit.checkpoint(require_quorum=False, on_signed=self.high_water.record)
        except IntegrityError as exc:  # a witness or the stored tree says: rollback or fork
            self._found(exc)
            return
        except (AuditUnavailable, OSError) as exc:  # store busy or down: next round
            log.warning("could not sign a checkpoint: %s", exc)
            return
        opened = self.audit.opened(note)
        size = opened.checkpoint.size
        self._seen_checkpoint, self._checkpoint_at = size, now
        self._status.signed_size, self._status.signed_at = size, time.time()
        self._status.checkpoints += 1
        for witness in self.audit.witnesses:
            if witness.name in opened.cosigners:
                self._pending.pop(witness.name, None)
            else:
                self._pending.setdefault(witness.name, now)
        if opened.cosigners:
            self.high_water.record(note, "cosigned")

    def _found(self, exc: IntegrityError) -> None:
        message = exc.message
        first = self._status.rollback is None
        self._status.rollback = message
        self.audit.mark_rolled_back(AuditUnavailable(
            f"audit log rolled back; releases are refused: {message}",
            obj=exc.obj or f"audit log {self.audit.origin}",
            remedy=ROLLBACK_REMEDY,
        ))
        log.critical("audit log rollback: %s", message)
        if first and self.on_rollback is not None:
            try:
                self.on_rollback(exc)
            except StrongroomError as alert_exc:  # the refusal stands without the alert
                log.error("could not raise the rollback alert: %s", alert_exc)

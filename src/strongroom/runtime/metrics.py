"""The deployment's Prometheus metrics: the instruments, what feeds them, and what a scrape reads.

Two kinds of figure, both read by ``GET /metrics`` (:mod:`strongroom.server.metrics`):

* **events**, counted where they happen, as ``prometheus_client`` counters and
  histograms: the gate's decisions, their time and the bytes released
  (:class:`ReleaseMetrics`, the gate's :class:`~strongroom.release.ports.ReleaseObserver`,
  in the key service's process: ``serve``'s key agent), the audit log's batch
  commits (:func:`observe_audit`, in every process that appends) and the API's
  refused requests (:func:`count_api_refusal`, in the workers);
* **state**, read when scraped (:class:`VitalsCollector` over :func:`read_vitals`):
  seal state, audit log size and checkpoint age, witness cosignature lag, alerts
  by severity, the monitor loop's lag. Nothing is kept for these between scrapes.

Processes. ``strongroom serve`` runs one key agent and ``--workers`` uvicorn
processes, and a scrape reaches one worker. prometheus-client's multiprocess
mode is the fit: ``serve`` creates ``<home>/metrics`` (0700), empties it, and
sets ``PROMETHEUS_MULTIPROC_DIR`` to it before any process imports
``prometheus_client``; every process (agent included) then keeps its counters
in its own memory-mapped file there, and the scraped worker sums every file
(:func:`exposition`). Counting a release stays a few memory writes in the agent,
with no message to anyone. Without the variable (tests, an embedded app) the
process's own registry is read. State is read by the scraped worker itself:
from the database, and from the agent (``vitals``) for what only the key service
knows (witness lag). Labels are small fixed sets (decision, refusal class,
severity, witness name, error class): never a principal, an artifact or a message.

    gate = ReleaseGate(..., observer=ReleaseMetrics())
    observe_audit(audit_log)
    body, content_type = exposition(lambda: read_vitals(store, keys, host_id))
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from strongroom.errors import StrongroomError
from strongroom.release.gate import REFUSAL_CLASSES

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric

    from strongroom.audit.log import AuditLog
    from strongroom.runtime.monitor_loop import LeaseState
    from strongroom.store.db import Store

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "ReleaseMetrics", "Vitals", "VitalsCollector", "count_api_refusal",
           "exposition", "observe_audit", "read_vitals"]

#: prometheus-client's variable naming the directory every process writes its counters to.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The text format 0.0.4, which every Prometheus 2.x (Debian's 2.42 included) parses.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Release latency buckets, seconds (a release is ~1 ms; the audit commit bounds it at seconds).
_RELEASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class _Instruments:
    releases: Counter
    release_seconds: Histogram
    egress_bytes: Counter
    commit_seconds: Histogram
    batch_entries: Histogram
    api_refusals: Counter


_INSTRUMENTS_LOCK = threading.Lock()
_INSTRUMENTS: list[_Instruments] = []


def _instruments() -> _Instruments:
    """This process's instruments, created once under a lock.

    prometheus-client registers every metric in one global registry and refuses a
    second registration of a name, so two threads creating them at once (the first
    two refusals of a busy worker) must not both try: ``functools.cache`` does not
    prevent that, and the loser's error became a 500.
    """
    if _INSTRUMENTS:
        return _INSTRUMENTS[0]
    with _INSTRUMENTS_LOCK:
        if not _INSTRUMENTS:
            _INSTRUMENTS.append(_create_instruments())
        return _INSTRUMENTS[0]


def _create_instruments() -> _Instruments:
    from prometheus_client import Counter, Histogram

    return _Instruments(
        releases=Counter("strongroom_releases", "Key release decisions of the gate",
                         ["decision", "reason"]),
        release_seconds=Histogram("strongroom_release_duration_seconds",
                                  "Time the gate took to decide a release, audit commit included",
                                  ["decision"], buckets=_RELEASE_BUCKETS),
        egress_bytes=Counter("strongroom_egress_bytes",
                             "Plaintext bytes the released file keys open (as signed)"),
        commit_seconds=Histogram("strongroom_audit_commit_duration_seconds",
                                 "Time one audit batch took to commit (one transaction)",
                                 buckets=_COMMIT_BUCKETS),
        batch_entries=Histogram("strongroom_audit_batch_entries",
                                "Entries appended per audit batch commit",
                                buckets=_BATCH_BUCKETS),
        api_refusals=Counter("strongroom_api_refusals",
                             "API requests refused before any route (signature, path, body)",
                             ["error"]),
    )


class ReleaseMetrics:
    """The gate's :class:`~strongroom.release.ports.ReleaseObserver`: counters bound once."""

    def __init__(self) -> None:
        i = _instruments()
        self._allowed = i.releases.labels("allow", "granted")
        self._refused = {r: i.releases.labels("deny", r) for r in REFUSAL_CLASSES}
        self._allow_s = i.release_seconds.labels("allow")
        self._deny_s = i.release_seconds.labels("deny")
        self._bytes = i.egress_bytes

    def allowed(self, nbytes: int, seconds: float) -> None:
        """Count one release of ``nbytes``."""
        self._allowed.inc()
        self._allow_s.observe(seconds)
        self._bytes.inc(nbytes)

    def allowed_many(self, nbytes: int, seconds: Sequence[float]) -> None:
        """Count a batch's releases at once: ``len(seconds)`` of ``nbytes`` in all.

        The same figures as :meth:`allowed` per release (each release's time is
        observed), with the two counters written once a batch: in the key agent every
        write is a locked write to its memory-mapped file.
        """
        if not seconds:
            return
        self._allowed.inc(len(seconds))
        self._bytes.inc(nbytes)
        _observe_many(self._allow_s, seconds)

    def refused(self, reason: str, seconds: float) -> None:
        """Count one refusal of class ``reason``."""
        self._refused.get(reason, self._refused["error"]).inc()
        self._deny_s.observe(seconds)


def _observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts``: the same figures, fewer writes.

    Each observation is a locked write of the sum and of its bucket (in the key agent,
    to the memory-mapped file); here the amounts are binned first, so the sum and each
    bucket they land in are written once. A histogram without prometheus-client's usual
    fields (``_sum``, ``_buckets``, ``_upper_bounds``) is observed one amount at a time.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if (len(amounts) < 2 or total is None or not isinstance(bounds, list)
            or not isinstance(buckets, list) or len(buckets) != len(bounds)
            or not bounds or bounds[-1] != float("inf")):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts: dict[int, int] = {}
    for amount in amounts:
        i = bisect.bisect_left(bounds, amount)  # the first bound >= amount, as observe picks
        counts[i] = counts.get(i, 0) + 1
    total.inc(math.fsum(amounts))
    for i, n in counts.items():
        buckets[i].inc(n)


def observe_audit(audit: AuditLog) -> None:
    """Time and size every batch ``audit`` commits."""
    i = _instruments()
    seconds, entries = i.commit_seconds, i.batch_entries

    def committed(count: int, took: float) -> None:
        seconds.observe(took)
        entries.observe(count)

    audit.observe_commits(committed)


def count_api_refusal(exc: StrongroomError) -> None:
    """Count a request the API refused before any route, by its error class."""
    _instruments().api_refusals.labels(type(exc).__name__).inc()


# -- state, read when scraped ---------------------------------------------------------


@dataclass(frozen=True)
class Vitals:
    """The deployment's state as one scrape reads it (times: seconds since the epoch)."""

    initialized: bool
    sealed: bool
    audit_size: int
    checkpoint_size: int
    checkpoint_at: float | None
    #: witness name -> seconds since the oldest checkpoint it has not cosigned (this host)
    witness_lag_s: Mapping[str, float] = field(default_factory=dict)
    #: (severity, open) -> alerts stored
    alerts: Mapping[tuple[str, bool], int] = field(default_factory=dict)
    monitor: LeaseState | None = None
    host: str = ""
    now: float = 0.0


def read_vitals(store: Store, keys: Any, host: str, *,
                clock: Callable[[], float] = time.time) -> Vitals:
    """Seal state and witness lag from ``keys``; log head, checkpoints, alerts, lease from ``store``."""
    from strongroom.runtime.monitor_loop import read_lease
    from strongroom.store.tables.audit import AuditCheckpoint, AuditHead
    from strongroom.store.tables.monitor import AlertRow

    try:
        status = keys.status()
        initialized, sealed = bool(status.initialized), bool(status.sealed)
    except StrongroomError:  # the key agent is gone: nothing can be released
        initialized, sealed = True, True
    lag: dict[str, float] = {}
    if not sealed:
        try:
            lag = {str(k): float(v) for k, v in keys.vitals().get("witness_lag_s", {}).items()}
        except StrongroomError:  # an agent without the operation, or gone since
            lag = {}
    with store.session(readonly=True) as s:
        head = s.get(AuditHead, 1)
        newest = s.scalar(select(func.max(AuditCheckpoint.created_at)))
        counts = s.execute(select(AlertRow.severity, AlertRow.acked_at.is_(None), func.count())
                           .group_by(AlertRow.severity, AlertRow.acked_at.is_(None))).all()
    return Vitals(
        initialized=initialized, sealed=sealed,
        audit_size=int(head.size) if head is not None else 0,
        checkpoint_size=int(head.checkpoint_size) if head is not None else 0,
        checkpoint_at=newest.timestamp() if newest is not None else None,
        witness_lag_s=lag,
        alerts={(str(sev), bool(unacked)): int(n) for sev, unacked, n in counts},
        monitor=read_lease(store), host=host, now=clock())


class VitalsCollector:
    """A prometheus-client collector that reads :class:`Vitals` on every scrape."""

    def __init__(self, read: Callable[[], Vitals]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        """The state gauges (prometheus-client calls this per scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from strongroom.monitor.alerts import SEVERITIES

        v = self.read()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("strongroom_initialized", "1 when the vault is initialised",
                    float(v.initialized))
        yield gauge("strongroom_sealed", "1 while this host is sealed (no key can be released)",
                    float(v.sealed))
        yield gauge("strongroom_audit_entries", "Entries in the audit log", v.audit_size)
        yield gauge("strongroom_audit_unsigned_entries",
                    "Audit entries not yet covered by a signed checkpoint",
                    max(0, v.audit_size - v.checkpoint_size))
        if v.checkpoint_at is not None:
            yield gauge("strongroom_audit_checkpoint_age_seconds",
                        "Seconds since the newest checkpoint was signed (any host)",
                        max(0.0, v.now - v.checkpoint_at))
        witness = GaugeMetricFamily(
            "strongroom_witness_cosignature_lag_seconds",
            "Seconds since the oldest checkpoint a witness has not cosigned (0: up to date)",
            labels=["witness"])
        for name, lag in sorted(v.witness_lag_s.items()):
            witness.add_metric([name], lag)
        yield witness
        raised = CounterMetricFamily("strongroom_alerts", "Alerts raised (stored), by severity",
                                     labels=["severity"])
        unacked = GaugeMetricFamily("strongroom_alerts_open",
                                    "Alerts not yet acknowledged, by severity",
                                    labels=["severity"])
        for sev in SEVERITIES:
            open_n = v.alerts.get((sev, True), 0)
            raised.add_metric([sev], open_n + v.alerts.get((sev, False), 0))
            unacked.add_metric([sev], open_n)
        yield raised
        yield unacked
        yield from _monitor(v)


def _monitor(v: Vitals) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    lease = v.monitor
    running = lease is not None and lease.expires_at > v.now
    yield GaugeMetricFamily("strongroom_monitor_running",
                            "1 while some host's monitor loop holds an unexpired lease",
                            value=float(running))
    yield GaugeMetricFamily("strongroom_monitor_leading", "1 when this host's loop holds the lease",
                            value=float(running and lease is not None and lease.owner == v.host))
    if lease is None:
        return
    yield GaugeMetricFamily("strongroom_monitor_lag_entries",
                            "Audit entries the detectors have not processed yet",
                            value=max(0, v.audit_size - lease.cursor))
    yield GaugeMetricFamily("strongroom_monitor_lag_seconds",
                            "Seconds since the detectors last caught up with the log's head",
                            value=max(0.0, v.now - lease.caught_up_at))


class _ThisProcess:
    """Forwards this process's own registry (no multiprocess directory)."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import REGISTRY

        _instruments()  # the event series exist (at 0) before the first event
        yield from REGISTRY.collect()


def exposition(read: Callable[[], Vitals]) -> tuple[bytes, str]:
    """The Prometheus text exposition of every process's events and the state now."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(VitalsCollector(read))
    return generate_latest(registry), CONTENT_TYPE

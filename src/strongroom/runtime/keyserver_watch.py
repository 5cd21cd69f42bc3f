"""Compare key servers' audit logs: a release only some key servers recorded is an alert.

Each key server appends every decision to its own log (so that the DBA of one
cannot hide what another did). A healthy threshold release leaves ``allow``
entries (action ``key.release``) on at least k servers and no ``deny`` for the
same request anywhere. This detector reads the logs side by side and reports
each request where they disagree:

* ``disagreement`` — some servers allowed and others denied the same request
  (one server answering for a principal the others revoked, or a server whose
  state was tampered with);
* ``below threshold`` — fewer than k servers allowed it and none denied it:
  a partial left a server that no other server's log accounts for.

A request is identified by its evidence nonce where an entry records it, and
otherwise by (principal, shard, blob) within :data:`WINDOW_S` seconds — a
refusal before the evidence verified records no nonce. Use it like this::

    found = divergences({"ks-a": log_a.recent(since), "ks-b": ...}, threshold=2)

:class:`DivergenceWatch` runs it on a schedule and raises each divergence as an
alert (rule ``keyserver.divergence``, severity high) through an
:class:`~strongroom.monitor.alerts.AlertManager`, de-duplicated per request.
``strongroom keyserver serve`` starts one when ``STRONGROOM_KEYSERVER_PEER_LOGS``
names the other key servers' databases (``name=URL``, read-only roles): it
reads its own log and theirs (:func:`stored_log`) every
``STRONGROOM_KEYSERVER_WATCH_INTERVAL_S`` and alerts in its own alert manager::

    watch = DivergenceWatch({"ks-a": own, "ks-b": stored_log(store_b)}, alerts, threshold=2)
    watch.tick()        # one comparison; or watch.start() / watch.stop()

A log that cannot be read is itself alerted (``keyserver.log-unreadable``) and
that round compares nothing: a missing log would make every release look
below threshold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.audit.entry import AuditEvent
from strongroom.audit.tree import StoredTree
from strongroom.errors import Sealed, StrongroomError
from strongroom.monitor.alerts import Alert
from strongroom.release.gate import ACTION

if TYPE_CHECKING:
    from strongroom.monitor.alerts import AlertManager, StoredAlert
    from strongroom.runtime.keyserver import KeyServer
    from strongroom.store.db import Store

__all__ = ["WINDOW_S", "Divergence", "DivergenceWatch", "LogSource", "WatchSettings", "divergences",
           "keyserver_watch", "stored_log"]

_log = logging.getLogger(__name__)

#: A key server's audit entries back to (at least) a time, newest first.
LogSource = Callable[[float], Iterable[AuditEvent]]

#: How far apart entries of one request may be on different servers, seconds.
WINDOW_S = 120.0


@dataclass(frozen=True)
class Divergence:
    """One request the key servers' logs disagree about."""

    kind: str
    principal: str
    obj: str
    blob_id: str
    at: float
    allowed: tuple[str, ...]
    denied: tuple[str, ...]
    nonce: str | None = None

    def describe(self) -> str:
        """One line for an alert (names and counts, nothing secret)."""
        return (f"{self.kind}: {self.principal} on {self.obj} (blob {self.blob_id}): "
                f"allowed by {', '.join(self.allowed) or 'none'}; denied by {', '.join(self.denied) or 'none'}")


@dataclass
class _Cluster:
    principal: str
    obj: str
    blob_id: str
    at: float
    nonce: str | None
    allowed: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)


def divergences(logs: Mapping[str, Iterable[AuditEvent]], *, threshold: int) -> list[Divergence]:
    """Requests the servers' release entries disagree about (see the module doc), oldest first."""
    entries = sorted(
        ((ev.at, server, ev) for server, events in logs.items() for ev in events if ev.action == ACTION),
        key=lambda item: item[0],
    )
    clusters: list[_Cluster] = []
    by_nonce: dict[str, _Cluster] = {}
    for at, server, ev in entries:
        nonce = ev.details.get("nonce") if isinstance(ev.details.get("nonce"), str) else None
        blob = str(ev.details.get("blob_id", ""))
        cluster = by_nonce.get(nonce) if nonce else None
        if cluster is None:
            cluster = next((c for c in reversed(clusters)
                            if (c.principal, c.obj, c.blob_id) == (ev.actor, ev.object, blob)
                            and at - c.at <= WINDOW_S and (nonce is None or c.nonce in (None, nonce))
                            and server not in c.allowed | c.denied), None)
        if cluster is None:
            cluster = _Cluster(ev.actor, ev.object, blob, at, nonce)
            clusters.append(cluster)
        if nonce and cluster.nonce is None:
            cluster.nonce = nonce
        if cluster.nonce:
            by_nonce[cluster.nonce] = cluster
        (cluster.allowed if ev.decision == "allow" else cluster.denied).add(server)
    out = []
    for c in clusters:
        if c.allowed and c.denied:
            kind = "disagreement"
        elif c.allowed and len(c.allowed) < threshold:
            kind = "below threshold"
        else:
            continue
        out.append(Divergence(kind, c.principal, c.obj, c.blob_id, c.at,
                              tuple(sorted(c.allowed)), tuple(sorted(c.denied)), c.nonce))
    return out


def stored_log(store: Store, *, page: int = 500) -> LogSource:
    """A key server's log read from its database (a read-only role suffices), newest first."""
    tree = StoredTree(store)

    def read(since: float) -> Iterator[AuditEvent]:
        end = tree.size()
        while end > 0:
            start = max(0, end - page)
            for ev in reversed(tree.events(start, end)):
                yield ev
                if ev.at < since:
                    return
            end = start

    return read


class DivergenceWatch:
    """Compares the key servers' logs every ``interval_s`` and alerts on each divergence once."""

    def __init__(self, sources: Mapping[str, LogSource], alerts: AlertManager | Callable[[], AlertManager | None],
                 *, threshold: int | Callable[[], int], lookback_s: float = 3600.0, settle_s: float = 30.0,
                 interval_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        """``alerts`` and ``threshold`` may be callables read each round (a key server's change at unseal).

        ``settle_s``: a request younger than this is not judged yet (its partials may
        still be in flight to the other servers).
        """
        self.sources = dict(sources)
        self._alerts = alerts
        self._threshold = threshold
        self.lookback_s = lookback_s
        self.settle_s = settle_s
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[StoredAlert]:
        """One comparison over the last ``lookback_s``; the alerts raised (repeats only counted)."""
        alerts = self._alerts if not callable(self._alerts) else self._alerts()
        if alerts is None:
            return []
        threshold = self._threshold() if callable(self._threshold) else self._threshold
        now = self.clock()
        logs: dict[str, list[AuditEvent]] = {}
        unreadable: list[str] = []
        for name, source in self.sources.items():
            try:
                logs[name] = list(source(now - self.lookback_s))
            except StrongroomError as exc:
                unreadable.append(name)
                _log.warning("key server log %s unreadable: %s", name, type(exc).__name__)
        if unreadable:
            return [alerts.raise_alert(Alert(
                rule="keyserver.log-unreadable", severity="warning", subject=name, obj=f"key server {name}",
                message=f"the audit log of key server {name} could not be read; releases are not compared",
                dedup_key=f"keyserver-log-unreadable:{name}:{int(now // 3600)}")) for name in unreadable]
        raised = []
        for d in divergences(logs, threshold=threshold):
            if d.at > now - self.settle_s:
                continue
            raised.append(alerts.raise_alert(Alert(
                rule="keyserver.divergence", severity="high", subject=d.principal, obj=d.obj,
                message=f"key servers' logs disagree: {d.describe()}",
                dedup_key=f"keyserver-divergence:{d.kind}:{d.nonce or d.blob_id}:{d.principal}:{int(d.at)}",
                details={"kind": d.kind, "blob_id": d.blob_id, "allowed": list(d.allowed),
                         "denied": list(d.denied)})))
        return raised

    def start(self) -> None:
        """Run :meth:`tick` every ``interval_s`` on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="keyserver-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except StrongroomError as exc:  # sealed, a log or the alert store down: next round
                _log.warning("key server divergence watch: %s", type(exc).__name__)

    def stop(self) -> None:
        """Stop the thread (waits for a round in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None


class WatchSettings(BaseSettings):
    """Which peers' logs a key server compares with its own, and how often (``STRONGROOM_KEYSERVER_*``)."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_KEYSERVER_", extra="ignore")

    name: str = Field(default="self", description="this key server's name in alerts")
    peer_logs: str = Field(default="", description="the other key servers' databases: name=URL,name=URL")
    watch_interval_s: float = Field(default=30.0, gt=0, le=3600, description="seconds between comparisons")


def keyserver_watch(server: KeyServer, settings: WatchSettings) -> DivergenceWatch | None:
    """The watch ``keyserver serve`` runs: its own log and its peers', alerts in its own manager.

    None when no peers are configured. Idle while sealed or before key generation
    (the threshold is read from this server's share each round).
    """
    from strongroom.runtime.threshold_keys import parse_servers
    from strongroom.store.db import Store

    peers = parse_servers(settings.peer_logs, obj="STRONGROOM_KEYSERVER_PEER_LOGS",
                          schemes=("sqlite:", "postgresql"))
    if not peers:
        return None

    def own(since: float) -> Iterable[AuditEvent]:
        audit = server.svc.audit
        if audit is None:
            raise Sealed("the key server is sealed", obj=settings.name)
        return audit.recent(since)

    def peer(url: str) -> LogSource:
        opened: list[LogSource] = []

        def read(since: float) -> Iterable[AuditEvent]:
            if not opened:  # opened at first use: a peer down at start does not stop this server
                opened.append(stored_log(Store.open(url, schema="current")))
            return opened[0](since)

        return read

    sources: dict[str, LogSource] = {settings.name: own, **{name: peer(url) for name, url in peers}}
    return DivergenceWatch(sources, lambda: server.svc.alerts,
                           threshold=lambda: len(server.share()[0].commitments),
                           interval_s=settings.watch_interval_s)

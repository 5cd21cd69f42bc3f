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
    for d in found: alerts.raise_(...)      # the operator's alert route
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from strongroom.audit.entry import AuditEvent
from strongroom.release.gate import ACTION

__all__ = ["WINDOW_S", "Divergence", "divergences"]

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
                              tuple(sorted(c.allowed)), tuple(sorted(c.denied))))
    return out

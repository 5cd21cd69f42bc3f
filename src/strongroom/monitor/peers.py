"""Who a principal is, for the detectors: peer groups (role/compartment) and risk flags.

The detectors compare a person with their *peer group* (people with the same
role and compartment) and watch people whose vetting lapsed or who resigned.
Two providers answer those questions (:class:`PeerGroups`):

* :class:`StaticPeers` — a fixed list of :class:`Person` (the synthetic lab of
  :mod:`strongroom.monitor.evaluation`, tests, a deployment without a signed
  directory);
* :class:`SignedDirectoryPeers` — the access layer's officer-signed
  enrollments, read through :class:`~strongroom.access.directory.DirectoryReader`
  and verified like every access decision; roles and compartments come from
  the enrollment, flags from its vetting record and employment state. The
  monitor sits beside the access layer, not above it, so it reads the
  directory through the small protocols here (:class:`SignedDirectory`,
  :class:`EnrolledPrincipal`), which the reader and its enrollments satisfy::

      reader = DirectoryReader(store, officer_keys, threshold)
      engine = RiskEngine(directory=SignedDirectoryPeers(reader), ...)

:class:`PeerPool` holds a group's recent values for the detectors' peer
baselines, always leaving the person being judged out.

Do not build peer groups from unsigned rows on a real deployment: an insider
who could edit their own role would choose a noisy peer group to hide in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DirectoryView", "EnrolledPrincipal", "Flag", "PeerGroups", "PeerPool", "Person",
           "SignedDirectory", "SignedDirectoryPeers", "StaticPeers", "VettingRecord",
           "enrollment_flags", "enrollment_person"]

#: A risk flag on a person: (since when, seconds since the epoch; what kind).
Flag = tuple[float, str]


@dataclass(frozen=True)
class Person:
    """Who a principal is, as far as peer comparison needs: role and compartment."""

    principal: str
    role: str = "unknown"
    compartment: str = "default"

    @property
    def peer_group(self) -> str:
        """People compared with each other: same role and compartment."""
        return f"{self.role}/{self.compartment}"


class PeerGroups(Protocol):
    """What the detectors ask about people."""

    def person(self, principal: str) -> Person:
        """The person (a default one, alone in the ``unknown/default`` group, when unknown)."""
        ...

    def group_size(self, group: str) -> int:
        """How many people are in ``group`` (0 when unknown)."""
        ...

    def flag(self, principal: str, at: float) -> Flag | None:
        """The latest flag raised on ``principal`` at or before ``at``, if any."""
        ...


class VettingRecord(Protocol):
    """A vetting record as the detectors read it (``access.directory.Vetting``)."""

    @property
    def status(self) -> str: ...
    @property
    def granted(self) -> int: ...
    @property
    def expires(self) -> int: ...
    @property
    def flags(self) -> Sequence[str]: ...


class EnrolledPrincipal(Protocol):
    """A verified enrollment as the detectors read it (``access.directory.Enrollment``)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def compartments(self) -> Sequence[str]: ...
    @property
    def vetting(self) -> VettingRecord: ...
    @property
    def employment(self) -> str: ...
    @property
    def serial(self) -> int: ...
    @property
    def issued(self) -> int: ...


class DirectoryView(Protocol):
    """A verified directory: enrollments by key id and the revoked key ids (``access.directory.Directory``)."""

    @property
    def principals(self) -> Mapping[str, EnrolledPrincipal]: ...
    @property
    def revoked_keys(self) -> AbstractSet[str]: ...


class SignedDirectory(Protocol):
    """Where verified directory views come from (``access.directory.DirectoryReader``)."""

    def view(self) -> DirectoryView:
        """The directory as the officers signed it, every signature checked."""
        ...


def _latest(flags: Iterable[Flag], at: float) -> Flag | None:
    live = [f for f in flags if f[0] <= at]
    return max(live) if live else None


class StaticPeers:
    """Principal -> :class:`Person` from a fixed list; flags only as given."""

    def __init__(self, people: Iterable[Person] = (),
                 flags: Mapping[str, Iterable[Flag]] | None = None) -> None:
        self._people = {p.principal: p for p in people}
        self._groups: dict[str, int] = {}
        for p in self._people.values():
            self._groups[p.peer_group] = self._groups.get(p.peer_group, 0) + 1
        self._flags = {k: list(v) for k, v in (flags or {}).items()}

    def person(self, principal: str) -> Person:
        """The person (a default one when unknown)."""
        return self._people.get(principal) or Person(principal)

    def group_size(self, group: str) -> int:
        """How many people the list puts in ``group`` (0 when unknown)."""
        return self._groups.get(group, 0)

    def flag(self, principal: str, at: float) -> Flag | None:
        """The latest given flag at or before ``at``."""
        return _latest(self._flags.get(principal, ()), at)


def enrollment_person(e: EnrolledPrincipal) -> Person:
    """The peer-comparison view of an enrollment: all its roles, all its compartments.

    Services form their own groups (``service:…``): a pipeline is compared with
    pipelines, never with people.
    """
    role = "+".join(sorted(e.roles)) or "none"
    if e.kind == "service":
        role = f"service:{role}"
    return Person(e.name, role, "+".join(sorted(e.compartments)) or "none")


def enrollment_flags(e: EnrolledPrincipal) -> list[Flag]:
    """Flags an enrollment's vetting record and employment state carry, with their times.

    * vetting ``lapsed``/``suspended``/``revoked`` -> ``vetting-<status>`` from
      when the officers issued that enrollment;
    * continuous-evaluation flags on the vetting record -> ``vetting:<flags>``, likewise;
    * an active vetting that expires -> ``vetting-expired`` from its expiry;
    * employment ``leave``/``terminated`` (a resignation) -> ``employment-<state>``.
    """
    issued = float(e.issued or e.vetting.granted)
    out: list[Flag] = []
    if e.vetting.status != "active":
        out.append((issued, f"vetting-{e.vetting.status}"))
    elif e.vetting.expires > 0:
        out.append((float(e.vetting.expires), "vetting-expired"))
    if e.vetting.flags:
        out.append((issued, "vetting:" + ",".join(sorted(e.vetting.flags))))
    if e.employment != "active":
        out.append((issued, f"employment-{e.employment}"))
    return out


class SignedDirectoryPeers:
    """Peer groups and flags from officer-signed enrollments (the access layer's directory).

    The verified view is rebuilt at most every ``refresh_s`` seconds of
    ``clock`` time (signature checks are cached by the reader); call
    :meth:`refresh` to force it, e.g. after an officer publishes an enrollment.
    Revoked keys' enrollments are left out; a principal known by name only
    through a revoked key is treated as unknown.
    """

    def __init__(self, reader: SignedDirectory, *, refresh_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.refresh_s = refresh_s
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._static = StaticPeers()

    def refresh(self) -> None:
        """Re-read and re-verify the directory now."""
        view = self.reader.view()
        live = sorted((e for kid, e in view.principals.items() if kid not in view.revoked_keys),
                      key=lambda e: (e.issued, e.serial))  # a name's newest enrollment wins
        flags: dict[str, list[Flag]] = {}
        for e in live:  # flags from every current key of the name
            flags.setdefault(e.name, []).extend(enrollment_flags(e))
        static = StaticPeers((enrollment_person(e) for e in live), flags)
        with self._lock:
            self._static = static
            self._loaded_at = self.clock()

    def _current(self) -> StaticPeers:
        loaded = self._loaded_at
        if loaded is None or self.clock() - loaded >= self.refresh_s:
            self.refresh()
        return self._static

    def person(self, principal: str) -> Person:
        """The enrolled person's roles and compartments (a default person when not enrolled)."""
        return self._current().person(principal)

    def group_size(self, group: str) -> int:
        """How many enrolled principals share the group."""
        return self._current().group_size(group)

    def flag(self, principal: str, at: float) -> Flag | None:
        """The latest vetting/employment flag of the enrollment at or before ``at``."""
        return self._current().flag(principal, at)


def _kth_excluding(values: Sequence[float], mine: Sequence[float], rank: int) -> float:
    """The ``rank``-th smallest of sorted ``values`` once sorted ``mine`` (a sub-multiset) is removed."""
    idx, j = rank, 0
    while j < len(mine) and mine[j] <= values[idx]:
        idx += 1
        j += 1
    return values[idx]


class PeerPool:
    """Per-group values by day and person; percentiles over the *other* members' recent values.

    A person's own values never count in their peer baseline, so someone whose
    behaviour changes cannot drag their group's line up ahead of themselves.
    Percentiles interpolate linearly (as numpy's default); each group's sorted
    values are computed once per ``since`` day.
    """

    def __init__(self, keep_days: int, minimum: int = 20) -> None:
        self.keep_days = keep_days
        self.minimum = minimum
        self._values: dict[str, deque[tuple[int, str, float]]] = {}
        self._sorted: dict[str, tuple[int, list[float], dict[str, list[float]]]] = {}

    def add(self, group: str, day: int, person: str, value: float) -> None:
        """Record ``person``'s value for ``day``."""
        q = self._values.setdefault(group, deque())
        q.append((day, person, value))
        while q and q[0][0] < day - self.keep_days:
            q.popleft()

    def percentile(self, group: str, person: str, q: float, since: int) -> float | None:
        """The ``q``-th percentile of others' values from day ``since`` on (None: too few)."""
        cached = self._sorted.get(group)
        if cached is None or cached[0] != since:
            rows = [(who, v) for d, who, v in self._values.get(group, ()) if d >= since]
            per: dict[str, list[float]] = {}
            for who, v in rows:
                per.setdefault(who, []).append(v)
            for own in per.values():
                own.sort()
            cached = (since, sorted(v for _, v in rows), per)
            self._sorted[group] = cached
        _, values, per = cached
        mine = per.get(person, [])
        n = len(values) - len(mine)
        if n < self.minimum:
            return None
        pos = q / 100 * (n - 1)
        lo = int(pos)
        low = _kth_excluding(values, mine, lo)
        high = _kth_excluding(values, mine, min(lo + 1, n - 1))
        return low + (high - low) * (pos - lo)

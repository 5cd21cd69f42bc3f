"""The log's newest entries in memory: each read from the database and parsed once per process.

An unsealed key service follows its own audit log from several threads: the
state guard's restriction journal, its egress ledger check and its seal orders
(:mod:`strongroom.runtime.state_guard`), and the monitor loop's detectors
(:mod:`strongroom.runtime.monitor_loop`). Each keeps its own cursor and reads
the entries past it with :meth:`AuditLog.events`; without this cache every
entry was read and parsed once per follower. :class:`RecentEntries` keeps the
newest entries (the bodies the log's writer committed, and those read back for
entries other processes wrote) and parses each body once, on first read::

    recent = RecentEntries(capacity=4096)
    recent.add_bodies(first_index, bodies)    # the writer, after its batch committed
    recent.get(start, end)                    # list of AuditEvent, or None when any is absent
    recent.put(events)                        # what a database read returned
    recent.bound(size)                        # the head is at ``size``: forget anything past it

Entries are immutable once committed; the cache keeps what this process
committed or first read, so rows a database administrator edits afterwards
do not change what the followers see (``audit verify`` finds the edit). A
head that moved backwards (a truncated log, which the checkpoint publisher
reports as a rollback) empties the cache past it. Every caller gets the same
:class:`AuditEvent` objects: treat them, and their ``details``, as read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from strongroom.audit.entry import AuditEvent

__all__ = ["DEFAULT_CAPACITY", "RecentEntries"]

#: Entries kept (the newest): a few seconds of releases at a host's peak rate,
#: longer than the followers' intervals (1-2 s).
DEFAULT_CAPACITY = 8192


class RecentEntries:
    """The newest ``capacity`` entries by index, each parsed at most once (thread-safe)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._items: dict[int, AuditEvent | bytes] = {}
        self._top = -1  # the highest index held
        self._lock = threading.Lock()

    def add_bodies(self, first: int, bodies: Sequence[bytes]) -> None:
        """Entries ``first, first + 1, ...`` as committed (parsed later, when first read)."""
        top = first + len(bodies) - 1
        with self._lock:
            items = self._items
            if top == first:  # one entry: every release's commit
                items[first] = bodies[0]
            else:
                items.update(zip(range(first, top + 1), bodies, strict=True))
            if top > self._top:
                self._top = top
            if len(items) > self.capacity + self.capacity // 4:
                self._trim()

    def put(self, events: Iterable[AuditEvent]) -> None:
        """Entries read from the database; one already held is kept as it was."""
        with self._lock:
            items = self._items
            for ev in events:
                if ev.index > self._top - self.capacity:
                    items.setdefault(ev.index, ev)
                    self._top = max(self._top, ev.index)
            self._trim()

    def get(self, start: int, end: int) -> list[AuditEvent] | None:
        """Entries ``start <= index < end``, or None when any of them is not held."""
        if end <= start:
            return []
        with self._lock:
            found = [self._items.get(i) for i in range(start, end)]
        if any(x is None for x in found):
            return None
        out: list[AuditEvent] = []
        parsed: list[AuditEvent] = []
        for x in found:
            if isinstance(x, bytes):
                x = AuditEvent.from_body(x)
                parsed.append(x)
            assert x is not None
            out.append(x)
        if parsed:
            with self._lock:
                for ev in parsed:
                    if isinstance(self._items.get(ev.index), bytes):
                        self._items[ev.index] = ev
        return out

    def bound(self, size: int) -> None:
        """The head reads ``size``: drop any entry at or past it (the log was cut back)."""
        if size > self._top:
            return
        with self._lock:
            for i in [i for i in self._items if i >= size]:
                del self._items[i]
            self._top = size - 1

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
            self._top = -1

    def gap(self, start: int, end: int) -> tuple[int, int]:
        """The smallest span within ``[start, end)`` holding every index not held."""
        with self._lock:
            absent = [i for i in range(start, end) if i not in self._items]
        return (absent[0], absent[-1] + 1) if absent else (start, start)

    def _trim(self) -> None:
        """With the lock held: keep only indices above ``top - capacity`` (swept in bulk)."""
        items = self._items
        if len(items) <= self.capacity + self.capacity // 4:
            return
        floor = self._top - self.capacity
        for i in [i for i in items if i <= floor]:
            del items[i]

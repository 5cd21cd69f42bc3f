"""The log's newest entries in memory: the followers read each entry from the database once."""

from __future__ import annotations

from sqlalchemy import event

from strongroom.audit import AuditLog
from strongroom.audit.recent import RecentEntries
from strongroom.crypto.note import Ed25519Signer
from strongroom.redteam.tamper import truncate_tail
from strongroom.store.db import Store

from audit_helpers import fill


def test_own_entries_come_from_memory_and_equal_the_stored_ones(
        audit_log: AuditLog, store: Store, signer: Ed25519Signer) -> None:
    fill(audit_log, 20)
    reads: list[str] = []
    event.listen(audit_log._tree._reader, "before_cursor_execute",
                 lambda *a: reads.append(str(a[2])) if "body" in str(a[2]) else None)
    first = audit_log.events(5, 20)
    again = audit_log.events(5, 20)
    assert reads == []  # what this process committed is never read back
    assert [e.index for e in first] == list(range(5, 20))
    assert [e.body for e in first] == [e.body for e in audit_log._tree.events(5, 20)]
    assert all(a is b for a, b in zip(first, again, strict=True))  # parsed once
    reads.clear()

    # Entries another process wrote are read once, then served from memory too.
    other = AuditLog(store, signer)
    try:
        fill(other, 5)
    finally:
        other.close()
    assert audit_log.size() == 25
    fresh = audit_log.events(18, 25)
    assert len(reads) == 1 and [e.index for e in fresh] == list(range(18, 25))
    assert audit_log.events(20, 25) == fresh[2:] and len(reads) == 1


def test_a_truncated_head_drops_what_was_cut(audit_log: AuditLog, store: Store) -> None:
    fill(audit_log, 12)
    assert len(audit_log.events(0, 12)) == 12
    truncate_tail(store, 8)
    assert audit_log.size() == 8
    assert [e.index for e in audit_log.events(0, 12)] == list(range(8))  # as stored now


def test_capacity_bounds_memory_and_misses_fall_back_to_the_database() -> None:
    recent = RecentEntries(capacity=8)
    recent.add_bodies(0, [b'{"index":%d}' % i for i in range(40)])
    assert len(recent._items) <= 8 + 8 // 4
    assert recent.get(0, 4) is None and recent.gap(0, 40) == (0, 32)
    assert recent.get(39, 39) == []


def test_a_range_older_than_the_cache_keeps_is_read_once(audit_log: AuditLog) -> None:
    """A replay from the past (the detectors' at unseal, a guard's first pass) while the cache
    holds the newest entries: each page is read from the database once, not twice."""
    fill(audit_log, 40)
    audit_log._recent = RecentEntries(capacity=8)
    assert len(audit_log.events(32, 40)) == 8  # the newest entries are held, as in an agent
    reads: list[str] = []
    event.listen(audit_log._tree._reader, "before_cursor_execute",
                 lambda *a: reads.append(str(a[2])) if "body" in str(a[2]) else None)
    old = audit_log.events(0, 6)
    assert [e.index for e in old] == list(range(6))
    assert len(reads) == 1
    assert [e.body for e in old] == [e.body for e in audit_log._tree.events(0, 6)]

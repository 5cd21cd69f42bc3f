"""Attacks on the audit log's tables, written the way an insider with SQL access would.

Imported by name from tests in any folder (not a test module).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text

from strongroom.store.db import Store


def _plain_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH with nothing but hashlib."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _plain_root(leaves[:k]) + _plain_root(leaves[k:])).digest()


def truncate_tail(store: Store, keep: int) -> None:
    """Delete every entry from ``keep`` on (and the checkpoints over them), then recompute
    the stored tree nodes and the head with plain SHA-256 so that the rows agree again."""
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE idx >= :k"), {"k": keep})
        conn.execute(text("DELETE FROM audit_checkpoints WHERE size > :k"), {"k": keep})
        conn.execute(text("DELETE FROM audit_nodes"))
        bodies = conn.execute(text("SELECT body FROM audit_entries ORDER BY idx")).scalars()
        level = [hashlib.sha256(b"\x00" + bytes(b)).digest() for b in bodies]
        leaves, height = list(level), 1
        while len(level) >= 2:
            level = [hashlib.sha256(b"\x01" + level[2 * i] + level[2 * i + 1]).digest()
                     for i in range(len(level) // 2)]
            for i, h in enumerate(level):
                conn.execute(text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                             {"l": height, "i": i, "h": h})
            height += 1
        last = conn.execute(text("SELECT MAX(size) FROM audit_checkpoints")).scalar() or 0
        conn.execute(text("UPDATE audit_head SET size = :s, root = :r, checkpoint_size = :c "
                          "WHERE id = 1"), {"s": keep, "r": _plain_root(leaves), "c": last})

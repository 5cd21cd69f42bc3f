"""What a database administrator (or a compromised log server) does to the audit log.

The red-team scenarios edit, delete, truncate and fork the log of their own
target, let the verifiers find it, and then put every row back
(:func:`snapshot` / :func:`restore`). Never point these at a deployment you
care about: they write to the audit tables directly, as an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, delete, insert, select, text, update

from strongroom.audit.merkle import leaf_hash, root_of
from strongroom.errors import InvalidInput
from strongroom.store.tables.audit import AuditCheckpoint, AuditEntry, AuditHead, AuditNode

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.audit.witness import Witness
    from strongroom.store.db import Store

__all__ = ["add_checkpoint_body", "delete_entry", "edit_entry", "forked_note", "restore",
           "restore_entries", "size_of", "snapshot", "truncate", "truncate_tail",
           "witness_for"]

_TABLES: tuple[Table, ...] = tuple(cast(Table, t.__table__) for t in
                                   (AuditHead, AuditEntry, AuditNode, AuditCheckpoint))
_HEAD, _ENTRIES, _NODES, _CHECKPOINTS = _TABLES

Snapshot = dict[str, list[dict[str, Any]]]


def snapshot(store: Store) -> Snapshot:
    """Every row of the audit tables."""
    with store.engine.connect() as conn:
        return {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in _TABLES}


def restore(store: Store, snap: Snapshot) -> None:
    """Put the audit tables back exactly as in ``snap`` (one transaction)."""
    with store.engine.begin() as conn:
        for t in _TABLES:
            conn.execute(delete(t))
            rows = snap[t.name]
            if rows:
                conn.execute(insert(t), rows)


def _size(conn: Any) -> int:
    return int(conn.execute(select(_HEAD.c.size).where(_HEAD.c.id == 1)).scalar_one())


def _keep(conn: Any, idx: int, saved: list[dict[str, Any]] | None) -> None:
    """Remember entry ``idx``'s row as it is (to put back with :func:`restore_entries`)."""
    if saved is not None:
        saved.append(dict(conn.execute(select(_ENTRIES).where(_ENTRIES.c.idx == idx))
                          .mappings().one()))


def restore_entries(store: Store, saved: Sequence[dict[str, Any]]) -> None:
    """Put back exactly the entry rows ``saved`` (only those: entries appended since stay)."""
    with store.engine.begin() as conn:
        for row in saved:
            conn.execute(delete(_ENTRIES).where(_ENTRIES.c.idx == row["idx"]))
            conn.execute(insert(_ENTRIES), [row])


def edit_entry(store: Store, saved: list[dict[str, Any]] | None = None, *,
               rehash: bool = True) -> int:
    """Flip the newest ``deny`` to ``allow`` (else the middle entry's decision); leaf hash
    recomputed unless ``rehash`` is false (a live log keeps appending, and an append would
    fold a changed leaf hash into its tree for good). ``saved`` receives the row as it was."""
    with store.engine.begin() as conn:
        size = _size(conn)
        if size < 2:
            raise InvalidInput("the log is too short to tamper with", obj="audit log")
        rows = conn.execute(select(_ENTRIES.c.idx, _ENTRIES.c.body)
                            .order_by(_ENTRIES.c.idx.desc())).all()
        idx, body = next(((int(i), bytes(b)) for i, b in rows
                          if json.loads(b).get("decision") == "deny"),
                         (int(rows[len(rows) // 2][0]), bytes(rows[len(rows) // 2][1])))
        _keep(conn, idx, saved)
        doc = json.loads(body)
        doc["decision"] = "allow" if doc.get("decision") == "deny" else "deny"
        new = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        conn.execute(update(_ENTRIES).where(_ENTRIES.c.idx == idx)
                     .values(body=new, **({"leaf_hash": leaf_hash(new)} if rehash else {})))
        return idx


def delete_entry(store: Store, saved: list[dict[str, Any]] | None = None) -> int:
    """Delete the entry in the middle of the log (``saved`` receives its row)."""
    with store.engine.begin() as conn:
        idx = _size(conn) // 2
        _keep(conn, idx, saved)
        conn.execute(delete(_ENTRIES).where(_ENTRIES.c.idx == idx))
        return idx


def truncate(store: Store, keep_fraction: float) -> int:
    """Cut the tail and rewind head, nodes and checkpoints consistently; the new size."""
    with store.engine.begin() as conn:
        size = _size(conn)
        cut = max(1, int(size * keep_fraction))
        leaves = [bytes(h) for (h,) in conn.execute(
            select(_ENTRIES.c.leaf_hash).where(_ENTRIES.c.idx < cut).order_by(_ENTRIES.c.idx))]
        conn.execute(delete(_ENTRIES).where(_ENTRIES.c.idx >= cut))
        for level, idx in conn.execute(select(_NODES.c.level, _NODES.c.idx)).all():
            if (int(idx) + 1) << int(level) > cut:
                conn.execute(delete(_NODES).where(_NODES.c.level == level, _NODES.c.idx == idx))
        conn.execute(delete(_CHECKPOINTS).where(_CHECKPOINTS.c.size > cut))
        latest = conn.execute(select(_CHECKPOINTS.c.size).order_by(_CHECKPOINTS.c.size.desc())
                              .limit(1)).scalar_one_or_none()
        conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(
            size=cut, root=root_of(leaves), checkpoint_size=int(latest or 0)))
        return cut


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
    the stored tree nodes and the head with plain SHA-256 and SQL (nothing of strongroom's),
    so that the rows agree again: issue 15's attack by a database administrator."""
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


def witness_for(log: AuditLog) -> Witness:
    """An independent, in-memory witness that trusts ``log``'s checkpoint key."""
    from strongroom.audit.witness import Witness
    from strongroom.crypto.note import CosignatureSigner, new_verifier

    signer = CosignatureSigner("witness.redteam.example/w1", Ed25519PrivateKey.generate())
    return Witness(signer, [new_verifier(log.signer.vkey)])  # type: ignore[list-item]


def size_of(note: str) -> int:
    """The tree size a signed checkpoint states."""
    return int(note.split("\n")[1])


def add_checkpoint_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """A C2SP tlog-witness ``add-checkpoint`` request body."""
    lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def forked_note(log: AuditLog, genuine: str) -> str:
    """A checkpoint of the same size as ``genuine`` with another root, signed by the log key."""
    from strongroom.audit.checkpoint import Checkpoint, sign_checkpoint
    from strongroom.crypto.note import parse_note

    text, _ = parse_note(genuine)
    cp = Checkpoint.parse(text)
    other = bytes(b ^ 0xFF for b in cp.root)
    return sign_checkpoint(Checkpoint(cp.origin, cp.size, other, cp.extensions), log.signer)

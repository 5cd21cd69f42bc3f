"""Full verification of the stored audit log: replay every entry, node and checkpoint.

:func:`verify_log` reads one snapshot of the audit tables and checks every
entry's bytes against its leaf hash and its position, every stored interior
node, the head, every stored checkpoint (log signature, cosignatures from the
configured witnesses, root at its size) and checkpoints kept outside the
database (to detect a rollback). The first divergence raises
:class:`IntegrityError` naming the entry or checkpoint; success returns a
:class:`VerifyReport`. :meth:`strongroom.audit.log.AuditLog.verify` calls it::

    report = verify_log(tree, signing.opened, trusted=[published_note])
    print(report.summary())
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select

from strongroom.audit.checkpoint import OpenedCheckpoint
from strongroom.audit.entry import entry_index
from strongroom.audit.merkle import EMPTY_ROOT, node_hash, perfect_subtrees
from strongroom.audit.tree import CHECKPOINTS, ENTRIES, HEAD, NODES, StoredTree, divergence
from strongroom.crypto.note import NoteError
from strongroom.errors import IntegrityError

__all__ = ["VerifyReport", "verify_log"]

_FETCH = 10_000


@dataclass
class VerifyReport:
    """What :meth:`AuditLog.verify` checked."""

    size: int
    root: bytes
    checkpoints: int = 0
    cosignatures: int = 0
    trusted: int = 0
    latest_checkpoint: str | None = None

    def summary(self) -> str:
        """One line for people."""
        return (
            f"verified {self.size} entries, root {base64.b64encode(self.root).decode()}, "
            f"{self.checkpoints} signed checkpoints, {self.cosignatures} witness cosignatures, "
            f"{self.trusted} external checkpoints"
        )


def verify_log(
    tree: StoredTree,
    opened: Callable[[str], OpenedCheckpoint],
    trusted: Iterable[str] = (),
    anchor_path: Path | None = None,
) -> VerifyReport:
    """Replay the whole log; raise :class:`IntegrityError` naming the first divergence.

    ``opened`` checks a note's signatures (the log's key and its witnesses');
    ``trusted`` and the ``anchor_path`` file are checkpoints kept outside the
    database.
    """
    with tree.read("verify the log") as conn:
        head = conn.execute(select(HEAD).where(HEAD.c.id == 1)).one()
        size = int(head.size)
        levels = [_verify_entries(conn, size)]
        _verify_nodes(conn, levels)
        cps = [
            (int(r[0]), str(r[1]))
            for r in conn.execute(
                select(CHECKPOINTS.c.size, CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size)
            )
        ]
        cp_pointer = int(head.checkpoint_size)

    def root_at(n: int) -> bytes:
        if n == 0:
            return EMPTY_ROOT
        keys = perfect_subtrees(0, n)
        h = levels[keys[-1][0]][keys[-1][1]]
        for lv, i in reversed(keys[:-1]):
            h = node_hash(levels[lv][i], h)
        return h

    root = root_at(size)
    if bytes(head.root) != root:
        raise divergence(f"the head's root does not match the {size} entries")
    report = VerifyReport(size=size, root=root)
    good = 0
    for cp_size, note in cps:
        checked = _verify_checkpoint(opened, note, cp_size, size, root_at, good)
        good = cp_size
        report.checkpoints += 1
        report.cosignatures += len(checked.cosigners)
        report.latest_checkpoint = note
    if cps and cps[-1][0] != cp_pointer:
        raise divergence(
            f"the head points at checkpoint {cp_pointer}, the latest stored is {cps[-1][0]}"
        )
    if not cps and cp_pointer:
        raise divergence(f"signed checkpoint of size {cp_pointer} is missing")
    external = list(trusted)
    if anchor_path is not None and anchor_path.exists():
        external.append(anchor_path.read_text())
    for note in external:
        _verify_trusted(opened, note, size, root_at)
        report.trusted += 1
    return report


def _verify_entries(conn: Connection, size: int) -> list[bytes]:
    leaves: list[bytes] = []
    sha = hashlib.sha256
    result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
        select(ENTRIES.c.idx, ENTRIES.c.leaf_hash, ENTRIES.c.body).order_by(ENTRIES.c.idx)
    )
    expected = 0
    for idx, stored_hash, body in result:
        idx = int(idx)
        body = bytes(body)
        if idx != expected:
            if idx > expected:
                raise divergence(
                    f"entry {expected} is missing (deleted)"
                    + (f"; entries {expected}..{idx - 1} are gone" if idx > expected + 1 else ""),
                    obj=f"audit entry {expected}",
                )
            raise divergence(f"duplicate entry {idx}", obj=f"audit entry {idx}")
        h = sha(b"\x00" + body).digest()
        if h != bytes(stored_hash):
            raise divergence(
                "entry bytes were edited: they no longer match the entry's leaf hash",
                obj=f"audit entry {idx}",
            )
        claimed = entry_index(body)
        if claimed != idx:
            raise divergence(
                f"entry stored at position {idx} records index {claimed}: "
                "entries were swapped or moved",
                obj=f"audit entry {idx}",
            )
        leaves.append(h)
        expected += 1
        if expected > size:
            raise divergence(
                f"entry {idx} lies beyond the head's size {size}",
                obj=f"audit entry {idx}",
            )
    if expected < size:
        raise divergence(
            f"the tail was truncated: the head records {size} entries, "
            f"entries {expected}..{size - 1} are missing",
            obj=f"audit entry {expected}",
        )
    return leaves


def _verify_nodes(conn: Connection, levels: list[list[bytes]]) -> None:
    level = 1
    while len(levels[level - 1]) >= 2:
        below = levels[level - 1]
        computed = [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)]
        rows = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
            select(NODES.c.idx, NODES.c.hash)
            .where(NODES.c.level == level)
            .order_by(NODES.c.idx)
        )
        expected = 0
        for idx, h in rows:
            idx = int(idx)
            first, last = expected << level, ((expected + 1) << level) - 1
            if idx != expected or idx >= len(computed):
                raise divergence(
                    f"stored tree node (level {level}, index {expected}) over entries "
                    f"{first}..{last} is missing or misplaced",
                    obj=f"audit entry {first}",
                )
            if bytes(h) != computed[idx]:
                raise divergence(
                    f"stored tree node (level {level}, index {idx}) does not match entries "
                    f"{first}..{last}: one of them was edited together with its leaf hash",
                    obj=f"audit entry {first}",
                )
            expected += 1
        if expected != len(computed):
            raise divergence(
                f"stored tree node (level {level}, index {expected}) is missing",
                obj=f"audit entry {expected << level}",
            )
        levels.append(computed)
        level += 1


def _verify_checkpoint(
    opened: Callable[[str], OpenedCheckpoint],
    note: str,
    cp_size: int,
    size: int,
    root_at: Callable[[int], bytes],
    good: int,
) -> OpenedCheckpoint:
    where = f"checkpoint {cp_size}"
    try:
        checked = opened(note)
    except NoteError as exc:
        raise divergence(f"signature check failed: {exc.message}", obj=where) from exc
    cp = checked.checkpoint
    if cp.size != cp_size:
        raise divergence(f"stored under size {cp_size} but signed for size {cp.size}",
                         obj=where)
    unknown = sorted({s.name for s in checked.note.unverified})
    if unknown:
        raise IntegrityError(
            f"carries a cosignature from unknown witness {', '.join(unknown)}",
            obj=where,
            remedy="if this host should know that witness (a restored or new host), set "
                   "STRONGROOM_WITNESSES to the same '<url> <verifier key>' pairs as the host "
                   "that wrote the log and run again; otherwise treat the log as tampered with "
                   "and restore it from a trusted copy",
        )
    if cp.size > size:
        raise divergence(
            f"the log has only {size} entries but a signed checkpoint covers {cp.size}: "
            f"the tail was truncated (entries {size}..{cp.size - 1} are gone)",
            obj=where,
        )
    if root_at(cp.size) != cp.root:
        raise divergence(
            f"the entries do not match the signed root: history between entries {good} "
            f"and {cp.size - 1} was rewritten",
            obj=where,
        )
    return checked


def _verify_trusted(
    opened: Callable[[str], OpenedCheckpoint], note: str, size: int,
    root_at: Callable[[int], bytes],
) -> None:
    try:
        cp = opened(note).checkpoint
    except NoteError as exc:
        raise divergence(f"external checkpoint does not verify: {exc.message}") from exc
    if cp.size > size:
        raise divergence(
            f"the log was rolled back: a checkpoint signed for size {cp.size} exists "
            f"outside the database, but the log has only {size} entries "
            f"(entries {size}..{cp.size - 1} are gone)",
            obj=f"checkpoint {cp.size}",
        )
    if root_at(cp.size) != cp.root:
        raise divergence(
            f"the log forked: the entries do not match the checkpoint of size {cp.size} "
            "kept outside the database",
            obj=f"checkpoint {cp.size}",
        )

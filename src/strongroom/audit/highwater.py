"""The log's high-water mark: the largest tree it signed or saw cosigned, kept off the database.

A database administrator can delete the tail of the audit log and recompute
its tree: every row is then consistent again, and the checkpoints stored in the
same database can go too. What the administrator cannot reach is what the log
told others: the checkpoints its witnesses cosigned, and ``audit-high-water``,
a small file (mode 0600) in the data directory where the process holding the
unsealed log records every checkpoint it signs or sees cosigned. A stored tree
shorter than, or not extending, any of those is a rollback::

    mark = HighWater(home / HIGH_WATER_NAME, log)
    for m in mark.marks() + witness_marks(log):
        check_extends(log, m)          # IntegrityError names the entries that are gone

The file holds two signed notes (checked with the log's key when read), so a
copy of it is evidence an outsider can check too::

    {"origin": ..., "signed": <latest signed checkpoint>, "cosigned": <latest cosigned one>}
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.audit.merkle import InvalidProof, verify_consistency
from strongroom.audit.witness import WitnessError, write_atomically
from strongroom.errors import IntegrityError

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

__all__ = [
    "HIGH_WATER_NAME",
    "ROLLBACK_REMEDY",
    "HighWater",
    "TreeMark",
    "check_extends",
    "witness_marks",
]

log = logging.getLogger(__name__)

#: The file's name in the data directory.
HIGH_WATER_NAME = "audit-high-water"
ROLLBACK_REMEDY = (
    "restore the audit tables from a backup taken after that checkpoint (or find who "
    "deleted the entries: the missing releases happened); releases stay refused until "
    "the stored log extends it again"
)
#: How long a witness may take to say what it last cosigned, at unseal and in verify.
WITNESS_VIEW_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class TreeMark:
    """A tree size and root that something outside the database vouches for."""

    size: int
    root: bytes
    source: str
    note: str | None = None

    def describe(self) -> str:
        """``checkpoint of size N (root …) held by <source>``."""
        root = base64.b64encode(self.root).decode()
        return f"checkpoint of size {self.size} (root {root}) held by {self.source}"


def check_extends(
    audit: AuditLog, mark: TreeMark, head: tuple[int, bytes] | None = None
) -> None:
    """Raise :class:`IntegrityError` unless the stored tree (``head``: size, root) extends ``mark``."""
    size, root = head if head is not None else audit.head()[:2]
    obj = f"audit log {audit.origin}"
    if mark.size > size:
        raise IntegrityError(
            f"the log was rolled back: {mark.describe()}, but the log has only {size} "
            f"entries (entries {size}..{mark.size - 1} are gone)",
            obj=obj, remedy=ROLLBACK_REMEDY,
        )
    if mark.size == 0:
        return
    try:
        if mark.size == size:
            if root != mark.root:
                raise InvalidProof("the roots differ")
        else:
            proof = audit.consistency(mark.size, size)
            verify_consistency(mark.size, size, proof, mark.root, root)
    except (InvalidProof, IntegrityError) as exc:
        raise IntegrityError(
            f"the log was rewritten: the stored tree of {size} entries does not extend the "
            f"{mark.describe()} (entries before {mark.size} were changed or deleted and the "
            f"tree recomputed)",
            obj=obj, remedy=ROLLBACK_REMEDY,
        ) from exc


def witness_marks(audit: AuditLog, timeout: float = WITNESS_VIEW_TIMEOUT_S) -> list[TreeMark]:
    """What each reachable witness last cosigned for this log (unreachable ones are logged)."""
    marks = []
    for witness in audit.witnesses:
        try:
            view = witness.latest(audit.origin, timeout=timeout)
        except WitnessError as exc:
            log.warning("witness %s did not say what it cosigned: %s", witness.name, exc.message)
            continue
        if view is not None:
            cp = view.checkpoint
            marks.append(TreeMark(cp.size, cp.root, f"witness {view.witness}", view.note))
    return marks


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class HighWater:
    """The largest checkpoint signed or seen cosigned: in memory and, given a path, in a file.

    Several processes of one data directory (the key agent, server workers)
    share the file; it only ever moves forward.
    """

    def __init__(self, path: Path | None, audit: AuditLog) -> None:
        self.path = path
        self.audit = audit
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}

    def _mark(self, note: str, source: str) -> TreeMark:
        try:
            cp = self.audit.opened(note).checkpoint
        except IntegrityError as exc:
            raise IntegrityError(
                f"a checkpoint kept as the log's high-water mark does not verify: {exc.message}",
                obj=str(self.path or "high-water mark"),
                remedy="the file was edited or belongs to another log; keep it for the "
                "investigation and move it aside only once the log is checked",
            ) from exc
        return TreeMark(cp.size, cp.root, source, note)

    def _read_file(self) -> dict[str, str]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"the log's high-water file cannot be read ({exc})",
                                 obj=str(self.path)) from exc
        if data.get("origin") != self.audit.origin:
            raise IntegrityError(
                f"the high-water file is for log {data.get('origin')!r}, not {self.audit.origin!r}",
                obj=str(self.path),
                remedy="if this log was deliberately created anew, move the file aside",
            )
        return {k: str(data[k]) for k in ("signed", "cosigned") if data.get(k)}

    def marks(self) -> list[TreeMark]:
        """The signed and cosigned marks known to this process and in the file."""
        with self._lock:
            notes = dict(self._notes)
        found = {k: self._mark(v, f"this process ({k})") for k, v in notes.items()}
        for kind, note in self._read_file().items():
            mark = self._mark(note, f"the high-water file {self.path} ({kind})")
            if kind not in found or mark.size > found[kind].size:
                found[kind] = mark
        return list(found.values())

    def size(self) -> int:
        """The largest size vouched for (0 before any checkpoint)."""
        return max((m.size for m in self.marks()), default=0)

    def record(self, note: str, kind: str = "signed") -> None:
        """Keep ``note`` (``signed`` or ``cosigned``) when it is larger than the one kept."""
        new = self._mark(note, kind)
        with self._lock:
            old = self._notes.get(kind)
            if old is None or self._mark(old, kind).size <= new.size:
                self._notes[kind] = note
        if self.path is not None:
            self._write(kind, new)

    def _write(self, kind: str, new: TreeMark) -> None:
        assert self.path is not None and new.note is not None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(self.path):
            notes = self._read_file()
            if kind in notes and self._mark(notes[kind], kind).size > new.size:
                return
            notes[kind] = new.note
            data = json.dumps({"origin": self.audit.origin, **notes}, indent=1, sort_keys=True)
            write_atomically(self.path, data.encode())

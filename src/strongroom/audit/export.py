"""Streaming export of the audit log for a SIEM: every entry once, in order, resumable.

The exporter reads the stored tree directly (no keys: it works on a sealed
vault host too) in batches, each batch in one read snapshot, and hands out
:class:`~strongroom.audit.ocsf.ExportedEntry` values carrying the entry, its
RFC 9162 leaf hash and the latest signed checkpoint covering it::

    exporter = AuditExporter(StoredTree(store))
    cursor = ExportCursor.load(path) or ExportCursor(exporter.origin, 0, None)
    exporter.check_resume(cursor)              # a rewritten or shortened log is refused
    final = run_export(exporter, cursor, write_batch, follow=True, interval_s=1.0,
                       stop=stop_event, on_batch=lambda c: c.save(path))

What it guarantees:

* **Never skips an entry.** A batch's rows must be exactly the indices below
  the head; a missing row stops the export with :class:`IntegrityError`
  naming it (absence is evidence). A row whose body records another index, or
  whose bytes no longer match the leaf hash stored beside them, is refused too.
* **Resumable.** After each written (and flushed) batch the caller saves an
  :class:`ExportCursor`: the next index and the leaf hash of the last entry
  exported, written atomically. On resume that entry is read again; if its
  leaf hash changed, or the log is now shorter, the export is refused naming
  the entry, because the log was rewritten after the SIEM received it.
* **Following.** With ``follow`` it polls for new entries every ``interval_s``
  seconds until ``stop`` is set, always finishing the batch in hand first.

The exporter does not verify checkpoint signatures (``strongroom audit verify``
and the SIEM do that); it reports which checkpoint covers each entry. Through
a server, :class:`strongroom.audit.pages.VerifiedPages` is the entry source
instead (:class:`EntrySource`): it does verify, against the pinned log key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from strongroom.audit.checkpoint import Checkpoint
from strongroom.audit.entry import AuditEvent
from strongroom.audit.merkle import leaf_hash
from strongroom.audit.ocsf import ExportedEntry, to_ocsf
from strongroom.audit.tree import StoredTree
from strongroom.crypto.note import parse_note
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.outputs import write_output
from strongroom.timefmt import utc_stamp

__all__ = [
    "CURSOR_FORMAT",
    "DEFAULT_BATCH",
    "FORMATS",
    "AuditExporter",
    "EntrySource",
    "ExportCursor",
    "StopSignal",
    "check_cursor",
    "export_line",
    "run_export",
]

#: The ``format`` line of a cursor file.
CURSOR_FORMAT = "strongroom-audit-export-cursor/v1"
#: Entries read (and written, then acknowledged in the cursor) at a time.
DEFAULT_BATCH = 500
#: Line formats: OCSF events, or strongroom's own JSON lines.
FORMATS = ("ocsf", "jsonl")
_REMEDY_REWRITTEN = ("run `strongroom audit verify` on the vault host and compare the exported "
                     "lines with the log; keep the exported copy as evidence, then start a new "
                     "export with a new cursor only after the divergence is explained")


@dataclass(frozen=True)
class ExportCursor:
    """Where an export stands: the next index, and the leaf hash of the entry before it."""

    origin: str
    next_index: int
    last_leaf_hash: bytes | None

    def to_json(self) -> str:
        """The cursor file's text."""
        return json.dumps({
            "format": CURSOR_FORMAT,
            "origin": self.origin,
            "next_index": self.next_index,
            "last_leaf_hash": self.last_leaf_hash.hex() if self.last_leaf_hash else None,
            "updated": utc_stamp(),
        }, indent=1) + "\n"

    def save(self, path: Path) -> None:
        """Write the cursor atomically (temporary file, fsync, rename)."""
        write_output(path, self.to_json().encode())

    @classmethod
    def load(cls, path: Path) -> ExportCursor | None:
        """The cursor saved at ``path``; None when there is no file yet."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InvalidInput(f"cannot read the cursor file ({exc.strerror})", obj=str(path),
                               remedy="check the path and its permissions") from exc
        try:
            d = json.loads(text)
            if d.get("format") != CURSOR_FORMAT:
                raise ValueError("format")
            nxt = d["next_index"]
            last = d["last_leaf_hash"]
            if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt < 0:
                raise ValueError("next_index")
            digest = bytes.fromhex(last) if last is not None else None
            if (digest is None) != (nxt == 0) or (digest is not None and len(digest) != 32):
                raise ValueError("last_leaf_hash")
            return cls(str(d["origin"]), nxt, digest)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"not a strongroom export cursor (bad {exc})", obj=str(path),
                remedy="give the cursor file an earlier `audit export --cursor` wrote, unedited",
            ) from exc

    def after(self, entry: ExportedEntry) -> ExportCursor:
        """The cursor once ``entry`` is exported."""
        return ExportCursor(self.origin, entry.index + 1, entry.leaf_hash)


class AuditExporter:
    """Reads the stored log in index order, refusing gaps, moved and edited rows."""

    def __init__(self, tree: StoredTree, *, batch: int = DEFAULT_BATCH) -> None:
        if batch < 1:
            raise InvalidInput("the export batch must hold at least one entry", obj=str(batch))
        self.tree = tree
        self.batch = batch
        self._checkpoint: tuple[str, tuple[int, bytes]] | None = None
        with tree.read("read the log's origin") as conn:
            _, origin = tree.head_in(conn)
        if origin is None:
            raise InvalidInput("this database holds no audit log yet", obj=tree.store.url,
                               remedy="initialise the vault (`strongroom init`) first")
        self.origin: str = origin

    def size(self) -> int:
        """Entries committed now."""
        return self.tree.size()

    def cursor_at(self, start: int) -> ExportCursor:
        """A cursor starting at index ``start`` (it holds entry ``start - 1``'s leaf hash)."""
        if start == 0:
            return ExportCursor(self.origin, 0, None)
        with self.tree.read("find the first entry to export") as conn:
            size, _ = self.tree.head_in(conn)
            rows = self.tree.rows(conn, start - 1, start)
        if start > size:
            raise InvalidInput(f"the log holds {size} entries; {start} is past its end",
                               obj=f"--from {start}", remedy=f"give an index up to {size}")
        if not rows:
            raise IntegrityError(f"audit entry {start - 1} is missing from the store (deleted)",
                                 obj=f"audit entry {start - 1}",
                                 remedy="run `strongroom audit verify` on the vault host")
        return ExportCursor(self.origin, start, leaf_hash(rows[0][1]))

    def check_resume(self, cursor: ExportCursor) -> None:
        """Refuse to continue ``cursor`` when the log no longer holds what was exported."""
        last = cursor.next_index - 1
        rows = []
        size = 0
        if cursor.origin == self.origin and last >= 0:
            with self.tree.read("check the export cursor") as conn:
                size, _ = self.tree.head_in(conn)
                rows = self.tree.rows(conn, last, last + 1)
        check_cursor(cursor, self.origin, size, leaf_hash(rows[0][1]) if rows else None)

    def read_batch(self, start: int) -> list[ExportedEntry]:
        """Entries ``start..`` (at most ``batch``), from one snapshot; [] when none is new."""
        with self.tree.read("read entries to export") as conn:
            size, _ = self.tree.head_in(conn)
            end = min(start + self.batch, size)
            if end <= start:
                return []
            rows = self.tree.rows(conn, start, end)
            covering = self._covering(self.tree.latest(conn))
        out = []
        for expected, row in zip(range(start, end), [*rows, None], strict=False):
            if row is None or row[0] != expected:
                raise IntegrityError(
                    f"audit entry {expected} is missing from the store (deleted) below the "
                    f"head size {size}", obj=f"audit entry {expected}",
                    remedy="run `strongroom audit verify`; restore the audit tables from a "
                           "backup; the export stopped before the gap and resumes after it")
            index, body, stored = row
            event = AuditEvent.from_body(body)
            digest = leaf_hash(body)
            if event.index != index or digest != stored:
                what = (f"records index {event.index}" if event.index != index
                        else "no longer matches its stored leaf hash")
                raise IntegrityError(f"audit entry {index} {what} (edited or moved)",
                                     obj=f"audit entry {index}",
                                     remedy="run `strongroom audit verify` on the vault host")
            cp = covering if covering is not None and index < covering[0] else None
            out.append(ExportedEntry(event, digest, cp))
        return out

    def _covering(self, note: str | None) -> tuple[int, bytes] | None:
        """``(size, root)`` of the latest signed checkpoint (parsed once per note)."""
        if note is None:
            return None
        if self._checkpoint is None or self._checkpoint[0] != note:
            text, _ = parse_note(note)
            cp = Checkpoint.parse(text)
            self._checkpoint = (note, (cp.size, cp.root))
        return self._checkpoint[1]


def check_cursor(cursor: ExportCursor, origin: str, size: int, last: bytes | None) -> None:
    """Refuse to continue ``cursor`` on the log ``origin`` of ``size`` entries whose entry
    ``cursor.next_index - 1`` has leaf hash ``last`` (None: the entry is gone)."""
    if cursor.origin != origin:
        raise InvalidInput(
            f"the cursor belongs to the log {cursor.origin!r}, this database holds "
            f"{origin!r}", obj="export cursor",
            remedy="use the cursor of this log's export, or a new cursor file")
    if cursor.next_index == 0:
        return
    index = cursor.next_index - 1
    if size < cursor.next_index:
        raise IntegrityError(
            f"the log holds {size} entries but {cursor.next_index} were exported: "
            f"entries {size}..{index} are gone (the log was rolled back)",
            obj=f"audit entry {index}", remedy=_REMEDY_REWRITTEN)
    if last is None:
        raise IntegrityError(f"audit entry {index}, the last one exported, is missing "
                             "(deleted)", obj=f"audit entry {index}", remedy=_REMEDY_REWRITTEN)
    if last != cursor.last_leaf_hash:
        assert cursor.last_leaf_hash is not None
        raise IntegrityError(
            f"audit entry {index} was rewritten after it was exported: its leaf hash was "
            f"{cursor.last_leaf_hash.hex()}, it is {last.hex()} now",
            obj=f"audit entry {index}", remedy=_REMEDY_REWRITTEN)


class EntrySource(Protocol):
    """Where an export reads entries: the local store (:class:`AuditExporter`) or a server
    whose pages are verified against the pinned log key (:class:`strongroom.audit.pages.VerifiedPages`)."""

    origin: str

    def cursor_at(self, start: int) -> ExportCursor:
        """A cursor starting at index ``start``."""

    def check_resume(self, cursor: ExportCursor) -> None:
        """Refuse ``cursor`` when the log no longer holds what was exported."""

    def read_batch(self, start: int) -> list[ExportedEntry]:
        """Entries ``start..`` in order, checked; [] when none is new."""


class StopSignal(Protocol):
    """What stops a following export: a :class:`threading.Event`, or anything with its reads."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def run_export(
    exporter: EntrySource,
    cursor: ExportCursor,
    write_batch: Callable[[Sequence[ExportedEntry]], None],
    *,
    on_batch: Callable[[ExportCursor], None] | None = None,
    follow: bool = False,
    interval_s: float = 1.0,
    stop: StopSignal | None = None,
    actions: Iterable[str] | None = None,
) -> ExportCursor:
    """Export from ``cursor`` until the head (``follow``: until ``stop``); return the last cursor.

    ``write_batch`` must have written and flushed its entries when it returns;
    ``on_batch`` then saves the cursor. ``actions`` keeps only entries of those
    actions in what is written; the cursor still advances past every entry read.
    """
    if interval_s <= 0:
        raise InvalidInput("the poll interval must be positive", obj=f"{interval_s} s")
    wanted = frozenset(actions) if actions is not None else None
    stop = stop or threading.Event()
    while not stop.is_set():
        batch = exporter.read_batch(cursor.next_index)
        if batch:
            write_batch([e for e in batch if wanted is None or e.event.action in wanted])
            cursor = cursor.after(batch[-1])
            if on_batch is not None:
                on_batch(cursor)
            continue
        if not follow:
            break
        stop.wait(interval_s)
    return cursor


def export_line(entry: ExportedEntry, fmt: str, *, origin: str, product_version: str) -> str:
    """One exported line (no newline): an OCSF event, or ``{index, leaf_hash, checkpoint, entry}``."""
    if fmt == "ocsf":
        record = to_ocsf(entry, origin=origin, product_version=product_version)
    elif fmt == "jsonl":
        record = {**entry.integrity(), "origin": origin, "entry": entry.event.to_dict()}
    else:
        raise InvalidInput(f"unknown export format {fmt!r}", obj="--format",
                           remedy=f"use one of {', '.join(FORMATS)}")
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

"""Pages of audit entries with the proof that binds them to a signed checkpoint.

The server reads a page with :func:`read_page` (``GET /v1/audit/entries``):
each entry's exact bytes and index, the latest signed checkpoint note, and for
the part of the page that checkpoint covers the hashes a reader needs to
recompute the tree — the perfect-subtree hashes left of the page (the compact
range ``[0, start)``) and an RFC 9162 consistency proof from the page's end to
the checkpoint's size. A reader far from the database believes none of it::

    source = VerifiedPages(fetch, log_key)          # fetch(start, limit) -> the route's JSON
    batch = source.read_batch(120)                  # ExportedEntry values, verified

:class:`VerifiedPages` opens the note with the *pinned* log key (origin = the
key's name), recomputes every leaf hash from the bytes it received, builds the
root of the tree at the page's end from the left hashes and those leaves, and
checks the consistency proof from that root to the signed root. Any altered
byte, dropped, reordered or inserted entry, or forged hash gives another root:
:class:`IntegrityError` naming the page and the server. Only entries a verified
checkpoint covers are handed out, so an export through a server ends at the
latest signed checkpoint (signed every ``STRONGROOM_CHECKPOINT_INTERVAL_S``).

It is the export's entry source for a remote log (see
:class:`strongroom.audit.export.EntrySource`); the local one is
:class:`strongroom.audit.export.AuditExporter`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from strongroom.audit.checkpoint import Checkpoint, open_checkpoint
from strongroom.audit.entry import AuditEvent
from strongroom.audit.export import ExportCursor, check_cursor
from strongroom.audit.merkle import (
    Frontier,
    InvalidProof,
    consistency_proof,
    leaf_hash,
    perfect_subtrees,
    root_from_consistency_proof,
)
from strongroom.audit.ocsf import ExportedEntry
from strongroom.audit.tree import StoredTree
from strongroom.crypto.note import Ed25519Verifier, parse_note
from strongroom.errors import IntegrityError, InvalidInput

__all__ = ["MAX_PAGE", "EntryPage", "VerifiedPages", "read_page"]

#: The most entries one page holds.
MAX_PAGE = 1000
#: What a reader does when a page does not verify.
_REMEDY_LIED = ("stop trusting this server's log: run `strongroom audit verify` on the vault "
                "host and compare it with the witnesses' checkpoints; keep what was exported "
                "as evidence")


@dataclass(frozen=True)
class EntryPage:
    """Entries ``start..`` as stored, the latest signed checkpoint, and the proof hashes.

    ``left`` and ``consistency`` cover ``[start, proof_end)`` (``proof_end`` is
    ``min(end, checkpoint size)``; None without a checkpoint or when the page
    lies past it).
    """

    origin: str
    size: int
    start: int
    bodies: tuple[bytes, ...]
    checkpoint: str | None
    proof_end: int | None
    left: tuple[bytes, ...]
    consistency: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """The route's answer (bytes as base64)."""
        b64 = base64.b64encode
        return {
            "origin": self.origin, "size": self.size, "checkpoint": self.checkpoint,
            "entries": [{"index": self.start + i, "body": b64(b).decode()}
                        for i, b in enumerate(self.bodies)],
            "proof": None if self.proof_end is None else {
                "end": self.proof_end, "left": [b64(h).decode() for h in self.left],
                "consistency": [b64(h).decode() for h in self.consistency]},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], start: int, *, obj: str) -> EntryPage:
        """A page as the route sent it; a malformed one (or one not starting at ``start``,
        or with an index out of order) is refused naming ``obj``."""
        def raw(text: Any) -> bytes:
            return base64.b64decode(str(text), validate=True)

        try:
            entries = list(d["entries"])
            indices = [int(e["index"]) for e in entries]
            if indices != list(range(start, start + len(entries))):
                missing = next((start + i for i, x in enumerate(indices) if x != start + i),
                               start)
                raise IntegrityError(
                    f"the page from {start} does not hold the entries in order: entry "
                    f"{missing} is missing or moved (a dropped or inserted entry)",
                    obj=obj, remedy=_REMEDY_LIED)
            proof = d.get("proof")
            return cls(
                origin=str(d["origin"]), size=int(d["size"]), start=start,
                bodies=tuple(raw(e["body"]) for e in entries),
                checkpoint=None if d.get("checkpoint") is None else str(d["checkpoint"]),
                proof_end=None if proof is None else int(proof["end"]),
                left=tuple(raw(h) for h in (proof or {}).get("left", ())),
                consistency=tuple(raw(h) for h in (proof or {}).get("consistency", ())),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise IntegrityError(f"malformed page of audit entries ({type(exc).__name__})",
                                 obj=obj, remedy="check that STRONGROOM_URL names a "
                                 "strongroom server of a matching version") from None


def read_page(tree: StoredTree, start: int, limit: int) -> EntryPage:
    """Entries ``start..start+limit`` (up to the head) with their proof, in one snapshot.

    A page past the head is empty (a follower polls with it). A deleted row
    ends the page before it: the reader, holding the signed size, names the gap.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"a page holds 1 to {MAX_PAGE} entries", obj=f"limit={limit}")
    with tree.read("read a page of audit entries") as conn:
        size, origin = tree.head_in(conn)
        if origin is None:
            raise InvalidInput("this database holds no audit log yet", obj="audit log",
                               remedy="initialise the vault (`strongroom init`) first")
        end = min(start + limit, size)
        rows = tree.rows(conn, start, end) if end > start else []
        note = tree.latest(conn)
        cp_size = Checkpoint.parse(parse_note(note)[0]).size if note is not None else 0
        proof_end = min(end, cp_size)
        left: list[bytes] = []
        consistency: list[bytes] = []
        if proof_end > start:
            lookup = tree.lookup(conn)
            keys = perfect_subtrees(0, start)
            found = lookup(keys) if keys else {}
            left = [found[k] for k in keys]
            consistency = consistency_proof(proof_end, cp_size, lookup)
    bodies = []
    for expected, (index, body, _) in zip(range(start, end), rows, strict=False):
        if index != expected:
            break
        bodies.append(body)
    return EntryPage(origin, size, start, tuple(bodies), note,
                     proof_end if proof_end > start else None, tuple(left), tuple(consistency))


class VerifiedPages:
    """An export source over pages fetched from a server, each checked against the pinned key.

    ``fetch(start, limit)`` returns the route's JSON; ``log_key`` is the pinned
    checkpoint verifier (its name is the log's origin); ``where`` names the
    server in errors.
    """

    def __init__(self, fetch: Callable[[int, int], Mapping[str, Any]], log_key: Ed25519Verifier,
                 *, where: str, batch: int = 500) -> None:
        if not 1 <= batch <= MAX_PAGE:
            raise InvalidInput(f"the export batch must hold 1 to {MAX_PAGE} entries",
                               obj=str(batch))
        self.fetch, self.log_key, self.where, self.batch = fetch, log_key, where, batch
        self.origin: str = log_key.name
        #: ``(size, root)`` of the newest checkpoint verified so far (never goes back).
        self.verified: tuple[int, bytes] | None = None

    def read_batch(self, start: int) -> list[ExportedEntry]:
        """Entries ``start..`` a verified checkpoint covers (at most ``batch``); [] when none."""
        return self._page(start, self.batch)

    def cursor_at(self, start: int) -> ExportCursor:
        """A cursor starting at ``start`` (entry ``start - 1`` read and verified)."""
        if start == 0:
            return ExportCursor(self.origin, 0, None)
        got = self._page(start - 1, 1)
        if not got:
            covered = self.verified[0] if self.verified else 0
            raise InvalidInput(
                f"the log's latest signed checkpoint covers {covered} entries; {start} is "
                "past it", obj=f"--from {start}",
                remedy=f"give an index up to {covered}, or wait for the next checkpoint")
        return ExportCursor(self.origin, start, got[0].leaf_hash)

    def check_resume(self, cursor: ExportCursor) -> None:
        """Refuse to continue ``cursor`` when the log no longer holds what was exported."""
        last = None
        if cursor.next_index > 0 and cursor.origin == self.origin:
            got = self._page(cursor.next_index - 1, 1)
            last = got[0].leaf_hash if got else None
        covered = self.verified[0] if self.verified else 0
        check_cursor(cursor, self.origin, covered, last)

    def _page(self, start: int, limit: int) -> list[ExportedEntry]:
        obj = f"audit entries {start}.. from {self.where}"
        page = EntryPage.from_json(self.fetch(start, limit), start, obj=obj)
        if page.origin != self.origin:
            raise IntegrityError(f"the server holds the log {page.origin!r}, the pinned log "
                                 f"key is {self.origin!r}'s", obj=self.where,
                                 remedy="check STRONGROOM_LOG_KEY (or the pin) and the URL")
        if page.checkpoint is None:
            return []
        try:
            cp = open_checkpoint(page.checkpoint, log_key=self.log_key).checkpoint
        except IntegrityError as exc:
            raise IntegrityError(f"the server's checkpoint does not verify with the pinned log "
                                 f"key ({exc.message})", obj=obj, remedy=_REMEDY_LIED) from None
        self._advance(cp)
        covered = min(start + limit, cp.size)  # what this page must hold, signed
        if covered <= start:
            return []
        if start + len(page.bodies) < covered:
            raise IntegrityError(f"audit entry {start + len(page.bodies)} is missing below the "
                                 f"signed size {cp.size} (deleted or withheld)", obj=obj,
                                 remedy=_REMEDY_LIED)
        if page.proof_end != covered:
            raise IntegrityError(f"the page's proof covers up to {page.proof_end}, the signed "
                                 f"checkpoint up to {covered}", obj=obj, remedy=_REMEDY_LIED)
        bodies = page.bodies[:covered - start]
        leaves = [leaf_hash(b) for b in bodies]
        try:
            frontier = Frontier.from_hashes(start, page.left)
            for h in leaves:
                frontier.append(h)
            if root_from_consistency_proof(covered, cp.size, page.consistency,
                                           frontier.root()) != cp.root:
                raise InvalidProof("the entries do not lead to the signed root")
        except (ValueError, InvalidProof) as exc:
            raise IntegrityError(
                f"entries {start}..{covered - 1} are not the ones the signed checkpoint of size "
                f"{cp.size} covers ({exc}): the server altered, dropped or reordered entries",
                obj=obj, remedy=_REMEDY_LIED) from None
        out = []
        for index, (body, digest) in enumerate(zip(bodies, leaves, strict=True), start):
            event = AuditEvent.from_body(body)
            if event.index != index:
                raise IntegrityError(f"audit entry {index} records index {event.index}",
                                     obj=obj, remedy=_REMEDY_LIED)
            out.append(ExportedEntry(event, digest, (cp.size, cp.root)))
        return out

    def _advance(self, cp: Checkpoint) -> None:
        """Remember the newest verified checkpoint; a smaller one later means a rollback."""
        if self.verified is not None and cp.size < self.verified[0]:
            raise IntegrityError(
                f"the server's signed checkpoint went back from size {self.verified[0]} to "
                f"{cp.size} (the log was rolled back)", obj=self.where, remedy=_REMEDY_LIED)
        self.verified = (cp.size, cp.root)

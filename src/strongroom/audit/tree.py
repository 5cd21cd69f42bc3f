"""The stored Merkle tree: the head row, entries and nodes, and the proofs read from them.

Each entry row stores its leaf hash and every completed perfect subtree is a
row of ``audit_nodes``, so an inclusion or consistency proof is two indexed
reads. :class:`StoredTree` owns the connections (a write transaction, a
read-only snapshot that never takes SQLite's write lock) and the reads; the
writer (:mod:`strongroom.audit.writer`) extends the tree::

    tree = StoredTree(store)
    salt = tree.init_head(origin, None)       # claims the database for this log
    with tree.read("build a proof") as conn:
        proof = tree.prove_at(conn, 7, signed_note)   # None when 7 is past the checkpoint
    tree.consistency(10, 13)
    tree.close()

:class:`InclusionProof` is the self-contained proof an outsider checks with
the log's verifier key alone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import SQLAlchemyError

from strongroom.audit.checkpoint import Checkpoint, open_checkpoint
from strongroom.audit.entry import AuditEvent
from strongroom.audit.merkle import (
    Frontier,
    NodeKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    verify_inclusion,
)
from strongroom.crypto.note import parse_note
from strongroom.errors import AuditUnavailable, ConfigError, IntegrityError, InvalidInput, NotFound
from strongroom.store.db import Store, reader_engine
from strongroom.store.tables.audit import AuditCheckpoint, AuditEntry, AuditHead, AuditNode

__all__ = ["PROOF_HEADER", "InclusionProof", "StoredTree", "divergence"]

HEAD = cast(Table, AuditHead.__table__)
ENTRIES = cast(Table, AuditEntry.__table__)
NODES = cast(Table, AuditNode.__table__)
CHECKPOINTS = cast(Table, AuditCheckpoint.__table__)
PROOF_HEADER = "strongroom-inclusion-proof/v1"


def divergence(message: str, obj: str = "audit log") -> IntegrityError:
    """The error for a log whose stored state disagrees with itself or its checkpoints."""
    return IntegrityError(message, obj=obj)


@dataclass(frozen=True)
class InclusionProof:
    """Proof that one entry is in the tree a signed checkpoint commits to.

    ``to_text()`` is self-contained: an outsider checks it with
    :meth:`verify` (or ``strongroom audit verify-proof``) given only the log's
    verifier key (and, optionally, witness keys and a quorum).
    """

    index: int
    entry: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str

    def to_text(self) -> str:
        """``<header>\\nindex N\\nentry <b64>\\n<hash lines>\\n\\n<signed checkpoint>``."""
        lines = [PROOF_HEADER, f"index {self.index}", f"entry {base64.b64encode(self.entry).decode()}"]
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> InclusionProof:
        """Parse :meth:`to_text` output; raises :class:`InvalidInput` when malformed."""
        head, sep, note = text.partition("\n\n")
        lines = head.split("\n")
        try:
            if not sep or lines[0] != PROOF_HEADER:
                raise ValueError("header")
            if not lines[1].startswith("index ") or not lines[2].startswith("entry "):
                raise ValueError("fields")
            index = int(lines[1][6:])
            entry = base64.b64decode(lines[2][6:], validate=True)
            hashes = tuple(base64.b64decode(h, validate=True) for h in lines[3:])
        except (ValueError, IndexError, binascii.Error) as exc:
            raise InvalidInput(f"not a strongroom inclusion proof ({exc})") from exc
        return cls(index, entry, hashes, note)

    def verify(
        self,
        log_key: str,
        witness_keys: Iterable[str] = (),
        quorum: int = 0,
    ) -> AuditEvent:
        """Check the checkpoint signatures and the Merkle path; return the proven event."""
        opened = open_checkpoint(
            self.checkpoint, log_key=log_key, witness_keys=witness_keys, quorum=quorum
        )
        cp = opened.checkpoint
        verify_inclusion(self.index, cp.size, leaf_hash(self.entry), list(self.hashes), cp.root)
        event = AuditEvent.from_body(self.entry)
        if event.index != self.index:
            raise IntegrityError(f"entry says index {event.index}, proof is for {self.index}")
        return event


class StoredTree:
    """The audit tables of one store: head, entries, nodes, checkpoints."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pg = store.dialect == "postgresql"
        self._reader = reader_engine(store)
        self._parsed: tuple[str, int] | None = None

    # -- transactions ---------------------------------------------------------

    @contextlib.contextmanager
    def tx(self, what: str) -> Iterator[Connection]:
        """A write transaction; store failures become :class:`AuditUnavailable`."""
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self.failed(what, exc) from exc

    @contextlib.contextmanager
    def read(self, what: str) -> Iterator[Connection]:
        """A read-only snapshot that never takes SQLite's write lock."""
        try:
            with self._reader.begin() as conn:
                if not self.pg:
                    conn.exec_driver_sql("BEGIN")
                yield conn
        except SQLAlchemyError as exc:
            raise self.failed(what, exc) from exc

    def failed(self, what: str, exc: BaseException) -> AuditUnavailable:
        """The refusal for a store error met while trying to ``what``."""
        return AuditUnavailable(
            f"audit store failed while trying to {what}: {type(exc).__name__}",
            obj=self.store.url,
        )

    def lock_head(self, conn: Connection) -> Any:
        """The head row, locked for this transaction (PostgreSQL; SQLite's lock is the file's)."""
        q = select(HEAD).where(HEAD.c.id == 1)
        if self.pg:
            q = q.with_for_update()
        row = conn.execute(q).one_or_none()
        if row is None:
            raise AuditUnavailable("the audit head row is missing", obj=self.store.url,
                                   remedy="run the migrations (Store.open) on this database")
        return row

    def init_head(self, origin: str, salt: bytes | None) -> bytes:
        """Claim the head for ``origin`` (refusing another log's database); the redaction salt."""
        with self.tx("open the log") as conn:
            head = self.lock_head(conn)
            if head.origin is None:
                conn.execute(update(HEAD).where(HEAD.c.id == 1).values(origin=origin))
            elif head.origin != origin:
                raise ConfigError(
                    f"this database holds the audit log of {head.origin!r}, not {origin!r}",
                    remedy="set STRONGROOM_LOG_ORIGIN to the log's origin",
                )
            if salt is None:
                salt = head.hmac_salt
                if salt is None:
                    salt = os.urandom(32)
                    conn.execute(update(HEAD).where(HEAD.c.id == 1).values(hmac_salt=salt))
        return bytes(salt)

    # -- nodes ----------------------------------------------------------------

    def nodes(self, conn: Connection, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The stored hashes of ``keys`` that exist (leaves from entries, the rest from nodes)."""
        out: dict[NodeKey, bytes] = {}
        leaves = [i for lv, i in keys if lv == 0]
        inner = [(lv, i) for lv, i in keys if lv > 0]
        if leaves:
            mark = "%s" if self.pg else "?"
            marks = ", ".join([mark] * len(leaves))
            found: Any = conn.exec_driver_sql(
                f"SELECT idx, leaf_hash FROM audit_entries WHERE idx IN ({marks})",  # noqa: S608
                tuple(leaves),
            )
            out.update({(0, int(i)): bytes(h) for i, h in found})
        if inner:
            mark = "%s" if self.pg else "?"
            where = " OR ".join([f"(level = {mark} AND idx = {mark})"] * len(inner))
            params = tuple(x for key in inner for x in key)
            rows: Any = conn.exec_driver_sql(
                f"SELECT level, idx, hash FROM audit_nodes WHERE {where}", params  # noqa: S608
            )
            for level, index, h in rows.fetchall():
                out[int(level), int(index)] = bytes(h)
        return out

    def load_frontier(self, conn: Connection, size: int) -> Frontier:
        """The right edge of the stored tree at ``size``; IntegrityError when a node is gone."""
        keys = perfect_subtrees(0, size)
        found = self.nodes(conn, keys)
        missing = [k for k in keys if k not in found]
        if missing:
            raise IntegrityError(
                f"stored tree is missing node {missing[0]} below head size {size}",
                obj="audit log",
                remedy="run `strongroom audit verify` and restore the audit tables",
            )
        return Frontier.from_hashes(size, [found[k] for k in keys])

    def lookup(self, conn: Connection) -> Callable[[Sequence[NodeKey]], dict[NodeKey, bytes]]:
        """A node lookup for :mod:`strongroom.audit.merkle`'s proofs (every key must exist)."""
        def lookup(keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
            found = self.nodes(conn, keys)
            for k in keys:
                if k not in found:
                    raise IntegrityError(f"stored tree is missing node {k}", obj="audit log")
            return found

        return lookup

    # -- reading --------------------------------------------------------------

    def size(self) -> int:
        """Number of entries committed."""
        with self.read("read the size") as conn:
            return int(conn.execute(select(HEAD.c.size).where(HEAD.c.id == 1)).scalar_one())

    def head(self) -> tuple[int, bytes, int]:
        """``(size, root, latest checkpoint size)`` as the head row records them."""
        with self.read("read the head") as conn:
            row = conn.execute(select(HEAD).where(HEAD.c.id == 1)).one()
        return int(row.size), bytes(row.root), int(row.checkpoint_size)

    def event(self, index: int) -> AuditEvent:
        """The entry at ``index`` (as stored)."""
        with self.read("read an entry") as conn:
            body = conn.execute(
                select(ENTRIES.c.body).where(ENTRIES.c.idx == index)
            ).scalar_one_or_none()
        if body is None:
            raise NotFound(f"no audit entry {index}", obj="audit log")
        return AuditEvent.from_body(bytes(body))

    def events(self, start: int = 0, end: int | None = None) -> list[AuditEvent]:
        """Entries with ``start <= index < end``, in order."""
        q = select(ENTRIES.c.body).where(ENTRIES.c.idx >= start).order_by(ENTRIES.c.idx)
        if end is not None:
            q = q.where(ENTRIES.c.idx < end)
        with self.read("read entries") as conn:
            return [AuditEvent.from_body(bytes(b)) for b in conn.execute(q).scalars()]

    def head_in(self, conn: Connection) -> tuple[int, str | None]:
        """``(size, origin)`` as ``conn``'s snapshot sees the head row."""
        row = conn.execute(select(HEAD.c.size, HEAD.c.origin).where(HEAD.c.id == 1)).one()
        return int(row.size), row.origin

    def rows(self, conn: Connection, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """``(index, body, stored leaf hash)`` of entries ``start <= index < end``, in order.

        A deleted row is simply absent here: the caller names the gap.
        """
        q = (select(ENTRIES.c.idx, ENTRIES.c.body, ENTRIES.c.leaf_hash)
             .where(ENTRIES.c.idx >= start, ENTRIES.c.idx < end).order_by(ENTRIES.c.idx))
        return [(int(i), bytes(b), bytes(h)) for i, b, h in conn.execute(q)]

    def checkpoints(self) -> list[str]:
        """Every stored signed checkpoint (with cosignatures), oldest first."""
        with self.read("read checkpoints") as conn:
            rows = conn.execute(select(CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size))
            return [str(r[0]) for r in rows]

    def latest(self, conn: Connection) -> str | None:
        """The checkpoint the head points at, or None before the first one."""
        # One driver statement: this runs on every proof, where SQLAlchemy's two compiled
        # selects cost more than the proof's own reads.
        row = conn.exec_driver_sql(
            "SELECT c.note FROM audit_head h JOIN audit_checkpoints c "
            "ON c.size = h.checkpoint_size WHERE h.id = 1").first()
        return None if row is None else str(row[0])

    def _checkpoint_size(self, note: str) -> int:
        """The size ``note`` commits to (the last note parsed is remembered: proofs share it)."""
        parsed = self._parsed
        if parsed is not None and parsed[0] == note:
            return parsed[1]
        text, _ = parse_note(note)
        size = Checkpoint.parse(text).size
        self._parsed = (note, size)
        return size

    # -- proofs ---------------------------------------------------------------

    def prove_at(self, conn: Connection, index: int, note: str) -> InclusionProof | None:
        """Inclusion proof of entry ``index`` against ``note``; None when it lies past it."""
        size = self._checkpoint_size(note)
        if not 0 <= index < size:
            return None
        mark = "%s" if self.pg else "?"
        row = conn.exec_driver_sql(
            f"SELECT body FROM audit_entries WHERE idx = {mark}", (index,)).first()  # noqa: S608
        if row is None:
            raise IntegrityError(f"entry {index} is missing (deleted)", obj="audit log")
        hashes = inclusion_proof(index, size, self.lookup(conn))
        return InclusionProof(index, bytes(row[0]), tuple(hashes), note)

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes of the stored tree."""
        with self.read("build a consistency proof") as conn:
            return consistency_proof(old, new, self.lookup(conn))

    def close(self) -> None:
        """Release the reader engine (SQLite; PostgreSQL reads through the store's own)."""
        if self._reader is not self.store.engine:
            self._reader.dispose()

"""The tamper-evident audit log: an append-only RFC 9162 Merkle log on the store.

Every decision strongroom makes is appended here *before* it takes effect; if
the append cannot be made durable the caller gets :class:`AuditUnavailable`
and must refuse the operation (fail closed)::

    log = AuditLog(store, signer=Ed25519Signer(origin, key), origin=origin)
    idx = log.append(actor="alice", action="weights.import", obj="minilm@1",
                     decision="allow", reason="approved", details={"bytes": 123})
    note = log.checkpoint()        # signed checkpoint, pushed to the witnesses
    proof = log.prove(idx)         # .to_text(): checkable with the checkpoint key alone
    log.verify()                   # replays everything; IntegrityError names the first divergence
    log.close()

How it stays fast and correct:

* **Group commit.** Appends from any number of threads are queued to one
  writer thread, which commits everything queued in one transaction (one
  fsync) and then wakes the callers with their indices.
* **No gaps, no forks across processes.** The batch transaction first locks
  the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL;
  SQLite's ``BEGIN IMMEDIATE`` serialises writers), reads the size, and
  extends the tree from there; the in-memory frontier is reloaded whenever
  another process moved the head.
* **Conditional appends.** :meth:`AuditLog.append_if` hands a claim to an
  :class:`AppendGuard` that decides it inside the batch's own transaction
  (after the head is locked) and may write rows of its own there: the entry
  and the guard's rows commit together or not at all. The release gate
  charges the egress ledger this way, so an acknowledged release is always
  charged and a failed one never is.
* **O(log n) proofs.** Each entry stores its leaf hash and every completed
  perfect subtree is stored in ``audit_nodes``, so a proof is two indexed reads.
* **One history.** :meth:`AuditLog.checkpoint` signs only after proving (from
  the stored tree) that the new tree extends the last signed checkpoint, and
  advances the head's checkpoint pointer by compare-and-swap, so the log never
  signs two inconsistent checkpoints.

Each entry is canonical JSON (sorted keys, no spaces, UTF-8) with its own
``index``, so a swapped or moved entry names itself. Secret-bearing fields are
stored as salted HMACs (see :mod:`strongroom.audit.redaction`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, select, update
from sqlalchemy.exc import SQLAlchemyError

from strongroom.audit.checkpoint import (
    Checkpoint,
    OpenedCheckpoint,
    add_signature_lines,
    open_checkpoint,
    sign_checkpoint,
)
from strongroom.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    InvalidProof,
    NodeKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    verify_consistency,
    verify_inclusion,
)
from strongroom.audit.redaction import Redactor, Secret
from strongroom.audit.witness import (
    WitnessClient,
    WitnessConflict,
    WitnessError,
    WitnessProofRejected,
)
from strongroom.crypto.note import Ed25519Signer, ExternalEd25519Signer, NoteError, parse_note
from strongroom.datadir import DIR_MODE
from strongroom.errors import (
    AuditUnavailable,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NotFound,
    StrongroomError,
)
from strongroom.outputs import write_output
from strongroom.store.db import Store
from strongroom.store.tables.audit import AuditCheckpoint, AuditEntry, AuditHead, AuditNode

__all__ = [
    "AppendGuard",
    "AuditEvent",
    "AuditLog",
    "InclusionProof",
    "PendingAppend",
    "VerifyReport",
]

log = logging.getLogger(__name__)

_HEAD = cast(Table, AuditHead.__table__)
_ENTRIES = cast(Table, AuditEntry.__table__)
_NODES = cast(Table, AuditNode.__table__)
_CHECKPOINTS = cast(Table, AuditCheckpoint.__table__)
_INDEX_KEY = b'"index":'
_INDEX_PLACEHOLDER = b'"index":0'
PROOF_HEADER = "strongroom-inclusion-proof/v1"
#: How long an append waits for its batch to commit before refusing.
APPEND_TIMEOUT_S = 30.0
#: How long the writer holds a batch open for appends announced with
#: :meth:`AuditLog.expecting` (PostgreSQL's ``commit_delay``, bounded), seconds.
COMMIT_DELAY_S = 0.002
#: How long a batch waits for the database's write lock (SQLite busy timeout,
#: PostgreSQL ``lock_timeout`` and ``statement_timeout``) before it is refused, seconds.
LOCK_TIMEOUT_S = 5.0
#: Refusals kept in memory while the store cannot take them (oldest dropped beyond).
_MAX_UNRECORDED = 10_000
_FETCH = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise InvalidInput("the audit clock must return timezone-aware datetimes")
    if t.utcoffset():
        t = t.astimezone(UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _check_json(value: Any, where: str) -> None:
    if isinstance(value, float):
        raise InvalidInput(f"{where}: floats are not allowed in audit entries (use int or str)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where}: keys must be strings")
            _check_json(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, str | int | bool)):
        raise InvalidInput(f"{where}: {type(value).__name__} cannot go into an audit entry")


def canonical_json(value: Any, *, checked: bool = False) -> bytes:
    """Sorted keys, no whitespace, UTF-8; floats refused (so the bytes are reproducible)."""
    if not checked:
        _check_json(value, "entry")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _entry_index(body: bytes) -> int | None:
    # Keys after "index" hold only strings or null, so the last '"index":' is the top-level one.
    at = body.rfind(_INDEX_KEY)
    if at < 0:
        return None
    start = at + len(_INDEX_KEY)
    end = start
    while end < len(body) and 48 <= body[end] <= 57:
        end += 1
    return int(body[start:end]) if end > start else None


@dataclass(frozen=True)
class AuditEvent:
    """One decision as recorded: its index and fields, and the exact bytes hashed."""

    index: int
    time: str
    actor: str
    action: str
    object: str
    decision: str
    reason: str
    request_id: str | None
    details: dict[str, Any]
    shard: str | None
    nbytes: int | None
    body: bytes = field(repr=False)

    @classmethod
    def from_body(cls, body: bytes) -> AuditEvent:
        """Parse an entry's canonical JSON."""
        try:
            d = json.loads(body)
            return cls(
                index=int(d["index"]),
                time=str(d["time"]),
                actor=str(d["actor"]),
                action=str(d["action"]),
                object=str(d["object"]),
                decision=str(d["decision"]),
                reason=str(d.get("reason", "")),
                request_id=d.get("request_id"),
                details=dict(d.get("details") or {}),
                shard=d.get("shard"),
                nbytes=d.get("bytes"),
                body=body,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError("audit entry is not a valid event record") from exc

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-able mapping."""
        out: dict[str, Any] = json.loads(self.body)
        return out


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_reader(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions start deferred (readers)."""
    reader = create_engine(engine.url, connect_args={"timeout": 30, "isolation_level": None})
    event.listen(reader, "connect", _sqlite_pragmas)
    return reader


class AppendGuard(Protocol):
    """Decides conditional appends inside the batch's transaction (:meth:`AuditLog.append_if`)."""

    def admit(self, conn: Connection, claims: Sequence[Any]) -> Sequence[bool]:
        """Decide ``claims`` in order; True keeps the claim's entry, False drops it.

        Runs on the audit writer thread inside the batch's transaction, after the
        audit head is locked, and may write through ``conn``: those rows commit
        with the entries or not at all. Raising fails the whole batch (every
        append in it gets :class:`AuditUnavailable`).
        """
        ...

    def settle(self, claims: Sequence[Any], committed: bool) -> None:
        """Called once the transaction is over: ``committed`` is False when it failed
        or its outcome is unknown (forget anything cached from :meth:`admit`)."""
        ...


class _Batch:
    """Appends that will commit together: one wake-up for all of them."""

    __slots__ = ("done", "error", "first", "guarded", "indices", "items")

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []
        # (position in items, guard, claim) of each conditional append
        self.guarded: list[tuple[int, AppendGuard, Any]] = []
        self.done = threading.Event()
        self.first = -1
        # Each item's index (-1: refused by its guard) when a guard dropped any item.
        self.indices: list[int] | None = None
        self.error: BaseException | None = None


class PendingAppend:
    """An append queued by :meth:`AuditLog.submit`."""

    __slots__ = ("_batch", "_log", "_offset")

    def __init__(self, log: AuditLog, batch: _Batch, offset: int) -> None:
        self._log = log
        self._batch = batch
        self._offset = offset

    def result(self) -> int:
        """Wait until the entry is durable; its index (raises AuditUnavailable)."""
        index = self._log._await(self._batch, self._offset, 1)[0]
        assert index is not None  # only guarded appends are ever dropped
        return index


def _lock_timed_out(exc: BaseException | None) -> bool:
    """Whether a database error is a lock wait past its bound (SQLite busy, PostgreSQL timeouts)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("55P03", "57014"):  # lock_not_available, query_canceled
        return True
    return getattr(orig, "sqlite_errorcode", None) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


def _divergence(message: str, obj: str = "audit log") -> IntegrityError:
    return IntegrityError(message, obj=obj)


class AuditLog:
    """An append-only, Merkle-tree audit log with signed, witnessed checkpoints."""

    def __init__(
        self,
        store: Store,
        signer: Ed25519Signer | ExternalEd25519Signer,
        origin: str | None = None,
        witnesses: Sequence[WitnessClient] = (),
        quorum: int = 0,
        clock: Callable[[], datetime] = _utcnow,
        *,
        redaction_salt: bytes | None = None,
        anchor_path: Path | None = None,
        append_timeout: float = APPEND_TIMEOUT_S,
        commit_delay: float = COMMIT_DELAY_S,
        lock_timeout: float = LOCK_TIMEOUT_S,
    ) -> None:
        origin = origin or signer.name
        if signer.name != origin:
            raise ConfigError(
                f"the checkpoint key is named {signer.name!r} but the log origin is {origin!r}",
                remedy="name the log signing key after the origin",
            )
        if quorum > len(witnesses):
            raise ConfigError(f"witness quorum {quorum} exceeds the {len(witnesses)} witnesses")
        self.store = store
        self.signer = signer
        self.origin = origin
        self.witnesses = list(witnesses)
        self.quorum = quorum
        self.clock = clock
        self.anchor_path = anchor_path
        self.append_timeout = append_timeout
        self.commit_delay = commit_delay
        self.lock_timeout = lock_timeout
        self._pg = store.dialect == "postgresql"
        # Statements are built from constants and placeholders only (no values).
        mark = "%s" if self._pg else "?"
        self._insert_entry = (
            f"INSERT INTO audit_entries (idx, leaf_hash, body) VALUES ({mark}, {mark}, {mark})"  # noqa: S608
        )
        self._insert_node = (
            f"INSERT INTO audit_nodes (level, idx, hash) VALUES ({mark}, {mark}, {mark})"  # noqa: S608
        )
        lock = " FOR UPDATE" if self._pg else ""
        self._select_size = f"SELECT size FROM audit_head WHERE id = 1{lock}"  # noqa: S608
        self._move_head = (
            f"UPDATE audit_head SET size = {mark}, root = {mark} "  # noqa: S608
            f"WHERE id = 1 AND size = {mark}"
        )
        self._frontier: Frontier | None = None
        self._reader = store.engine if self._pg else _sqlite_reader(store.engine)
        self._witness_sizes: dict[str, int] = {}
        self._rollback: AuditUnavailable | None = None
        # Entries of failed batches, turned into refusals: they ride on the next batch.
        self._unrecorded: list[tuple[bytes, bytes]] = []
        salt = self._init_head(redaction_salt)
        self.redactor = Redactor(salt)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._batch = _Batch()
        self._closed = False
        self._expected = 0  # announced appends (expecting()) not yet enqueued
        self._gathering = False
        self._announced = threading.local()
        self._writer = threading.Thread(target=self._run_writer, name="audit-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open_default(cls, store: Store, signing_key: Any, **kwargs: Any) -> AuditLog:
        """A log configured from ``STRONGROOM_*`` settings, signing with ``signing_key``."""
        from strongroom.audit.config import AuditSettings

        return AuditSettings().open_log(store, signing_key, **kwargs)

    # -- set-up ---------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise AuditUnavailable(
                f"audit store failed while trying to {what}: {type(exc).__name__}",
                obj=self.store.url,
            ) from exc

    @contextlib.contextmanager
    def _write_tx(self, what: str) -> Iterator[Connection]:
        """A write transaction that waits at most ``lock_timeout`` for the database's locks.

        Whoever holds SQLite's write lock or PostgreSQL's row locks (the audit
        head, the egress ledger) can otherwise stall every release: past the
        bound the batch is refused with :class:`AuditUnavailable`.
        """
        ms = max(1, int(self.lock_timeout * 1000))
        try:
            with self.store.engine.connect() as conn:
                raw: Any = conn.connection.dbapi_connection
                saved = None if self._pg else raw.execute("PRAGMA busy_timeout").fetchone()[0]
                if saved is not None:
                    raw.execute(f"PRAGMA busy_timeout={ms}")
                try:
                    with conn.begin():  # SQLite: BEGIN IMMEDIATE, under the bound
                        if self._pg:
                            conn.exec_driver_sql(
                                "SELECT set_config('lock_timeout', %s, true), "
                                "set_config('statement_timeout', %s, true)", (f"{ms}ms",) * 2)
                        yield conn
                finally:
                    if saved is not None:
                        raw.execute(f"PRAGMA busy_timeout={int(saved)}")
        except SQLAlchemyError as exc:
            if _lock_timed_out(exc):
                raise AuditUnavailable(
                    f"the audit database stayed locked for more than {self.lock_timeout:g} s "
                    f"while trying to {what}: the decision was refused (nothing took effect)",
                    obj=self.store.url,
                    remedy="find what holds the database's write lock (a long transaction, a "
                    "backup, another process) and end it, then retry; the refusal is audited "
                    "once the log can write again (STRONGROOM_DB_LOCK_TIMEOUT_S sets the bound)",
                ) from exc
            raise AuditUnavailable(
                f"audit store failed while trying to {what}: {type(exc).__name__}",
                obj=self.store.url,
            ) from exc

    def _refusal(self, item: tuple[bytes, bytes], error: BaseException) -> tuple[bytes, bytes]:
        """A failed batch's entry as the refusal it became (its fields already redacted)."""
        record = json.loads(item[0] + b"0" + item[1])
        details = dict(record.get("details") or {})
        details["unrecorded"] = {"decision": record["decision"], "attempted_at": record["time"],
                                 "error": type(error).__name__}
        message = getattr(error, "message", None) or type(error).__name__
        record.update(decision="deny", time=_format_time(self.clock()), details=details,
                      reason=f"refused: the audit log could not record it ({message})"[:500])
        head, _, tail = canonical_json(record, checked=True).rpartition(_INDEX_PLACEHOLDER)
        return head + _INDEX_KEY, tail

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        """A read-only snapshot that never takes SQLite's write lock."""
        try:
            with self._reader.begin() as conn:
                if not self._pg:
                    conn.exec_driver_sql("BEGIN")
                yield conn
        except SQLAlchemyError as exc:
            raise AuditUnavailable(
                f"audit store failed while trying to {what}: {type(exc).__name__}",
                obj=self.store.url,
            ) from exc

    def _lock_head(self, conn: Connection) -> Any:
        q = select(_HEAD).where(_HEAD.c.id == 1)
        if self._pg:
            q = q.with_for_update()
        row = conn.execute(q).one_or_none()
        if row is None:
            raise AuditUnavailable("the audit head row is missing", obj=self.store.url,
                                   remedy="run the migrations (Store.open) on this database")
        return row

    def _init_head(self, salt: bytes | None) -> bytes:
        with self._tx("open the log") as conn:
            head = self._lock_head(conn)
            if head.origin is None:
                conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(origin=self.origin))
            elif head.origin != self.origin:
                raise ConfigError(
                    f"this database holds the audit log of {head.origin!r}, not {self.origin!r}",
                    remedy="set STRONGROOM_LOG_ORIGIN to the log's origin",
                )
            if salt is None:
                salt = head.hmac_salt
                if salt is None:
                    salt = os.urandom(32)
                    conn.execute(update(_HEAD).where(_HEAD.c.id == 1).values(hmac_salt=salt))
        return bytes(salt)

    # -- appending ------------------------------------------------------------

    def _encode(
        self,
        actor: str,
        action: str,
        obj: str,
        decision: str,
        reason: str,
        request_id: str | None,
        details: Mapping[str, Any] | None,
        shard: str | None,
        nbytes: int | None,
    ) -> tuple[bytes, bytes]:
        for name, value in (("actor", actor), ("action", action), ("object", obj),
                            ("decision", decision)):
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"audit event needs a non-empty {name}")
        if not isinstance(reason, str) or not (request_id is None or isinstance(request_id, str)):
            raise InvalidInput("audit reason and request id must be strings")
        redacted = self.redactor.redact(details) if details else {}
        if redacted:
            _check_json(redacted, "details")
        record: dict[str, Any] = {
            "index": 0,
            "time": _format_time(self.clock()),
            "actor": actor,
            "action": action,
            "object": obj,
            "decision": decision,
            "reason": reason,
            "request_id": request_id,
            "details": redacted,
        }
        if shard is not None:
            record["shard"] = shard
        if nbytes is not None:
            record["bytes"] = int(nbytes)
        body = canonical_json(record, checked=True)
        head, _, tail = body.rpartition(_INDEX_PLACEHOLDER)
        return head + _INDEX_KEY, tail

    def append(
        self,
        *,
        actor: str,
        action: str,
        obj: str,
        decision: str,
        reason: str = "",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        shard: str | None = None,
        nbytes: int | None = None,
    ) -> int:
        """Record one decision durably and return its index; raises AuditUnavailable."""
        item = self._encode(actor, action, obj, decision, reason, request_id, details, shard,
                            nbytes)
        batch, offset = self._enqueue([item])
        index = self._await(batch, offset, 1)[0]
        assert index is not None  # only guarded appends are ever dropped
        return index

    def append_if(
        self,
        guard: AppendGuard,
        claim: Any,
        *,
        actor: str,
        action: str,
        obj: str,
        decision: str,
        reason: str = "",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        shard: str | None = None,
        nbytes: int | None = None,
    ) -> int | None:
        """Record one decision only if ``guard`` admits ``claim`` in the same transaction.

        Returns the entry's index once it is durable, or None when the guard
        refused the claim (then nothing was written for it). Whatever the guard
        wrote for an admitted claim is durable exactly when the entry is; when
        the batch fails (:class:`AuditUnavailable`) neither was written, except
        after a timeout, when the batch may still commit later.
        """
        item = self._encode(actor, action, obj, decision, reason, request_id, details, shard,
                            nbytes)
        batch, offset = self._enqueue([item], (guard, claim))
        return self._await(batch, offset, 1)[0]

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Record several decisions (keyword dicts as for :meth:`append`) in one batch."""
        items = []
        for e in events:
            kw = dict(e)
            items.append(self._encode(
                kw.pop("actor"), kw.pop("action"), kw.pop("obj"), kw.pop("decision"),
                kw.pop("reason", ""), kw.pop("request_id", None), kw.pop("details", None),
                kw.pop("shard", None), kw.pop("nbytes", None),
            ))
            if kw:
                raise InvalidInput(f"unknown audit event fields: {', '.join(sorted(kw))}")
        if not items:
            return []
        batch, offset = self._enqueue(items)
        return cast(list[int], self._await(batch, offset, len(items)))

    def submit(
        self,
        *,
        actor: str,
        action: str,
        obj: str,
        decision: str,
        reason: str = "",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        shard: str | None = None,
        nbytes: int | None = None,
    ) -> PendingAppend:
        """Queue one decision without waiting; ``.result()`` waits until it is durable.

        For pipelined producers (like Tessera's futures): the decision must not
        take effect before ``result()`` has returned its index.
        """
        item = self._encode(actor, action, obj, decision, reason, request_id, details, shard,
                            nbytes)
        batch, offset = self._enqueue([item])
        return PendingAppend(self, batch, offset)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce that this thread will append soon (a key release on its way).

        While announced appends are pending, the writer holds its next batch
        open for at most ``commit_delay`` seconds so that they share one
        commit: a release then costs a fraction of a transaction instead of
        most of one, at the price of that bounded wait. The announcement ends
        at this thread's next append or when the block exits, whichever is
        first; a block that never appends costs the writer at most one delay.
        """
        with self._lock:
            self._expected += 1
        self._announced.pending = True
        try:
            yield
        finally:
            if getattr(self._announced, "pending", False):
                self._announced.pending = False
                with self._lock:
                    self._expected -= 1
                    if self._gathering:
                        self._wake.notify()

    def _enqueue(
        self, items: list[tuple[bytes, bytes]], guarded: tuple[AppendGuard, Any] | None = None
    ) -> tuple[_Batch, int]:
        announced = getattr(self._announced, "pending", False)
        with self._lock:
            if self._closed:
                raise AuditUnavailable("the audit log is closed", remedy="open the log again")
            if announced:
                self._announced.pending = False
                self._expected -= 1
            batch = self._batch
            offset = len(batch.items)
            batch.items.extend(items)
            if guarded is not None:
                batch.guarded.append((offset, *guarded))
            if offset == 0 or self._gathering:
                self._wake.notify()
        return batch, offset

    def _gather(self) -> None:
        """With the lock held and a batch waiting: let announced appends join it (bounded)."""
        if self.commit_delay <= 0 or self._expected <= 0:
            return
        deadline = time.monotonic() + self.commit_delay
        self._gathering = True
        try:
            while self._expected > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
        finally:
            self._gathering = False

    def _await(self, batch: _Batch, offset: int, count: int) -> list[int | None]:
        if not batch.done.wait(self.append_timeout):
            raise AuditUnavailable(
                f"audit append not durable after {self.append_timeout:.0f} s",
                obj=self.store.url,
            )
        if batch.error is not None:
            if isinstance(batch.error, AuditUnavailable):
                raise AuditUnavailable(batch.error.message, obj=batch.error.obj,
                                       remedy=batch.error.remedy) from batch.error
            raise AuditUnavailable(
                f"audit append failed: {type(batch.error).__name__}: {batch.error}",
                obj=self.store.url,
            ) from batch.error
        if batch.indices is not None:
            return [None if i < 0 else i for i in batch.indices[offset:offset + count]]
        first = batch.first + offset
        return list(range(first, first + count))

    def _run_writer(self) -> None:
        while True:
            with self._lock:
                while not self._batch.items and not self._closed:
                    self._wake.wait()
                if not self._batch.items and self._closed:
                    return
                self._gather()
                batch = self._batch
                self._batch = _Batch()
                carried, self._unrecorded = self._unrecorded, []
            own = len(batch.items)
            batch.items.extend(carried)  # after the callers' items: their offsets stand
            committed = False
            try:
                batch.first = self._commit(batch)
                committed = True
            except BaseException as exc:  # every failure reaches the callers: fail closed
                self._frontier = None
                batch.error = exc
                log.error("audit batch of %d entries failed: %s", len(batch.items), exc)
                # Refused before anything was written (the locks were never had): recorded
                # as refusals by the next batch that commits.
                refused = ([self._refusal(item, exc) for item in batch.items[:own]]
                           if _lock_timed_out(exc.__cause__) else [])
                with self._lock:
                    self._unrecorded[:0] = carried + refused
                    del self._unrecorded[:-_MAX_UNRECORDED]
            if batch.guarded:
                self._settle(batch, committed)
            batch.done.set()

    @staticmethod
    def _by_guard(batch: _Batch) -> list[tuple[AppendGuard, list[int], list[Any]]]:
        groups: dict[int, tuple[AppendGuard, list[int], list[Any]]] = {}
        for offset, guard, claim in batch.guarded:
            group = groups.setdefault(id(guard), (guard, [], []))
            group[1].append(offset)
            group[2].append(claim)
        return list(groups.values())

    def _admit(self, conn: Connection, batch: _Batch, size: int) -> list[tuple[bytes, bytes]]:
        """Ask each guard about its claims; return the items to write from index ``size``.

        When a guard drops any item, ``batch.indices`` maps every item to its index
        (-1 when dropped).
        """
        keep = [True] * len(batch.items)
        for guard, offsets, claims in self._by_guard(batch):
            verdicts = list(guard.admit(conn, claims))
            if len(verdicts) != len(claims):
                raise AuditUnavailable(f"an append guard answered {len(verdicts)} of "
                                       f"{len(claims)} claims", obj=self.origin)
            for offset, ok in zip(offsets, verdicts, strict=True):
                keep[offset] = bool(ok)
        if all(keep):
            return batch.items
        indices: list[int] = []
        items: list[tuple[bytes, bytes]] = []
        for item, ok in zip(batch.items, keep, strict=True):
            indices.append(size + len(items) if ok else -1)
            if ok:
                items.append(item)
        batch.indices = indices
        return items

    def _settle(self, batch: _Batch, committed: bool) -> None:
        for guard, _, claims in self._by_guard(batch):
            try:
                guard.settle(claims, committed)
            except Exception as exc:  # the batch's outcome stands; the guard must recover
                log.error("append guard %r failed to settle: %s", guard, exc)

    def _commit(self, batch: _Batch) -> int:
        with self._write_tx(f"append {len(batch.items)} entries") as conn:
            # Plain DB-API statements: this transaction is the hot loop of every append.
            found = conn.exec_driver_sql(self._select_size).scalar()
            if found is None:
                raise AuditUnavailable("the audit head row is missing", obj=self.store.url,
                                       remedy="run the migrations (Store.open) on this database")
            size = int(found)
            items = self._admit(conn, batch, size) if batch.guarded else batch.items
            if not items:
                return size  # every item was conditional and refused: nothing to append
            frontier = self._frontier
            if frontier is None or frontier.size != size:
                frontier = self._load_frontier(conn, size)
            frontier = frontier.copy()
            sha = hashlib.sha256
            append = frontier.append
            entries = []
            nodes: list[tuple[int, int, bytes]] = []
            for i, (prefix, suffix) in enumerate(items):
                body = prefix + str(size + i).encode() + suffix
                lh = sha(b"\x00" + body).digest()
                entries.append((size + i, lh, body))
                nodes += append(lh)
            conn.exec_driver_sql(self._insert_entry, entries)
            if nodes:
                conn.exec_driver_sql(self._insert_node, nodes)
            moved = conn.exec_driver_sql(self._move_head, (frontier.size, frontier.root(), size))
            if moved.rowcount != 1:
                raise AuditUnavailable("audit head moved during a batch (lost lock)")
        self._frontier = frontier
        return size

    def _load_frontier(self, conn: Connection, size: int) -> Frontier:
        keys = perfect_subtrees(0, size)
        found = self._nodes(conn, keys)
        missing = [k for k in keys if k not in found]
        if missing:
            raise IntegrityError(
                f"stored tree is missing node {missing[0]} below head size {size}",
                obj="audit log",
                remedy="run `strongroom audit verify` and restore the audit tables",
            )
        return Frontier.from_hashes(size, [found[k] for k in keys])

    def _nodes(self, conn: Connection, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        out: dict[NodeKey, bytes] = {}
        leaves = [i for lv, i in keys if lv == 0]
        inner = [(lv, i) for lv, i in keys if lv > 0]
        if leaves:
            mark = "%s" if self._pg else "?"
            marks = ", ".join([mark] * len(leaves))
            found: Any = conn.exec_driver_sql(
                f"SELECT idx, leaf_hash FROM audit_entries WHERE idx IN ({marks})",  # noqa: S608
                tuple(leaves),
            )
            out.update({(0, int(i)): bytes(h) for i, h in found})
        if inner:
            mark = "%s" if self._pg else "?"
            where = " OR ".join([f"(level = {mark} AND idx = {mark})"] * len(inner))
            params = tuple(x for key in inner for x in key)
            rows: Any = conn.exec_driver_sql(
                f"SELECT level, idx, hash FROM audit_nodes WHERE {where}", params  # noqa: S608
            )
            for level, index, h in rows:
                out[int(level), int(index)] = bytes(h)
        return out

    def _lookup(self, conn: Connection) -> Callable[[Sequence[NodeKey]], dict[NodeKey, bytes]]:
        def lookup(keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
            found = self._nodes(conn, keys)
            for k in keys:
                if k not in found:
                    raise IntegrityError(f"stored tree is missing node {k}", obj="audit log")
            return found

        return lookup

    # -- reading --------------------------------------------------------------

    def size(self) -> int:
        """Number of entries committed."""
        with self._read("read the size") as conn:
            return int(conn.execute(select(_HEAD.c.size).where(_HEAD.c.id == 1)).scalar_one())

    def head(self) -> tuple[int, bytes, int]:
        """``(size, root, latest checkpoint size)`` as the head row records them."""
        with self._read("read the head") as conn:
            row = conn.execute(select(_HEAD).where(_HEAD.c.id == 1)).one()
        return int(row.size), bytes(row.root), int(row.checkpoint_size)

    def require_intact(self) -> None:
        """Raise :class:`AuditUnavailable` once this log was found rolled back (a flag: cheap).

        The release gate calls it before every release; see
        :mod:`strongroom.audit.highwater` for what sets it.
        """
        found = self._rollback
        if found is not None:
            raise AuditUnavailable(found.message, obj=found.obj, remedy=found.remedy)

    def mark_rolled_back(self, error: AuditUnavailable) -> None:
        """Make :meth:`require_intact` refuse with ``error`` until the log is opened again."""
        if self._rollback is None:
            self._rollback = error

    def event(self, index: int) -> AuditEvent:
        """The entry at ``index`` (as stored: check it with :meth:`prove`)."""
        with self._read("read an entry") as conn:
            body = conn.execute(
                select(_ENTRIES.c.body).where(_ENTRIES.c.idx == index)
            ).scalar_one_or_none()
        if body is None:
            raise NotFound(f"no audit entry {index}", obj="audit log")
        return AuditEvent.from_body(bytes(body))

    def events(self, start: int = 0, end: int | None = None) -> list[AuditEvent]:
        """Entries with ``start <= index < end``, in order."""
        q = select(_ENTRIES.c.body).where(_ENTRIES.c.idx >= start).order_by(_ENTRIES.c.idx)
        if end is not None:
            q = q.where(_ENTRIES.c.idx < end)
        with self._read("read entries") as conn:
            return [AuditEvent.from_body(bytes(b)) for b in conn.execute(q).scalars()]

    def tail(self, n: int = 20) -> list[AuditEvent]:
        """The last ``n`` entries."""
        size = self.size()
        return self.events(max(0, size - n), size)

    def checkpoints(self) -> list[str]:
        """Every stored signed checkpoint (with cosignatures), oldest first."""
        with self._read("read checkpoints") as conn:
            rows = conn.execute(select(_CHECKPOINTS.c.note).order_by(_CHECKPOINTS.c.size))
            return [str(r[0]) for r in rows]

    def latest_checkpoint(self) -> str | None:
        """The latest signed checkpoint, or None before the first one."""
        with self._read("read the latest checkpoint") as conn:
            return self._latest(conn)

    def _latest(self, conn: Connection) -> str | None:
        head = conn.execute(select(_HEAD.c.checkpoint_size).where(_HEAD.c.id == 1)).scalar_one()
        note = conn.execute(
            select(_CHECKPOINTS.c.note).where(_CHECKPOINTS.c.size == head)
        ).scalar_one_or_none()
        return None if note is None else str(note)

    def opened(self, note: str, quorum: int = 0) -> OpenedCheckpoint:
        """Verify a checkpoint note of this log (signature and cosignatures)."""
        return open_checkpoint(
            note,
            log_key=self.signer.verifier,
            witness_keys=[w.verifier for w in self.witnesses],
            quorum=quorum,
            origin=self.origin,
        )

    # -- proofs ---------------------------------------------------------------

    def prove(self, index: int) -> InclusionProof:
        """Inclusion proof of entry ``index`` against the latest signed checkpoint."""
        with self._read("build a proof") as conn:
            note = self._latest(conn)
            if note is not None:
                proof = self._prove_at(conn, index, note)
                if proof is not None:
                    return proof
        note = self.checkpoint(require_quorum=False)
        with self._read("build a proof") as conn:
            proof = self._prove_at(conn, index, note)
        if proof is None:
            raise NotFound(f"no audit entry {index}", obj="audit log")
        return proof

    def _prove_at(self, conn: Connection, index: int, note: str) -> InclusionProof | None:
        text, _ = parse_note(note)
        cp = Checkpoint.parse(text)
        if not 0 <= index < cp.size:
            return None
        body = conn.execute(
            select(_ENTRIES.c.body).where(_ENTRIES.c.idx == index)
        ).scalar_one_or_none()
        if body is None:
            raise IntegrityError(f"entry {index} is missing (deleted)", obj="audit log")
        hashes = inclusion_proof(index, cp.size, self._lookup(conn))
        return InclusionProof(index, bytes(body), tuple(hashes), note)

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes of the stored tree."""
        with self._read("build a consistency proof") as conn:
            return consistency_proof(old, new, self._lookup(conn))

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(
        self, *, require_quorum: bool = True, on_signed: Callable[[str], None] | None = None
    ) -> str:
        """Sign a checkpoint at the current size (CAS), push it to the witnesses.

        ``on_signed`` gets the note once it is signed and stored, before the
        witnesses are asked (a high-water mark kept outside the database).
        Returns the signed note with the cosignatures collected. Raises
        :class:`IntegrityError` when the stored tree does not extend the last
        signed checkpoint or a witness holds evidence of a fork or rollback,
        and :class:`AuditUnavailable` when fewer than ``quorum`` witnesses
        cosigned (the checkpoint is then signed and stored, but not published).
        """
        with self._tx("sign a checkpoint") as conn:
            head = self._lock_head(conn)
            size, root, prev_size = int(head.size), bytes(head.root), int(head.checkpoint_size)
            prev = conn.execute(
                select(_CHECKPOINTS.c.size, _CHECKPOINTS.c.root, _CHECKPOINTS.c.note)
                .where(_CHECKPOINTS.c.size == prev_size)
            ).one_or_none()
            frontier = self._load_frontier(conn, size)
            if frontier.root() != root:
                raise _divergence(f"the head root does not match the stored tree at size {size}")
            if prev is not None and int(prev.size) == size:
                note = str(prev.note)
                old_size = size
            else:
                if prev is not None and int(prev.size) > 0:
                    try:
                        proof = consistency_proof(int(prev.size), size, self._lookup(conn))
                        verify_consistency(int(prev.size), size, proof, bytes(prev.root), root)
                    except InvalidProof as exc:
                        raise _divergence(
                            f"refusing to sign: the tree at size {size} does not extend the "
                            f"signed checkpoint of size {int(prev.size)} ({exc.message})"
                        ) from exc
                elif prev_size > 0:
                    raise _divergence(f"the latest signed checkpoint (size {prev_size}) is missing")
                note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
                conn.execute(_CHECKPOINTS.insert().values(
                    size=size, root=root, note=note, created_at=_utcnow()
                ))
                swapped = conn.execute(
                    update(_HEAD)
                    .where(_HEAD.c.id == 1, _HEAD.c.checkpoint_size == prev_size)
                    .values(checkpoint_size=size)
                )
                if swapped.rowcount != 1:
                    raise AuditUnavailable("another signer moved the checkpoint; retry")
                old_size = prev_size
        if on_signed is not None:
            on_signed(note)
        note = self._publish(note, size, old_size)
        self._write_anchor(note)
        if require_quorum and self.quorum:
            cosigners = self.opened(note).cosigners
            if len(cosigners) < self.quorum:
                raise AuditUnavailable(
                    f"checkpoint of size {size} is signed but not published: "
                    f"{len(cosigners)} of the {self.quorum} required witnesses cosigned",
                    obj=self.origin,
                    remedy="check that the witnesses are reachable, then run "
                    "`strongroom audit checkpoint` again",
                )
        return note

    def _publish(self, note: str, size: int, guess: int) -> str:
        if not self.witnesses:
            return note
        text, _ = parse_note(note)
        cp = Checkpoint.parse(text)
        lines: list[str] = []
        for witness in self.witnesses:
            try:
                lines += self._push(witness, note, cp, guess)
            except WitnessError as exc:
                log.warning("witness %s did not cosign size %d: %s", witness.name, size, exc)
        if not lines:
            return note
        with self._tx("store cosignatures") as conn:
            stored = conn.execute(
                select(_CHECKPOINTS.c.note).where(_CHECKPOINTS.c.size == size).with_for_update()
                if self._pg else
                select(_CHECKPOINTS.c.note).where(_CHECKPOINTS.c.size == size)
            ).scalar_one()
            merged = add_signature_lines(str(stored), lines)
            conn.execute(
                update(_CHECKPOINTS).where(_CHECKPOINTS.c.size == size).values(note=merged)
            )
        return merged

    def _push(self, witness: WitnessClient, note: str, cp: Checkpoint, guess: int) -> list[str]:
        old = self._witness_sizes.get(witness.name, guess)
        for _ in range(3):
            if old > cp.size:
                raise _divergence(
                    f"witness {witness.name} has cosigned size {old}, but the log has only "
                    f"{cp.size} entries: the log was rolled back or truncated",
                    obj=self.origin,
                )
            proof = [] if old in (0, cp.size) else self.consistency(old, cp.size)
            try:
                lines = witness.add_checkpoint(old, proof, note)
            except WitnessConflict as conflict:
                if conflict.size == old == cp.size:
                    raise _divergence(
                        f"witness {witness.name} holds a different tree head at size {cp.size}: "
                        "the log forked",
                        obj=self.origin,
                    ) from conflict
                old = conflict.size
                continue
            except WitnessProofRejected as rejected:
                raise _divergence(
                    f"witness {witness.name} cosigned a tree of size {old} that the log's tree "
                    f"of size {cp.size} does not extend: the log forked or was rewritten",
                    obj=self.origin,
                ) from rejected
            self._witness_sizes[witness.name] = cp.size
            return lines
        raise WitnessError(f"witness {witness.name} kept changing its size")

    def _write_anchor(self, note: str) -> None:
        if self.anchor_path is None:
            return
        path = self.anchor_path
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if path.exists():
            with contextlib.suppress(StrongroomError, OSError):
                old = self.opened(path.read_text()).checkpoint
                new = self.opened(note).checkpoint
                if old.size > new.size:
                    return
        write_output(path, note.encode("utf-8"))

    # -- verification ---------------------------------------------------------

    def verify(self, trusted: Iterable[str] = ()) -> VerifyReport:
        """Replay the whole log; raise :class:`IntegrityError` naming the first divergence.

        Checks every entry's bytes against its leaf hash and its position,
        every stored interior node, the head, every stored checkpoint (log
        signature, cosignatures from configured witnesses, root at its size),
        and ``trusted`` checkpoints kept outside the database (plus the anchor
        file) to detect a rollback.
        """
        with self._read("verify the log") as conn:
            head = conn.execute(select(_HEAD).where(_HEAD.c.id == 1)).one()
            size = int(head.size)
            levels = [self._verify_entries(conn, size)]
            self._verify_nodes(conn, levels)
            cps = [
                (int(r[0]), str(r[1]))
                for r in conn.execute(
                    select(_CHECKPOINTS.c.size, _CHECKPOINTS.c.note).order_by(_CHECKPOINTS.c.size)
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
            raise _divergence(f"the head's root does not match the {size} entries")
        report = VerifyReport(size=size, root=root)
        good = 0
        for cp_size, note in cps:
            opened = self._verify_checkpoint(note, cp_size, size, root_at, good)
            good = cp_size
            report.checkpoints += 1
            report.cosignatures += len(opened.cosigners)
            report.latest_checkpoint = note
        if cps and cps[-1][0] != cp_pointer:
            raise _divergence(
                f"the head points at checkpoint {cp_pointer}, the latest stored is {cps[-1][0]}"
            )
        if not cps and cp_pointer:
            raise _divergence(f"signed checkpoint of size {cp_pointer} is missing")
        external = list(trusted)
        if self.anchor_path is not None and self.anchor_path.exists():
            external.append(self.anchor_path.read_text())
        for note in external:
            self._verify_trusted(note, size, root_at)
            report.trusted += 1
        return report

    def _verify_entries(self, conn: Connection, size: int) -> list[bytes]:
        leaves: list[bytes] = []
        sha = hashlib.sha256
        result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
            select(_ENTRIES.c.idx, _ENTRIES.c.leaf_hash, _ENTRIES.c.body).order_by(_ENTRIES.c.idx)
        )
        expected = 0
        for idx, stored_hash, body in result:
            idx = int(idx)
            body = bytes(body)
            if idx != expected:
                if idx > expected:
                    raise _divergence(
                        f"entry {expected} is missing (deleted)"
                        + (f"; entries {expected}..{idx - 1} are gone" if idx > expected + 1 else ""),
                        obj=f"audit entry {expected}",
                    )
                raise _divergence(f"duplicate entry {idx}", obj=f"audit entry {idx}")
            h = sha(b"\x00" + body).digest()
            if h != bytes(stored_hash):
                raise _divergence(
                    "entry bytes were edited: they no longer match the entry's leaf hash",
                    obj=f"audit entry {idx}",
                )
            claimed = _entry_index(body)
            if claimed != idx:
                raise _divergence(
                    f"entry stored at position {idx} records index {claimed}: "
                    "entries were swapped or moved",
                    obj=f"audit entry {idx}",
                )
            leaves.append(h)
            expected += 1
            if expected > size:
                raise _divergence(
                    f"entry {idx} lies beyond the head's size {size}",
                    obj=f"audit entry {idx}",
                )
        if expected < size:
            raise _divergence(
                f"the tail was truncated: the head records {size} entries, "
                f"entries {expected}..{size - 1} are missing",
                obj=f"audit entry {expected}",
            )
        return leaves

    def _verify_nodes(self, conn: Connection, levels: list[list[bytes]]) -> None:
        level = 1
        while len(levels[level - 1]) >= 2:
            below = levels[level - 1]
            computed = [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)]
            rows = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
                select(_NODES.c.idx, _NODES.c.hash)
                .where(_NODES.c.level == level)
                .order_by(_NODES.c.idx)
            )
            expected = 0
            for idx, h in rows:
                idx = int(idx)
                first, last = expected << level, ((expected + 1) << level) - 1
                if idx != expected or idx >= len(computed):
                    raise _divergence(
                        f"stored tree node (level {level}, index {expected}) over entries "
                        f"{first}..{last} is missing or misplaced",
                        obj=f"audit entry {first}",
                    )
                if bytes(h) != computed[idx]:
                    raise _divergence(
                        f"stored tree node (level {level}, index {idx}) does not match entries "
                        f"{first}..{last}: one of them was edited together with its leaf hash",
                        obj=f"audit entry {first}",
                    )
                expected += 1
            if expected != len(computed):
                raise _divergence(
                    f"stored tree node (level {level}, index {expected}) is missing",
                    obj=f"audit entry {expected << level}",
                )
            levels.append(computed)
            level += 1

    def _verify_checkpoint(
        self, note: str, cp_size: int, size: int, root_at: Callable[[int], bytes], good: int
    ) -> OpenedCheckpoint:
        where = f"checkpoint {cp_size}"
        try:
            opened = self.opened(note)
        except NoteError as exc:
            raise _divergence(f"signature check failed: {exc.message}", obj=where) from exc
        cp = opened.checkpoint
        if cp.size != cp_size:
            raise _divergence(f"stored under size {cp_size} but signed for size {cp.size}",
                              obj=where)
        unknown = sorted({s.name for s in opened.note.unverified})
        if unknown:
            raise _divergence(
                f"carries a cosignature from unknown witness {', '.join(unknown)}",
                obj=where,
                )
        if cp.size > size:
            raise _divergence(
                f"the log has only {size} entries but a signed checkpoint covers {cp.size}: "
                f"the tail was truncated (entries {size}..{cp.size - 1} are gone)",
                obj=where,
            )
        if root_at(cp.size) != cp.root:
            raise _divergence(
                f"the entries do not match the signed root: history between entries {good} "
                f"and {cp.size - 1} was rewritten",
                obj=where,
            )
        return opened

    def _verify_trusted(self, note: str, size: int, root_at: Callable[[int], bytes]) -> None:
        try:
            cp = self.opened(note).checkpoint
        except NoteError as exc:
            raise _divergence(f"external checkpoint does not verify: {exc.message}") from exc
        if cp.size > size:
            raise _divergence(
                f"the log was rolled back: a checkpoint signed for size {cp.size} exists "
                f"outside the database, but the log has only {size} entries "
                f"(entries {size}..{cp.size - 1} are gone)",
                obj=f"checkpoint {cp.size}",
            )
        if root_at(cp.size) != cp.root:
            raise _divergence(
                f"the log forked: the entries do not match the checkpoint of size {cp.size} "
                "kept outside the database",
                obj=f"checkpoint {cp.size}",
            )

    # -- life cycle -----------------------------------------------------------

    def check_value(self, index: int, field_name: str, value: str) -> bool:
        """True when redacted field ``field_name`` of entry ``index`` is the HMAC of ``value``."""
        event = self.event(index)
        stored = event.details.get(field_name)
        if not isinstance(stored, str):
            raise NotFound(f"entry {index} has no redacted field {field_name!r}")
        return self.redactor.matches(stored, value)

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._writer.join()
        if self._reader is not self.store.engine:
            self._reader.dispose()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Secrets are re-exported here for callers that build details dicts.
__all__ += ["Secret"]

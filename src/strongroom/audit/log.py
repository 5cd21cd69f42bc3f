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

* **Group commit.** Appends from any number of threads are queued; the
  first caller to wait while no commit is under way leads: it commits
  everything queued in one transaction (one fsync) on its own thread, then
  wakes the other callers with their indices and hands the next batch to one
  of its callers (no hand-off to a writer thread of its own).
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

:class:`AuditLog` is a small face over the modules that do the work:
:mod:`~strongroom.audit.entry` (the entry's encoding and :class:`AuditEvent`),
:mod:`~strongroom.audit.writer` (the group-commit writer, :class:`AppendGuard`),
:mod:`~strongroom.audit.tree` (the stored tree, reads, :class:`InclusionProof`),
:mod:`~strongroom.audit.signing` (checkpoints, witnesses, the anchor file) and
:mod:`~strongroom.audit.verify` (full verification, :class:`VerifyReport`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from strongroom.audit.checkpoint import OpenedCheckpoint
from strongroom.audit.entry import AuditEvent, EncodedEntry, EntryEncoder, utcnow
from strongroom.audit.recent import RecentEntries
from strongroom.audit.redaction import Redactor, Secret
from strongroom.audit.signing import CheckpointSigner
from strongroom.audit.tree import InclusionProof, StoredTree
from strongroom.audit.verify import VerifyReport, verify_log
from strongroom.audit.witness import WitnessClient
from strongroom.audit.writer import (
    APPEND_TIMEOUT_S,
    COMMIT_DELAY_S,
    LOCK_TIMEOUT_S,
    AppendGuard,
    GroupCommitWriter,
    PendingAppend,
)
from strongroom.crypto.note import Ed25519Signer, ExternalEd25519Signer
from strongroom.errors import AuditUnavailable, ConfigError, InvalidInput, NotFound
from strongroom.store.db import Store

__all__ = [
    "AppendGuard",
    "AuditEvent",
    "AuditLog",
    "InclusionProof",
    "PendingAppend",
    "Secret",
    "VerifyReport",
]


class AuditLog:
    """An append-only, Merkle-tree audit log with signed, witnessed checkpoints."""

    def __init__(
        self,
        store: Store,
        signer: Ed25519Signer | ExternalEd25519Signer,
        origin: str | None = None,
        witnesses: Sequence[WitnessClient] = (),
        quorum: int = 0,
        clock: Callable[[], datetime] = utcnow,
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
        self._rollback: AuditUnavailable | None = None
        self._tree = StoredTree(store)
        self.redactor = Redactor(self._tree.init_head(origin, redaction_salt))
        self._encoder = EntryEncoder(self.redactor, clock)
        self._signing = CheckpointSigner(self._tree, signer, origin, self.witnesses, quorum,
                                         anchor_path)
        self._recent = RecentEntries()
        self._writer = GroupCommitWriter(
            store, self._tree, self._encoder.refusal, origin=origin, recent=self._recent,
            append_timeout=append_timeout, commit_delay=commit_delay, lock_timeout=lock_timeout,
        )

    @classmethod
    def open_default(cls, store: Store, signing_key: Any, **kwargs: Any) -> AuditLog:
        """A log configured from ``STRONGROOM_*`` settings, signing with ``signing_key``."""
        from strongroom.audit.config import AuditSettings

        return AuditSettings().open_log(store, signing_key, **kwargs)

    # -- appending ------------------------------------------------------------

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
        item = self._encoder.encode(actor, action, obj, decision, reason, request_id, details,
                                    shard, nbytes)
        return self._writer.append_one(item)

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
        item = self._encoder.encode(actor, action, obj, decision, reason, request_id, details,
                                    shard, nbytes)
        return self._writer.append([item], (guard, claim))[0]

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Record several decisions (keyword dicts as for :meth:`append`) in one batch."""
        items = [self._encode(e) for e in events]
        if not items:
            return []
        return cast(list[int], self._writer.append(items))

    def append_many_if(
        self, guard: AppendGuard, claimed: Sequence[tuple[Any, Mapping[str, Any]]]
    ) -> list[int | None]:
        """Several :meth:`append_if` at once: (claim, event keywords) pairs, one batch, in order.

        The guard decides the claims in order inside the one transaction that
        appends the admitted entries; each result is an index once durable, or
        None where the guard refused that claim.
        """
        items = [self._encode(event) for _, event in claimed]
        if not items:
            return []
        return self._writer.append(
            items, claims=[(i, guard, claim) for i, (claim, _) in enumerate(claimed)])

    def _encode(self, event: Mapping[str, Any]) -> EncodedEntry:
        if type(event) is dict:
            try:  # the event's keywords are the encoder's parameters
                return self._encoder.encode(**event)
            except TypeError:
                pass  # a field unknown or missing (or of a bad type): named below
        kw = dict(event)
        item = self._encoder.encode(
            kw.pop("actor"), kw.pop("action"), kw.pop("obj"), kw.pop("decision"),
            kw.pop("reason", ""), kw.pop("request_id", None), kw.pop("details", None),
            kw.pop("shard", None), kw.pop("nbytes", None),
        )
        if kw:
            raise InvalidInput(f"unknown audit event fields: {', '.join(sorted(kw))}")
        return item

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
        take effect before ``result()`` has returned its index. The entry is
        committed by the next caller that waits (this ``result()``, another
        append) or by :meth:`close`, with whatever else is queued then.
        """
        item = self._encoder.encode(actor, action, obj, decision, reason, request_id, details,
                                    shard, nbytes)
        batch, offset = self._writer.enqueue([item])
        return self._writer.pending(batch, offset)

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
        with self._writer.expecting():
            yield

    # -- reading --------------------------------------------------------------

    def observe_commits(self, callback: Callable[[int, float], None] | None) -> None:
        """Call ``callback(entries, seconds)`` after each committed batch (metrics; must not raise)."""
        self._writer.on_commit = callback

    def size(self) -> int:
        """Number of entries committed."""
        size = self._tree.size()
        self._recent.bound(size)
        return size

    def head(self) -> tuple[int, bytes, int]:
        """``(size, root, latest checkpoint size)`` as the head row records them."""
        return self._tree.head()

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
        return self._tree.event(index)

    def events(self, start: int = 0, end: int | None = None) -> list[AuditEvent]:
        """Entries with ``start <= index < end``, in order.

        The newest entries come from memory (:mod:`strongroom.audit.recent`: what
        this process committed or already read); the rest from the database.
        """
        recent = self._recent
        if end is None or end - start > recent.capacity:
            return self._tree.events(start, end)
        found = recent.get(start, end)
        if found is None:
            lo, hi = recent.gap(start, end)
            read = self._tree.events(lo, hi)
            recent.put(read)
            found = recent.get(start, end)
            if found is None:  # rows missing from the database, or older than the cache keeps
                # (a replay from the past): what was just read, unless it was only the gap.
                return read if (lo, hi) == (start, end) else self._tree.events(start, end)
        return found

    def recent(self, since: float, *, batch: int = 2000) -> Iterator[AuditEvent]:
        """Entries newest first, back to (and including) the first one at or before ``since``.

        The one replay of the log that unseal-time state (spent nonces, Grant
        bytes, the egress ledger) is rebuilt from; it reads ``batch`` entries at a time.
        """
        end = self.size()
        while end > 0:
            start = max(0, end - batch)
            for ev in reversed(self.events(start, end)):
                yield ev
                if ev.at <= since:
                    return
            end = start

    def tail(self, n: int = 20) -> list[AuditEvent]:
        """The last ``n`` entries."""
        size = self.size()
        return self.events(max(0, size - n), size)

    def checkpoints(self) -> list[str]:
        """Every stored signed checkpoint (with cosignatures), oldest first."""
        return self._tree.checkpoints()

    def latest_checkpoint(self) -> str | None:
        """The latest signed checkpoint, or None before the first one."""
        with self._tree.read("read the latest checkpoint") as conn:
            return self._tree.latest(conn)

    def opened(self, note: str, quorum: int = 0) -> OpenedCheckpoint:
        """Verify a checkpoint note of this log (signature and cosignatures)."""
        return self._signing.opened(note, quorum)

    # -- proofs ---------------------------------------------------------------

    def prove(self, index: int) -> InclusionProof:
        """Inclusion proof of entry ``index`` against the latest signed checkpoint."""
        with self._tree.read("build a proof") as conn:
            note = self._tree.latest(conn)
            if note is not None:
                proof = self._tree.prove_at(conn, index, note)
                if proof is not None:
                    return proof
        note = self.checkpoint(require_quorum=False)
        with self._tree.read("build a proof") as conn:
            proof = self._tree.prove_at(conn, index, note)
        if proof is None:
            raise NotFound(f"no audit entry {index}", obj="audit log")
        return proof

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes of the stored tree."""
        return self._tree.consistency(old, new)

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
        return self._signing.checkpoint(require_quorum=require_quorum, on_signed=on_signed)

    # -- verification ---------------------------------------------------------

    def verify(self, trusted: Iterable[str] = ()) -> VerifyReport:
        """Replay the whole log; raise :class:`IntegrityError` naming the first divergence.

        Checks every entry's bytes against its leaf hash and its position,
        every stored interior node, the head, every stored checkpoint (log
        signature, cosignatures from configured witnesses, root at its size),
        and ``trusted`` checkpoints kept outside the database (plus the anchor
        file) to detect a rollback.
        """
        return verify_log(self._tree, self._signing.opened, trusted, self.anchor_path)

    # -- life cycle -----------------------------------------------------------

    def check_value(self, index: int, field_name: str, value: str) -> bool:
        """True when redacted field ``field_name`` of entry ``index`` is the HMAC of ``value``."""
        event = self.event(index)
        stored = event.details.get(field_name)
        if not isinstance(stored, str):
            raise NotFound(f"entry {index} has no redacted field {field_name!r}")
        return self.redactor.matches(stored, value)

    def close(self) -> None:
        """Commit what is queued (``submit()`` included), then let the writer's connection go."""
        self._writer.close()
        self._tree.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

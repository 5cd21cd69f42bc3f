"""Query budgets and suspensions that survive a restart and are shared by every gateway process.

A caller's daily budget and a suspension after an extraction alert are restrictive facts, so
(DESIGN rule 1, absence is evidence) they are not kept in a table a database administrator
could empty: they are *derived from the gateway's own audit entries*, which are hash-chained
in the Merkle log, checkpointed, signed and witnessed:

* each answered request is a ``gateway.infer`` ``allow`` entry on the model carrying
  ``texts`` (the charge);
* each suspension is a ``gateway.infer`` ``throttle`` entry carrying
  ``suspend: [{"subject": "p:<principal>" | "h:<host>", "until": <epoch seconds>}]``.

:class:`UsageLedger` replays those entries once when the gateway starts (back to the budget
window, or the suspension length when longer), then keeps the totals in memory. It is the
:class:`~strongroom.audit.log.AppendGuard` of the ``allow`` entry: inside the audit batch's
transaction, after the audit head is locked (so no other process can append meanwhile), it
reads the entries appended since it last looked — its own and those of any other gateway on
the database — and admits the charge only if it fits the caller's and the model's budget and
no suspension applies. The charge and the entry commit together, before the answer leaves;
a refused charge writes nothing. Two gateways on one database therefore share one budget
exactly; a restart replays what was spent::

    usage = UsageLedger(audit, "minilm@1", limits_config, suspend_s=900)
    usage.load(time.time())                  # IntegrityError: evidence missing or altered
    usage.check("ivy", 8, now)               # cheap pre-check (QueryBudgetReached, Suspended)
    index = usage.charge("ivy", host, 8, now, event)   # the allow entry, or the refusal

Tampering fails closed. A row deleted from the entries the ledger reads (a gap in the
indices), a log shorter than its latest signed checkpoint or than what the ledger already
read, or replayed entries from which the latest signed checkpoint's root cannot be
recomputed (an edited ``texts``) raises :class:`~strongroom.errors.IntegrityError`: at start the
gateway refuses to start; while serving every later request is refused (503) until an
operator restores the log and restarts, and the gateway raises a ``usage-evidence`` alert.
Counts never go down because rows vanished: what was read stays counted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from strongroom.audit.entry import AuditEvent
from strongroom.audit.merkle import leaf_hash, node_hash
from strongroom.errors import IntegrityError, InvalidProof, Throttled
from strongroom.gateway.defence import BudgetWindow, LimitsConfig, QueryBudgetReached
from strongroom.store.tables.audit import AuditEntry, AuditHead

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from strongroom.audit.checkpoint import Checkpoint
    from strongroom.audit.log import AuditLog

__all__ = ["INFER_ACTION", "Suspended", "UsageLedger"]

#: The action of the gateway's per-request audit entries.
INFER_ACTION = "gateway.infer"
#: Entries read per database round trip while replaying.
_BATCH = 2000


class Suspended(Throttled):
    """The caller (or its host) is suspended after an extraction alert."""

    def __init__(self, obj: str, retry_after: float) -> None:
        super().__init__(
            "suspended after an extraction alert",
            obj=obj,
            retry_after=retry_after,
            remedy="an operator will review the alert",
        )


@dataclass
class _Claim:
    principal: str
    host: str
    texts: int
    now: float
    refusal: Throttled | None = None


def _left_siblings(m: int, n: int, hashes: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """The ranges (RFC 9162 PATH order: leaf level first) of an inclusion proof of leaf ``m``
    in a tree of ``n``, keeping those left of ``m``: together they cover ``[0, m)``."""
    ranges: list[tuple[int, int]] = []
    a, b = 0, n
    while b - a > 1:
        k = 1 << ((b - a - 1).bit_length() - 1)
        if m - a < k:
            ranges.append((a + k, b))
            b = a + k
        else:
            ranges.append((a, a + k))
            a = a + k
    ranges.reverse()
    if len(ranges) != len(hashes):
        raise InvalidProof(
            f"inclusion proof of entry {m} has {len(hashes)} hashes, not {len(ranges)}"
        )
    return {r: h for r, h in zip(ranges, hashes, strict=True) if r[1] <= m}


def suspension_details(subjects: Sequence[str], until: float) -> list[dict[str, Any]]:
    """The ``suspend`` detail of a throttle entry: ``p:<principal>`` / ``h:<host>`` subjects,
    ``until`` in whole epoch seconds (rounded up; audit entries carry no floats)."""
    return [{"subject": s, "until": math.ceil(until)} for s in subjects]


class UsageLedger:
    """Per-caller usage and suspensions of one model, derived from the audit log (see module)."""

    def __init__(
        self, audit: AuditLog, model_ref: str, limits: LimitsConfig, *, suspend_s: float = 900.0
    ) -> None:
        self.audit = audit
        self.model_ref = model_ref
        self.limits = limits
        self.horizon_s = max(limits.budget_window_s, suspend_s)
        self._lock = threading.Lock()
        self._windows: dict[str, BudgetWindow] = {}
        self._everyone = BudgetWindow()
        self._suspended: dict[str, float] = {}
        #: Index of the next entry to read.
        self._seen = 0
        #: Set once evidence was found missing or altered: every later decision refuses.
        self.broken: IntegrityError | None = None
        #: How many of the gateway's entries :meth:`load` counted (None before it ran).
        self.replayed: int | None = None

    # -- replay ----------------------------------------------------------------

    def load(self, now: float) -> int:
        """Replay the gateway's entries of the last window; returns how many were counted.

        Raises IntegrityError when entries in that range are missing, the log is shorter
        than its latest signed checkpoint, or a counted entry is not in that checkpoint.
        """
        audit = self.audit
        size = audit.size()
        note = audit.latest_checkpoint()
        signed = None if note is None else audit.opened(note).checkpoint
        if signed is not None and signed.size > size:
            raise self._fail(
                f"the audit log holds {size} entries but its signed checkpoint "
                f"covers {signed.size}: entries were deleted"
            )
        since = now - self.horizon_s
        found: list[AuditEvent] = []
        leaves: dict[int, bytes] = {}  # leaf hashes of every entry read below the checkpoint
        cut = 0 if signed is None else signed.size
        end = size
        while end > 0:
            start = max(0, end - _BATCH)
            batch = audit.events(start, end)
            self._contiguous(batch, start, end)
            leaves.update((ev.index, leaf_hash(ev.body)) for ev in batch if ev.index < cut)
            old = [ev.index for ev in batch if ev.at <= since]
            first = max(old) + 1 if old else start
            found += [
                ev
                for ev in reversed(batch)
                if ev.index >= first and ev.action == INFER_ACTION and ev.object == self.model_ref
            ]
            if old:
                break
            end = start
        found.reverse()
        if signed is not None and leaves:
            self._prove(leaves, signed)
        with self._lock:
            for ev in found:
                self._apply(ev)
            self._seen = size
            self.replayed = len(found)
        return len(found)

    def _prove(self, leaves: Mapping[int, bytes], signed: Checkpoint) -> None:
        """The entries read from ``lo = min(leaves)`` up to the signed checkpoint are the ones
        its root commits to: one inclusion proof (of entry ``lo``) supplies the subtrees left
        of ``lo``; the rest of the root is recomputed from the entries' own bytes.

        An edited body (fewer ``texts``, a suspension removed) hashes to another leaf, and
        the signed root cannot be rewritten without the log's key.
        """
        lo, n = min(leaves), signed.size
        left: dict[tuple[int, int], bytes] = {}
        if lo > 0:
            proof = self.audit.prove(lo)
            cp = self.audit.opened(proof.checkpoint).checkpoint
            if cp.size != n:  # a checkpoint signed since: prove against it instead
                return self._prove_at(leaves, lo, cp, proof.hashes)
            left = _left_siblings(lo, n, proof.hashes)
        self._check_root(leaves, lo, n, left, signed.root)
        return None

    def _prove_at(
        self, leaves: Mapping[int, bytes], lo: int, cp: Checkpoint, hashes: Sequence[bytes]
    ) -> None:
        more = {ev.index: leaf_hash(ev.body) for ev in self.audit.events(max(leaves) + 1, cp.size)}
        self._contiguous_indices(more, max(leaves) + 1, cp.size)
        self._check_root(
            {**leaves, **more}, lo, cp.size, _left_siblings(lo, cp.size, hashes), cp.root
        )

    def _contiguous_indices(self, have: Mapping[int, bytes], start: int, end: int) -> None:
        gap = next((i for i in range(start, end) if i not in have), None)
        if gap is not None:
            raise self._fail(
                f"audit entry {gap} is missing: the gateway's usage evidence was deleted"
            )

    def _check_root(
        self,
        leaves: Mapping[int, bytes],
        lo: int,
        n: int,
        left: Mapping[tuple[int, int], bytes],
        root: bytes,
    ) -> None:
        def mth(a: int, b: int) -> bytes:
            if b <= lo:
                return left[(a, b)]
            if b - a == 1:
                return leaves[a]
            k = 1 << ((b - a - 1).bit_length() - 1)
            return node_hash(mth(a, a + k), mth(a + k, b))

        try:
            ok = mth(0, n) == root
        except KeyError:
            ok = False
        if not ok:
            raise self._fail(
                f"the audit entries from {lo} to {n - 1} (the gateway's charges "
                "and suspensions among them) do not match the signed checkpoint: "
                "an entry was altered"
            )

    def _contiguous(self, batch: Sequence[AuditEvent], start: int, end: int) -> None:
        if len(batch) != end - start or any(ev.index != start + i for i, ev in enumerate(batch)):
            have = {ev.index for ev in batch}
            gap = next((i for i in range(start, end) if i not in have), start)
            raise self._fail(
                f"audit entry {gap} is missing (entries {start}..{end - 1} were "
                f"read): the gateway's usage evidence was deleted"
            )

    def _fail(self, message: str) -> IntegrityError:
        err = IntegrityError(
            message,
            obj=f"query budgets of {self.model_ref}",
            remedy="restore the audit log from a backup (`strongroom audit "
            "verify` names the damage), then restart the gateway",
        )
        self.broken = err
        return err

    def _apply(self, ev: AuditEvent) -> None:
        """Count one of the gateway's entries (under the lock)."""
        d = ev.details
        if ev.decision == "allow":
            texts = d.get("texts")
            if isinstance(texts, int) and not isinstance(texts, bool) and texts > 0:
                self._windows.setdefault(ev.actor, BudgetWindow()).add(ev.at, texts)
                self._everyone.add(ev.at, texts)
        elif ev.decision == "throttle":
            for s in d.get("suspend") or ():
                subject, until = s.get("subject"), s.get("until")
                if isinstance(subject, str) and isinstance(until, int | float):
                    self._suspended[subject] = max(self._suspended.get(subject, 0.0), float(until))

    def _sync(self, conn: Connection | None = None) -> None:
        """Read the entries appended since the last look (under the lock).

        ``conn``: the audit batch's transaction (the head is locked), whose snapshot gives
        the size without another connection.
        """
        if conn is None:
            size = self.audit.size()
        else:
            size = int(conn.execute(select(AuditHead.size).where(AuditHead.id == 1)).scalar_one())
        if size < self._seen:
            raise self._fail(f"the audit log shrank from {self._seen} to {size} entries")
        while self._seen < size:
            end = min(size, self._seen + _BATCH)
            batch = self._read(conn, self._seen, end)
            self._contiguous(batch, self._seen, end)
            for ev in batch:
                if ev.action == INFER_ACTION and ev.object == self.model_ref:
                    self._apply(ev)
            self._seen = end

    def _read(self, conn: Connection | None, start: int, end: int) -> list[AuditEvent]:
        """Entries ``start <= index < end`` as stored (a deleted row is simply absent)."""
        if conn is None:
            return self.audit.events(start, end)
        q = (
            select(AuditEntry.body)
            .where(AuditEntry.idx >= start, AuditEntry.idx < end)
            .order_by(AuditEntry.idx)
        )
        return [AuditEvent.from_body(bytes(b)) for b in conn.execute(q).scalars()]

    # -- decisions -------------------------------------------------------------

    def used(self, principal: str, now: float) -> int:
        """Texts charged to ``principal`` in the current window (as last read)."""
        with self._lock:
            w = self._windows.get(principal)
            return 0 if w is None else w.used(now, self.limits.budget_window_s)

    def suspended(self, principal: str, host: str, now: float) -> float:
        """Seconds left of a recorded suspension of this principal or host (0 if none)."""
        with self._lock:
            until = max(
                self._suspended.get(f"p:{principal}", 0.0), self._suspended.get(f"h:{host}", 0.0)
            )
        return max(0.0, until - now)

    def check(self, principal: str, texts: int, now: float) -> None:
        """Pre-check against the totals as last read (the charge decides for good)."""
        with self._lock:
            self._decide(_Claim(principal, "", texts, now), pending=None)

    def charge(
        self, principal: str, host: str, texts: int, now: float, event: Mapping[str, Any]
    ) -> int:
        """Append ``event`` (the ``allow`` entry) only if the charge fits; return its index.

        Raises :class:`QueryBudgetReached` or :class:`Suspended` (nothing appended),
        :class:`~strongroom.errors.AuditUnavailable` when the batch failed (also when the
        evidence was found missing: then :attr:`broken` names it).
        """
        claim = _Claim(principal, host, texts, now)
        index = self.audit.append_if(self, claim, **event)
        if claim.refusal is not None:
            raise claim.refusal
        assert index is not None  # an admitted claim is appended
        return index

    def _decide(self, claim: _Claim, pending: list[_Claim] | None) -> None:
        if self.broken is not None:
            raise self.broken
        c = self.limits
        until = max(
            self._suspended.get(f"p:{claim.principal}", 0.0),
            self._suspended.get(f"h:{claim.host}", 0.0),
        )
        if until > claim.now:
            claim.refusal = Suspended(claim.principal, until - claim.now)
            raise claim.refusal
        mine = sum(p.texts for p in pending or () if p.principal == claim.principal)
        everyone = sum(p.texts for p in pending or ())
        pw = self._windows.get(claim.principal) or BudgetWindow()
        for window, extra, cap, who in (
            (pw, mine, c.principal_budget, claim.principal),
            (self._everyone, everyone, c.global_budget, "all callers"),
        ):
            used = window.used(claim.now, c.budget_window_s) + extra
            if used + claim.texts > cap:
                first = window.events[0][0] if window.events else claim.now
                claim.refusal = QueryBudgetReached(
                    f"query budget of {cap} texts per {c.budget_window_s:.0f} s reached for {who}",
                    obj=claim.principal,
                    retry_after=max(1.0, first + c.budget_window_s - claim.now),
                    budget=cap,
                    window_s=c.budget_window_s,
                    everyone=window is self._everyone,
                )
                raise claim.refusal

    # -- AppendGuard -------------------------------------------------------------

    def admit(self, conn: Connection, claims: Sequence[Any]) -> list[bool]:
        """Decide the claims in the audit batch's transaction (the head is locked)."""
        out: list[bool] = []
        with self._lock:
            self._sync(conn)
            pending: list[_Claim] = []
            for claim in claims:
                try:
                    self._decide(claim, pending)
                except Throttled:
                    out.append(False)
                    continue
                pending.append(claim)
                out.append(True)
        return out

    def settle(self, claims: Sequence[Any], committed: bool) -> None:
        """Nothing to keep: committed charges are read back from the log at the next sync."""
        del claims, committed

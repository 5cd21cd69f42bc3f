"""Signing the log's checkpoints and gathering witness cosignatures.

:class:`CheckpointSigner` signs a C2SP checkpoint at the stored head only
after proving (from the stored tree) that the new tree extends the last signed
checkpoint, and advances the head's checkpoint pointer by compare-and-swap, so
the log never signs two inconsistent checkpoints. It then pushes the note to
each witness with a consistency proof from the size that witness last cosigned,
stores the cosignatures it got and writes the anchor file (a copy of the latest
note kept outside the database). :class:`strongroom.audit.log.AuditLog` owns
one; :mod:`strongroom.audit.publisher` calls it on an interval::

    signing = CheckpointSigner(tree, signer, origin, witnesses, quorum, anchor_path)
    note = signing.checkpoint()            # IntegrityError on a fork or rollback
    signing.opened(note).cosigners
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import select, update

from strongroom.audit.checkpoint import (
    Checkpoint,
    OpenedCheckpoint,
    add_signature_lines,
    open_checkpoint,
    sign_checkpoint,
)
from strongroom.audit.entry import utcnow
from strongroom.audit.merkle import InvalidProof, consistency_proof, verify_consistency
from strongroom.audit.tree import CHECKPOINTS, HEAD, StoredTree, divergence
from strongroom.audit.witness import (
    WitnessClient,
    WitnessConflict,
    WitnessError,
    WitnessProofRejected,
)
from strongroom.crypto.note import Ed25519Signer, ExternalEd25519Signer, parse_note
from strongroom.datadir import DIR_MODE
from strongroom.errors import AuditUnavailable, StrongroomError
from strongroom.outputs import write_output

__all__ = ["CheckpointSigner"]

log = logging.getLogger(__name__)


class CheckpointSigner:
    """Signs checkpoints of one stored tree and publishes them to its witnesses."""

    def __init__(
        self,
        tree: StoredTree,
        signer: Ed25519Signer | ExternalEd25519Signer,
        origin: str,
        witnesses: Sequence[WitnessClient] = (),
        quorum: int = 0,
        anchor_path: Path | None = None,
    ) -> None:
        self.tree = tree
        self.signer = signer
        self.origin = origin
        self.witnesses = list(witnesses)
        self.quorum = quorum
        self.anchor_path = anchor_path
        self._witness_sizes: dict[str, int] = {}

    def opened(self, note: str, quorum: int = 0) -> OpenedCheckpoint:
        """Verify a checkpoint note of this log (signature and cosignatures)."""
        return open_checkpoint(
            note,
            log_key=self.signer.verifier,
            witness_keys=[w.verifier for w in self.witnesses],
            quorum=quorum,
            origin=self.origin,
        )

    def checkpoint(
        self, *, require_quorum: bool = True, on_signed: Callable[[str], None] | None = None
    ) -> str:
        """Sign a checkpoint at the current size (CAS), push it to the witnesses.

        See :meth:`strongroom.audit.log.AuditLog.checkpoint`.
        """
        with self.tree.tx("sign a checkpoint") as conn:
            head = self.tree.lock_head(conn)
            size, root, prev_size = int(head.size), bytes(head.root), int(head.checkpoint_size)
            prev = conn.execute(
                select(CHECKPOINTS.c.size, CHECKPOINTS.c.root, CHECKPOINTS.c.note)
                .where(CHECKPOINTS.c.size == prev_size)
            ).one_or_none()
            frontier = self.tree.load_frontier(conn, size)
            if frontier.root() != root:
                raise divergence(f"the head root does not match the stored tree at size {size}")
            if prev is not None and int(prev.size) == size:
                note = str(prev.note)
                old_size = size
            else:
                if prev is not None and int(prev.size) > 0:
                    try:
                        proof = consistency_proof(int(prev.size), size, self.tree.lookup(conn))
                        verify_consistency(int(prev.size), size, proof, bytes(prev.root), root)
                    except InvalidProof as exc:
                        raise divergence(
                            f"refusing to sign: the tree at size {size} does not extend the "
                            f"signed checkpoint of size {int(prev.size)} ({exc.message})"
                        ) from exc
                elif prev_size > 0:
                    raise divergence(f"the latest signed checkpoint (size {prev_size}) is missing")
                note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
                conn.execute(CHECKPOINTS.insert().values(
                    size=size, root=root, note=note, created_at=utcnow()
                ))
                swapped = conn.execute(
                    update(HEAD)
                    .where(HEAD.c.id == 1, HEAD.c.checkpoint_size == prev_size)
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
        with self.tree.tx("store cosignatures") as conn:
            stored = conn.execute(
                select(CHECKPOINTS.c.note).where(CHECKPOINTS.c.size == size).with_for_update()
                if self.tree.pg else
                select(CHECKPOINTS.c.note).where(CHECKPOINTS.c.size == size)
            ).scalar_one()
            merged = add_signature_lines(str(stored), lines)
            conn.execute(
                update(CHECKPOINTS).where(CHECKPOINTS.c.size == size).values(note=merged)
            )
        return merged

    def _push(self, witness: WitnessClient, note: str, cp: Checkpoint, guess: int) -> list[str]:
        old = self._witness_sizes.get(witness.name, guess)
        for _ in range(3):
            if old > cp.size:
                raise divergence(
                    f"witness {witness.name} has cosigned size {old}, but the log has only "
                    f"{cp.size} entries: the log was rolled back or truncated",
                    obj=self.origin,
                )
            proof = [] if old in (0, cp.size) else self.tree.consistency(old, cp.size)
            try:
                lines = witness.add_checkpoint(old, proof, note)
            except WitnessConflict as conflict:
                if conflict.size == old == cp.size:
                    raise divergence(
                        f"witness {witness.name} holds a different tree head at size {cp.size}: "
                        "the log forked",
                        obj=self.origin,
                    ) from conflict
                old = conflict.size
                continue
            except WitnessProofRejected as rejected:
                raise divergence(
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

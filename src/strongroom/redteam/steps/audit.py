"""Steps that tamper with the audit log: edit, delete, truncate, fork checkpoints, roll back, stall.

Each snapshots or restores the log around the attack so a run leaves the
target's log as it found it (:func:`snapshot_audit`, :func:`restore_audit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from strongroom.errors import StrongroomError
from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import ask_gate, release_request, send_request, step


@step("snapshot_audit")
def snapshot_audit(ctx: RunContext) -> None:
    """Take a signed checkpoint (kept outside the database) and snapshot the audit tables.

    Live: the checkpoint is signed over the API and only the rows the attack touches are
    kept (the deployment keeps appending; a whole-table restore would drop its entries).
    """
    from strongroom.redteam import tamper

    t = ctx.target
    ctx.vars["trusted_checkpoint"] = t.audit.checkpoint(require_quorum=False)
    if t.kind == "live":
        ctx.vars["audit_rows"] = []
        return
    ctx.vars["audit_snapshot"] = tamper.snapshot(t.store)


@step("edit_audit_entry")
def edit_audit_entry(ctx: RunContext) -> None:
    """A DBA rewrites one past denial into an allow (bytes changed in place)."""
    from strongroom.redteam import tamper

    live = ctx.target.kind == "live"
    idx = tamper.edit_entry(ctx.target.store, ctx.vars.get("audit_rows"), rehash=not live)
    ctx.saw(f"entry #{idx} rewritten from deny to allow" + (" (its leaf hash left)" if live
                                                             else ""))


@step("delete_audit_entry")
def delete_audit_entry(ctx: RunContext) -> None:
    """A DBA deletes one entry from the middle of the log."""
    from strongroom.redteam import tamper

    idx = tamper.delete_entry(ctx.target.store, ctx.vars.get("audit_rows"))
    ctx.saw(f"entry #{idx} deleted")


@step("truncate_audit")
def truncate_audit(ctx: RunContext, keep_fraction: float = 0.5) -> None:
    """A DBA cuts the log's tail and rewinds the head consistently (a rollback)."""
    from strongroom.redteam import tamper

    size = tamper.truncate(ctx.target.store, keep_fraction)
    ctx.saw(f"log truncated to {size} entries with a recomputed head")


@step("fork_checkpoint")
def fork_checkpoint(ctx: RunContext) -> None:
    """A compromised log server shows a witness a second, different tree of the same size."""
    from strongroom.redteam import tamper

    t = ctx.target
    witness = tamper.witness_for(t.audit)
    genuine = t.audit.checkpoint(require_quorum=False)
    status, _, _ = witness.add_checkpoint(tamper.add_checkpoint_body(0, [], genuine))
    ctx.vars["witness"] = witness
    ctx.vars["genuine_checkpoint"] = genuine
    ctx.vars["forked_checkpoint"] = tamper.forked_note(t.audit, genuine)
    ctx.saw(f"witness cosigned the genuine checkpoint (HTTP {status}); fork prepared")
    fork_status, _, body = witness.add_checkpoint(
        tamper.add_checkpoint_body(tamper.size_of(genuine), [], ctx.vars["forked_checkpoint"]))
    ctx.saw(f"forked checkpoint shown to the witness: HTTP {fork_status} {body.strip()}")


@step("audit_checkpoint")
def audit_checkpoint(ctx: RunContext) -> None:
    """An operator runs ``strongroom audit checkpoint``: the log signs one over what it holds."""
    from strongroom.redteam import tamper

    note = ctx.target.audit.checkpoint(require_quorum=False)
    ctx.vars["operator_checkpoint"] = note
    ctx.saw(f"checkpoint signed at size {tamper.size_of(note)}")


def _publisher_rounds(ctx: RunContext, what: str, done: Callable[[Any], bool],
                      rounds: int) -> None:
    """Wait (at most ``rounds`` of the publisher's intervals, 10 s) for ``done(publisher)``.

    The deployment's own checkpoint publisher does the work on its interval; the
    step only waits for it, and records when it did not come (the grader decides).
    """
    t = ctx.target
    limit = min(10.0, rounds * t.checkpoint_interval)
    deadline = time.monotonic() + limit
    pub = t.svc.publisher
    while pub is None or not done(pub):
        if time.monotonic() >= deadline:
            ctx.saw(f"after {limit:g} s the checkpoint publisher had not {what}")
            return
        time.sleep(0.02)
    ctx.saw(f"the checkpoint publisher {what}")


@step("await_checkpoint_publisher")
def await_checkpoint_publisher(ctx: RunContext, rounds: int = 6) -> None:
    """Let the deployment's checkpoint publisher sign what the log holds now (its interval)."""
    size = ctx.target.audit.size()
    _publisher_rounds(ctx, f"signed a checkpoint of size {size}",
                      lambda pub: pub.status().signed_size >= size, rounds)


@step("dba_truncate_tail")
def dba_truncate_tail(ctx: RunContext) -> None:
    """A DBA deletes the entries after the operator's checkpoint and recomputes nodes and head
    with plain SHA-256 (issue 15's attack; the operator's checkpoint still verifies)."""
    from strongroom.redteam import tamper

    t = ctx.target
    keep = tamper.size_of(ctx.vars["operator_checkpoint"])
    size = t.audit.size()
    tamper.truncate_tail(t.store, keep)
    ctx.vars["truncated"] = (keep, size)
    ctx.saw(f"entries {keep}..{size - 1} deleted; nodes and head recomputed with SHA-256")


@step("await_rollback_check")
def await_rollback_check(ctx: RunContext, rounds: int = 6) -> None:
    """Let the deployment's checkpoint publisher run its next rounds over the changed log."""
    _publisher_rounds(ctx, "found the log rolled back",
                      lambda pub: pub.status().rollback is not None, rounds)


@step("hold_write_lock_during_release")
def hold_write_lock_during_release(ctx: RunContext, who: str, hold_factor: float = 4.0) -> None:
    """Another connection holds SQLite's write lock (``BEGIN IMMEDIATE``) for ``hold_factor``
    times the target's bound while ``who`` releases with their Grant; once the holder lets go,
    ``who`` releases again (the service is back)."""
    import sqlite3
    import threading

    from strongroom.redteam.target import LOCK_BOUND_S

    t = ctx.target
    path = t.store.url.split("///", 1)[1]
    hold = hold_factor * LOCK_BOUND_S
    locked, failed = threading.Event(), []

    def holder() -> None:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            try:
                conn.execute("BEGIN IMMEDIATE")
                locked.set()
                time.sleep(hold)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            failed.append(exc)
            locked.set()

    grant = ctx.vars.get(f"grant:{who}")
    request = release_request(ctx, who, grant=grant)  # the client's reads, before the stall
    thread = threading.Thread(target=holder, name=f"lock-holder-{ctx.marker}", daemon=True)
    thread.start()
    if not locked.wait(30) or failed:
        raise StrongroomError(f"could not take the database's write lock: {failed}", obj=path)
    ctx.saw(f"another connection holds the write lock for {hold:g} s")
    start = time.monotonic()
    send_request(ctx, who, request)
    ctx.saw(f"the release under the lock answered after {time.monotonic() - start:.2f} s")
    thread.join(hold + 30)
    ask_gate(ctx, who, grant=grant)


@step("restore_audit")
def restore_audit(ctx: RunContext) -> None:
    """Cleanup: put the audit tables back exactly as snapshotted."""
    from strongroom.redteam import tamper

    rows = ctx.vars.pop("audit_rows", None)
    if rows:
        tamper.restore_entries(ctx.target.store, rows)
        ctx.saw(f"cleanup: {len(rows)} audit entry row(s) put back as they were")
    snap = ctx.vars.pop("audit_snapshot", None)
    if snap is not None:
        tamper.restore(ctx.target.store, snap)

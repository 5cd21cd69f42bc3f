"""Tampering the audit log must be detected and named — one test per attack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from strongroom.audit import AuditLog, open_checkpoint
from strongroom.audit.checkpoint import Checkpoint, sign_checkpoint
from strongroom.crypto.note import (
    SIG_COSIGNATURE_V1,
    Ed25519Signer,
    NoteError,
    generate_key,
    new_signer,
    sign,
)
from strongroom.errors import IntegrityError
from strongroom.store.db import Store

from audit_helpers import ORIGIN, MakeWitness, fill


def sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def body_of(store: Store, idx: int) -> bytes:
    with store.engine.connect() as conn:
        return bytes(conn.execute(text("SELECT body FROM audit_entries WHERE idx = :i"),
                                  {"i": idx}).scalar_one())


@pytest.fixture
def logged(audit_log: AuditLog) -> AuditLog:
    fill(audit_log, 10)
    audit_log.checkpoint()
    fill(audit_log, 3)
    audit_log.verify()
    return audit_log


def test_entry_bytes_edited(logged: AuditLog, store: Store) -> None:
    edited = body_of(store, 4).replace(b'"allow"', b'"deny!"')
    sql(store, "UPDATE audit_entries SET body = :b WHERE idx = 4", b=edited)
    with pytest.raises(IntegrityError, match=r"audit entry 4: entry bytes were edited"):
        logged.verify()


def test_entry_and_leaf_hash_edited(logged: AuditLog, store: Store) -> None:
    import hashlib

    edited = body_of(store, 5).replace(b'"allow"', b'"deny!"')
    sql(store, "UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = 5",
        b=edited, h=hashlib.sha256(b"\x00" + edited).digest())
    with pytest.raises(IntegrityError, match=r"audit entry 4: stored tree node \(level 1, index 2\)"):
        logged.verify()


def test_entry_deleted(logged: AuditLog, store: Store) -> None:
    sql(store, "DELETE FROM audit_entries WHERE idx = 6")
    with pytest.raises(IntegrityError, match="entry 6 is missing"):
        logged.verify()


def test_tail_truncated(logged: AuditLog, store: Store) -> None:
    sql(store, "DELETE FROM audit_entries WHERE idx >= 11")
    with pytest.raises(IntegrityError, match=r"tail was truncated.*entries 11\.\.12"):
        logged.verify()


def test_tail_truncated_with_head(logged: AuditLog, store: Store) -> None:
    """Entries, nodes and head all cut back below a signed checkpoint."""
    logged.checkpoint()  # size 13
    rewind(store, logged, 8, keep_checkpoints=True)
    with pytest.raises(IntegrityError, match=r"checkpoint 10: .* only 8 entries.*truncated"):
        logged.verify()


def test_entries_swapped(logged: AuditLog, store: Store) -> None:
    with store.engine.begin() as conn:
        rows = {int(r[0]): (bytes(r[1]), bytes(r[2])) for r in conn.execute(
            text("SELECT idx, body, leaf_hash FROM audit_entries WHERE idx IN (2, 7)"))}
        for idx, other in ((2, 7), (7, 2)):
            conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = :i"),
                         {"b": rows[other][0], "h": rows[other][1], "i": idx})
    with pytest.raises(IntegrityError, match=r"audit entry 2: .*records index 7: .*swapped"):
        logged.verify()


def rewind(store: Store, log: AuditLog, size: int, keep_checkpoints: bool = False) -> None:
    """What restoring an old backup does: every table back to ``size`` entries."""
    from strongroom.audit.merkle import Frontier

    with store.engine.begin() as conn:
        leaves = [bytes(r[0]) for r in conn.execute(
            text("SELECT leaf_hash FROM audit_entries WHERE idx < :n ORDER BY idx"), {"n": size})]
        f = Frontier()
        for h in leaves:
            f.append(h)
        conn.execute(text("DELETE FROM audit_entries WHERE idx >= :n"), {"n": size})
        for level in range(1, 64):
            conn.execute(text("DELETE FROM audit_nodes WHERE level = :l AND idx >= :n"),
                         {"l": level, "n": size >> level})
        last = conn.execute(text("SELECT max(size) FROM audit_checkpoints WHERE size <= :n"),
                            {"n": size}).scalar()
        if keep_checkpoints:
            conn.execute(text("UPDATE audit_head SET size = :n, root = :r"),
                         {"n": size, "r": f.root()})
        else:
            conn.execute(text("DELETE FROM audit_checkpoints WHERE size > :n"), {"n": size})
            conn.execute(text("UPDATE audit_head SET size = :n, root = :r, checkpoint_size = :c"),
                         {"n": size, "r": f.root(), "c": last or 0})
    log._writer._frontier = None


def test_rolled_back_detected_by_external_checkpoint(logged: AuditLog, store: Store,
                                                     tmp_path: Path) -> None:
    later = logged.checkpoint()  # size 13, also written to the anchor file
    rewind(store, logged, 10)
    (tmp_path / "anchor").unlink()
    logged.verify()  # the database alone is self-consistent again...
    with pytest.raises(IntegrityError, match=r"checkpoint 13: the log was rolled back"):
        logged.verify(trusted=[later])  # ...but not with what was published


def test_rolled_back_detected_by_anchor(logged: AuditLog, store: Store) -> None:
    logged.checkpoint()
    rewind(store, logged, 10)
    with pytest.raises(IntegrityError, match="rolled back"):
        logged.verify()


def test_rolled_back_detected_by_witness(store: Store, signer: Ed25519Signer,
                                         make_witness: MakeWitness) -> None:
    _, client = make_witness("witness.test/w1", [signer.vkey])
    log = AuditLog(store, signer, ORIGIN, witnesses=[client], quorum=1)
    try:
        fill(log, 10)
        log.checkpoint()
        fill(log, 5)
        log.checkpoint()  # the witness has seen size 15
        rewind(store, log, 10)
        log._signing._witness_sizes.clear()  # a restarted server knows nothing
        fill(log, 2)
        with pytest.raises(IntegrityError, match=r"witness.test/w1 has cosigned size 15.*rolled back"):
            log.checkpoint()
    finally:
        log.close()


def test_fork_shown_to_witness(make_witness: MakeWitness, signer: Ed25519Signer) -> None:
    """Two different checkpoints of the same size: the witness refuses the second (409)."""
    witness, client = make_witness("witness.test/w1", [signer.vkey])
    a = sign_checkpoint(Checkpoint(ORIGIN, 5, b"\x01" * 32), signer)
    b = sign_checkpoint(Checkpoint(ORIGIN, 5, b"\x02" * 32), signer)
    assert client.add_checkpoint(0, [], a)
    status, ctype, body = witness.add_checkpoint(f"old 5\n\n{b}".encode())
    assert (status, ctype, body) == (409, "text/x.tlog.size", "5\n")


def test_fork_detected_by_log(tmp_path: Path, signer: Ed25519Signer,
                              make_witness: MakeWitness) -> None:
    """A second database with the same key shows the witness another history."""
    _, client = make_witness("witness.test/w1", [signer.vkey])
    logs = []
    for name in ("a", "b"):
        store = Store.open(f"sqlite:///{tmp_path / name}.db")
        log = AuditLog(store, signer, ORIGIN, witnesses=[client], quorum=1)
        logs.append((store, log))
    try:
        fill(logs[0][1], 4, actor="alice")
        logs[0][1].checkpoint()
        fill(logs[1][1], 4, actor="mallory")
        with pytest.raises(IntegrityError, match=r"holds a different tree head at size 4.*forked"):
            logs[1][1].checkpoint()
        fill(logs[1][1], 2, actor="mallory")
        with pytest.raises(IntegrityError):  # a bigger fork fails the consistency proof (422)
            logs[1][1].checkpoint()
    finally:
        for store, log in logs:
            log.close()
            store.close()


def test_cosignature_from_unknown_witness(store: Store, signer: Ed25519Signer,
                                         make_witness: MakeWitness) -> None:
    _, client = make_witness("witness.test/w1", [signer.vkey])
    log = AuditLog(store, signer, ORIGIN, witnesses=[client], quorum=1)
    try:
        fill(log, 3)
        note = log.checkpoint()
        rogue_skey, rogue_vkey = generate_key("rogue.example/w9", SIG_COSIGNATURE_V1)
        text_part = note.split("\n\n")[0] + "\n"
        rogue_line = sign(text_part, new_signer(rogue_skey)).split("\n\n")[1]
        forged = note + rogue_line
        # Offline: unknown signers are ignored and never count towards the quorum.
        opened = open_checkpoint(forged, log_key=signer.vkey, witness_keys=[client.verifier], quorum=1)
        assert opened.cosigners == ("witness.test/w1",)
        assert any("rogue.example/w9" in line for line in opened.ignored)
        without_real = forged.replace(note.split("\n\n")[1], "— " + ORIGIN + " " + note.split(
            "— " + ORIGIN + " ")[1].split("\n")[0] + "\n")
        with pytest.raises(NoteError, match=r"0 trusted witness.*rogue.example/w9"):
            open_checkpoint(without_real, log_key=signer.vkey,
                            witness_keys=[client.verifier], quorum=1)
        # In the database: the stored checkpoint now carries a signer nobody configured.
        sql(store, "UPDATE audit_checkpoints SET note = :n WHERE size = 3", n=forged)
        with pytest.raises(IntegrityError, match=r"checkpoint 3: .*unknown witness rogue.example/w9"):
            log.verify()
        assert rogue_vkey
    finally:
        log.close()


def test_checkpoint_refuses_to_sign_a_rewritten_tree(logged: AuditLog, store: Store) -> None:
    """The log never signs a checkpoint inconsistent with the last one it signed."""
    from strongroom.audit.merkle import Frontier, leaf_hash

    # Rewrite entries 0..12 consistently (leaves, nodes, head): only the signature history knows.
    with store.engine.begin() as conn:
        rows = [(int(r[0]), bytes(r[1])) for r in conn.execute(
            text("SELECT idx, body FROM audit_entries ORDER BY idx"))]
        f = Frontier()
        conn.execute(text("DELETE FROM audit_nodes"))
        for idx, body in rows:
            body = body.replace(b"alice", b"malry")
            h = leaf_hash(body)
            conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = :i"),
                         {"b": body, "h": h, "i": idx})
            for level, i, nh in f.append(h):
                conn.execute(text("INSERT INTO audit_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                             {"l": level, "i": i, "h": nh})
        conn.execute(text("UPDATE audit_head SET root = :r"), {"r": f.root()})
    logged._writer._frontier = None
    with pytest.raises(IntegrityError, match="refusing to sign"):
        logged.checkpoint()
    with pytest.raises(IntegrityError, match=r"checkpoint 10: .*rewritten"):
        logged.verify()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from strongroom.audit import AuditLog
    from strongroom.crypto.note import Ed25519Signer
    from strongroom.store.db import Store
    import threading
    store = Store.open(sys.argv[1])
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
    log = AuditLog(store, Ed25519Signer("strongroom.test/log", key))
    lock = threading.Lock()
    def worker(n):
        while True:
            idx = log.append(actor=f"w{n}", action="loop", obj="o", decision="allow")
            with lock:
                print(idx, flush=True)
    for n in range(8):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    threading.Event().wait()
""")


def test_kill_9_during_batches(db_url: str, signer: Ed25519Signer) -> None:
    """SIGKILL mid-stream: every acknowledged index survives and no batch is torn."""
    seed = signer.private.private_bytes_raw().hex()
    Store.open(db_url).close()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, db_url, seed],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked: list[int] = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 1500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked += [int(line) for line in proc.stdout.read().split()]
    store = Store.open(db_url)
    log = AuditLog(store, signer)
    try:
        size = log.size()
        assert max(acked) < size
        report = log.verify()  # no gap, no torn batch: nodes and head match the entries
        assert report.size == size
        assert {e.index for e in log.events(0, size)} >= set(acked)
        assert log.append(actor="after", action="x", obj="o", decision="allow") == size
    finally:
        log.close()
        store.close()

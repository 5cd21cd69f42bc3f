"""The audit log: appends, proofs, checkpoints, redaction, fail-closed behaviour."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from strongroom.audit import AuditLog, InclusionProof, Secret, open_checkpoint
from strongroom.audit.log import AuditEvent
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import AuditUnavailable, ConfigError, IntegrityError, InvalidInput, NotFound
from strongroom.store.db import Store

from audit_helpers import ORIGIN, fill


def test_append_prove_verify(audit_log: AuditLog, signer: Ed25519Signer) -> None:
    idx = audit_log.append(actor="alice", action="weights.import", obj="minilm@1",
                           decision="allow", reason="approved", request_id="r-1",
                           details={"files": 2}, shard="model-00001", nbytes=123)
    assert idx == 0
    assert fill(audit_log, 9) == list(range(1, 10))
    assert audit_log.submit(actor="bob", action="x", obj="o", decision="deny").result() == 10
    assert audit_log.size() == 11
    ev = audit_log.event(0)
    assert (ev.actor, ev.action, ev.object, ev.decision, ev.reason) == (
        "alice", "weights.import", "minilm@1", "allow", "approved")
    assert (ev.request_id, ev.details, ev.shard, ev.nbytes) == ("r-1", {"files": 2}, "model-00001", 123)
    assert ev.body.startswith(b'{"action":"weights.import"')  # canonical: sorted, compact
    proof = audit_log.prove(0)
    # An outsider needs only the proof text and the log's verifier key.
    again = InclusionProof.parse(proof.to_text())
    assert again.verify(signer.vkey).actor == "alice"
    forged = InclusionProof(0, ev.body.replace(b"alice", b"mallo"), again.hashes, again.checkpoint)
    with pytest.raises(IntegrityError):
        forged.verify(signer.vkey)
    report = audit_log.verify()
    assert report.size == 11 and report.checkpoints == 1
    assert [e.index for e in audit_log.tail(3)] == [8, 9, 10]
    with pytest.raises(NotFound):
        audit_log.event(99)


def test_many_threads_one_tree(audit_log: AuditLog) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            i = audit_log.append(actor="t", action="a", obj="o", decision="allow")
            with lock:
                got.append(i)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(200))
    audit_log.checkpoint()
    assert audit_log.verify().size == 200


def test_checkpoint_grows_consistently(audit_log: AuditLog, signer: Ed25519Signer) -> None:
    fill(audit_log, 3)
    first = audit_log.checkpoint()
    assert audit_log.checkpoint() == first  # same size: the same signed checkpoint
    fill(audit_log, 4)
    second = audit_log.checkpoint()
    a = open_checkpoint(first, log_key=signer.vkey).checkpoint
    b = open_checkpoint(second, log_key=signer.vkey).checkpoint
    assert (a.size, b.size) == (3, 7) and a.origin == ORIGIN
    from strongroom.audit.merkle import verify_consistency
    verify_consistency(3, 7, audit_log.consistency(3, 7), a.root, b.root)
    assert len(audit_log.checkpoints()) == 2


def test_redaction(audit_log: AuditLog) -> None:
    idx = audit_log.append(actor="svc", action="token.use", obj="api", decision="allow",
                           details={"token": "s3cr3t", "note": Secret("hunter2"), "n": 1})
    stored = audit_log.event(idx)
    assert b"s3cr3t" not in stored.body and b"hunter2" not in stored.body
    assert stored.details["token"].startswith("hmac-sha256:")
    assert audit_log.check_value(idx, "token", "s3cr3t")
    assert not audit_log.check_value(idx, "token", "guess")
    assert audit_log.check_value(idx, "note", "hunter2")


def test_bad_input_is_refused(audit_log: AuditLog) -> None:
    with pytest.raises(InvalidInput):
        audit_log.append(actor="", action="a", obj="o", decision="allow")
    with pytest.raises(InvalidInput):
        audit_log.append(actor="a", action="a", obj="o", decision="allow", details={"x": 1.5})
    assert audit_log.size() == 0


def test_origin_is_fixed(store: Store, signer: Ed25519Signer, audit_log: AuditLog) -> None:
    other = Ed25519Signer("other.example/log", signer.private)
    with pytest.raises(ConfigError):
        AuditLog(store, other)


def test_fail_closed_when_commit_fails(audit_log: AuditLog, store: Store) -> None:
    """The store fails under a running operation: the operation is refused."""
    fill(audit_log, 5)
    performed: list[str] = []

    def release_weights() -> None:  # an operation that must be audited first
        audit_log.append(actor="alice", action="weights.release", obj="m@1", decision="allow")
        performed.append("released")

    def fail(*_: object) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    writer = audit_log._writer
    if writer._begin_raw:
        # SQLite (file): the writer commits on the driver's connection itself, so the
        # driver's COMMIT is what fails (the authorizer refuses to prepare it).
        raw = writer._connection().connection.dbapi_connection
        assert raw is not None
        raw.set_authorizer(lambda action, arg, *_: sqlite3.SQLITE_DENY
                           if action == sqlite3.SQLITE_TRANSACTION and arg == "COMMIT"
                           else sqlite3.SQLITE_OK)
        with pytest.raises(AuditUnavailable, match=r"audit store failed .* DatabaseError"):
            release_weights()
    else:
        engine = writer._engine
        event.listen(engine, "commit", fail)
        try:
            with pytest.raises(AuditUnavailable):
                release_weights()
        finally:
            event.remove(engine, "commit", fail)
    assert performed == []
    release_weights()
    assert performed == ["released"]
    assert audit_log.size() == 6
    audit_log.verify()


def test_fail_closed_when_table_disappears(audit_log: AuditLog, store: Store) -> None:
    """Another session breaks the store while appends are in flight."""
    fill(audit_log, 3)
    errors: list[Exception] = []
    ok: list[int] = []
    stop = threading.Event()

    def appender() -> None:
        while not stop.is_set():
            try:
                ok.append(audit_log.append(actor="a", action="x", obj="o", decision="allow"))
            except AuditUnavailable as exc:
                errors.append(exc)

    t = threading.Thread(target=appender)
    t.start()
    while len(ok) < 5:
        pass
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_nodes RENAME TO audit_nodes_gone"))
    while not errors:
        pass
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_nodes_gone RENAME TO audit_nodes"))
    n = len(errors)
    while len(ok) < 10 + n:
        pass
    stop.set()
    t.join()
    assert "audit store failed" in str(errors[0])
    assert sorted(ok) == list(range(3, 3 + len(ok)))  # refused appends left no gap
    audit_log.verify()


def test_closed_log_refuses(audit_log: AuditLog) -> None:
    audit_log.close()
    with pytest.raises(AuditUnavailable):
        audit_log.append(actor="a", action="x", obj="o", decision="allow")


def test_event_round_trip() -> None:
    body = b'{"action":"a","actor":"b","decision":"allow","details":{"index":0},"index":7,' \
           b'"object":"o","reason":"","request_id":null,"time":"t"}'
    ev = AuditEvent.from_body(body)
    assert ev.index == 7 and ev.details == {"index": 0}
    from strongroom.audit.entry import entry_index
    assert entry_index(body) == 7


def test_anchor_written(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 2)
    note = audit_log.checkpoint()
    assert (tmp_path / "anchor").read_text() == note
    assert audit_log.verify().trusted == 1


class _Guard:
    """A test AppendGuard: claims "ok…" are admitted (and recorded in monitor_cursors inside the
    batch's transaction), "no…" refused, "boom" fails the batch; "hold" waits for ``go``."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.go = threading.Event()
        self.settled: list[tuple[list[str], bool]] = []

    def admit(self, conn: object, claims: list[str]) -> list[bool]:
        if "hold" in claims:
            self.held.set()
            assert self.go.wait(10)
        if "boom" in claims:
            raise RuntimeError("guard failed")
        for c in claims:
            if c.startswith("ok"):
                conn.exec_driver_sql(  # type: ignore[attr-defined]
                    "INSERT INTO monitor_cursors (name, position) VALUES ('" + c + "', 1)")
        return [not c.startswith("no") for c in claims]

    def settle(self, claims: list[str], committed: bool) -> None:
        self.settled.append((list(claims), committed))


def _cursors(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(text("SELECT name FROM monitor_cursors"))}


def test_conditional_appends_commit_with_their_guard_rows(audit_log: AuditLog, store: Store
                                                          ) -> None:
    guard = _Guard()
    results: dict[str, int | None] = {}

    def call(claim: str) -> None:
        results[claim] = audit_log.append_if(guard, claim, actor="t", action="cond", obj=claim,
                                             decision="allow")

    first = threading.Thread(target=call, args=("hold",))
    first.start()
    assert guard.held.wait(10)  # the writer is deciding the batch holding "hold"
    # These queue behind the held batch, so they commit together in the next one.
    claims = ["ok-1", "no-1", "ok-2", "no-2", "ok-3"]
    threads = [threading.Thread(target=call, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    plain: list[int] = []
    while len(audit_log._writer._batch.items) < len(claims):
        time.sleep(0.001)
    guard.go.set()
    for t in [first, *threads]:
        t.join()
    plain.append(audit_log.append(actor="t", action="plain", obj="o", decision="allow"))
    assert results["hold"] == 0
    assert results["no-1"] is None and results["no-2"] is None
    admitted = sorted(i for c, i in results.items() if c.startswith("ok") and i is not None)
    assert admitted == [1, 2, 3] and plain == [4]  # no gap where the refused ones were
    assert {audit_log.event(results[c]).object for c in ("ok-1", "ok-2", "ok-3")  # type: ignore[arg-type]
            } == {"ok-1", "ok-2", "ok-3"}
    assert _cursors(store) == {"ok-1", "ok-2", "ok-3"}
    assert audit_log.verify().size == 5
    assert all(committed for _, committed in guard.settled)


def test_a_failing_guard_fails_its_batch_and_writes_nothing(audit_log: AuditLog,
                                                            store: Store) -> None:
    guard = _Guard()
    with pytest.raises(AuditUnavailable, match="guard failed"):
        audit_log.append_if(guard, "boom", actor="t", action="cond", obj="o", decision="allow")
    assert guard.settled == [(["boom"], False)]
    assert audit_log.size() == 0

    # A batch that fails after the guard wrote its rows rolls those rows back too.
    real = audit_log._writer._insert_entry
    audit_log._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
    try:
        with pytest.raises(AuditUnavailable):
            audit_log.append_if(guard, "ok-lost", actor="t", action="cond", obj="o",
                                decision="allow")
    finally:
        audit_log._writer._insert_entry = real
    assert guard.settled[-1] == (["ok-lost"], False)
    assert _cursors(store) == set() and audit_log.size() == 0
    assert audit_log.append_if(guard, "ok-kept", actor="t", action="cond", obj="o",
                               decision="allow") == 0
    assert _cursors(store) == {"ok-kept"}


def test_writer_reconnects_after_its_server_connection_dies(audit_log: AuditLog, store: Store,
                                                            db_url: str) -> None:
    """The writer keeps one connection; a server that dropped it while idle costs no append."""
    if not db_url.startswith("postgresql"):
        pytest.skip("needs a database server that can end the writer's session")
    fill(audit_log, 2)
    conn = audit_log._writer._conn
    assert conn is not None
    pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    with store.engine.begin() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    time.sleep(1.2)  # idle past the ping interval
    assert audit_log.append(actor="a", action="x", obj="o", decision="allow") == 2
    audit_log.verify()

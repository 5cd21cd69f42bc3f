"""The SIEM export reads every entry once, in order, and refuses gaps and rewrites.

Runs on SQLite and PostgreSQL. Every OCSF event is validated against OCSF's
own schema (version pinned in strongroom.audit.ocsf) by ``ocsf_validation``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from ocsf_validation import validate_ocsf
from strongroom.audit import AuditLog
from strongroom.audit.entry import canonical_json
from strongroom.audit.export import AuditExporter, ExportCursor, export_line, run_export
from strongroom.audit.merkle import leaf_hash, verify_inclusion
from strongroom.audit.ocsf import ExportedEntry, ocsf_class
from strongroom.audit.tree import StoredTree
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.store.db import Store

from audit_helpers import ORIGIN, fill


def sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


@pytest.fixture
def tree(store: Store) -> StoredTree:
    t = StoredTree(store)
    yield t
    t.close()


def mixed_log(log: AuditLog, store: Store) -> None:
    """Entries of every OCSF class the mapping uses, a checkpoint in the middle."""
    fill(log, 3)
    log.append(actor="alice", action="key.release", obj="atlas@1", decision="allow",
               shard="s0", nbytes=4096, details={"host": "10.0.0.7", "server": "vault-a"})
    log.append(actor="mallory", action="key.release", obj="atlas@1", decision="deny",
               reason="no grant", details={"host": "laptop-3"})
    log.append(actor="anonymous", action="api.request", obj="POST /v1/access/requests",
               decision="deny", reason="bad signature", details={"host": "192.0.2.1"})
    log.append(actor="bob", action="console.sign-in", obj="console", decision="allow")
    log.append(actor="officer", action="people.enroll", obj="carol", decision="allow")
    log.append(actor="officer", action="people.revoke", obj="carol", decision="allow")
    log.append(actor="approver1", action="access.approve", obj="req-7", decision="allow")
    log.append(actor="custodian", action="keys.unseal", obj="vault", decision="allow")
    log.append(actor="x", action="something.new", obj="y", decision="noted")
    log.checkpoint(require_quorum=False)
    alerts = AlertManager(store, audit=log)
    stored = alerts.raise_alert(Alert(rule="SR-CANARY", severity="critical", subject="mallory",
                                      obj="atlas@1", message="canary shard touched",
                                      dedup_key="canary:atlas@1:mallory",
                                      techniques=("T1213", "AML.T0007")))
    alerts.ack(stored.id, by="sec-oncall", note="red-team exercise")


def export_all(exporter: AuditExporter, start: ExportCursor | None = None,
               **kw: object) -> tuple[list[ExportedEntry], ExportCursor]:
    got: list[ExportedEntry] = []
    cursor = run_export(exporter, start or exporter.cursor_at(0), got.extend, **kw)  # type: ignore[arg-type]
    return got, cursor


def test_export_matches_the_log_entry_for_entry(audit_log: AuditLog, store: Store,
                                                 tree: StoredTree) -> None:
    mixed_log(audit_log, store)
    exporter = AuditExporter(tree, batch=4)
    got, cursor = export_all(exporter)
    events = audit_log.events()
    assert [e.index for e in got] == list(range(len(events))) == [e.index for e in events]
    assert [e.event.body for e in got] == [e.body for e in events]
    assert cursor == ExportCursor(ORIGIN, len(events), leaf_hash(events[-1].body))
    # The covering checkpoint is the latest signed one, and only for the entries below it.
    cp_size = audit_log.head()[2]
    assert 0 < cp_size < len(events)
    for e in got:
        assert e.leaf_hash == leaf_hash(e.event.body)
        if e.index < cp_size:
            assert e.checkpoint is not None and e.checkpoint[0] == cp_size
            proof = audit_log.prove(e.index)
            verify_inclusion(e.index, cp_size, e.leaf_hash, list(proof.hashes), e.checkpoint[1])
        else:
            assert e.checkpoint is None


def test_every_ocsf_event_validates_and_carries_the_entry(audit_log: AuditLog, store: Store,
                                                          tree: StoredTree) -> None:
    mixed_log(audit_log, store)
    got, _ = export_all(AuditExporter(tree))
    classes = set()
    for e in got:
        line = export_line(e, "ocsf", origin=ORIGIN, product_version="0.1.0")
        event = json.loads(line)
        validate_ocsf(event)
        classes.add(event["class_uid"])
        assert event["metadata"]["sequence"] == e.index
        assert event["metadata"]["version"] == "1.5.0"
        # The SIEM recomputes the leaf hash from raw_data alone.
        assert leaf_hash(event["raw_data"].encode()).hex() == \
            event["unmapped"]["strongroom"]["leaf_hash"]
        plain = json.loads(export_line(e, "jsonl", origin=ORIGIN, product_version="0.1.0"))
        assert plain["index"] == e.index and plain["entry"] == e.event.to_dict()
        # ... and from a jsonl line by re-encoding the entry as canonical JSON.
        assert leaf_hash(canonical_json(plain["entry"])).hex() == plain["leaf_hash"]
    assert classes == {2004, 3001, 3002, 3004, 6003}
    by_action = {e.event.action: json.loads(export_line(e, "ocsf", origin=ORIGIN,
                                                        product_version="0"))
                 for e in got}
    raised, acked = by_action["alert.raise"], by_action["alert.ack"]
    assert raised["severity_id"] == 5 and raised["finding_info"]["uid"] == "canary:atlas@1:mallory"
    assert acked["finding_info"]["uid"] == raised["finding_info"]["uid"]
    assert raised["finding_info"]["attacks"] == [{"technique": {"uid": "T1213"}}]
    release = by_action["key.release"]  # the last one: the denial
    assert release["class_uid"] == 6003 and release["action_id"] == 2
    assert ocsf_class("weights.import")[:2] == (3004, 1)


def test_the_validator_rejects_a_bad_event(audit_log: AuditLog, tree: StoredTree) -> None:
    """The check can fail: an unknown attribute and a missing required one are refused."""
    fill(audit_log, 1)
    got, _ = export_all(AuditExporter(tree))
    event = json.loads(export_line(got[0], "ocsf", origin=ORIGIN, product_version="0"))
    with pytest.raises(AssertionError):
        validate_ocsf({**event, "strongroom_index": 0})
    del event["entity"]
    with pytest.raises(AssertionError):
        validate_ocsf(event)


def test_resume_gives_no_gap_and_no_duplicate(audit_log: AuditLog, tree: StoredTree,
                                              tmp_path: Path) -> None:
    fill(audit_log, 7)
    exporter = AuditExporter(tree, batch=3)
    path = tmp_path / "cursor.json"
    first, cursor = export_all(exporter, on_batch=lambda c: c.save(path))
    assert ExportCursor.load(path) == cursor
    fill(audit_log, 5)
    saved = ExportCursor.load(path)
    assert saved is not None
    exporter.check_resume(saved)
    second, _ = export_all(exporter, saved)
    assert [e.index for e in first + second] == list(range(12))


def test_a_deleted_row_stops_the_export_naming_it(audit_log: AuditLog, store: Store,
                                                  tree: StoredTree) -> None:
    fill(audit_log, 10)
    sql(store, "DELETE FROM audit_entries WHERE idx = 6")
    got: list[ExportedEntry] = []
    with pytest.raises(IntegrityError, match=r"audit entry 6 is missing"):
        run_export(AuditExporter(tree, batch=4), ExportCursor(ORIGIN, 0, None), got.extend)
    assert [e.index for e in got] == [0, 1, 2, 3]  # the batch before the gap, nothing after it


def test_a_deleted_last_row_is_named_too(audit_log: AuditLog, store: Store,
                                         tree: StoredTree) -> None:
    fill(audit_log, 5)
    sql(store, "DELETE FROM audit_entries WHERE idx = 4")
    with pytest.raises(IntegrityError, match=r"audit entry 4 is missing"):
        export_all(AuditExporter(tree))


def test_an_edited_row_is_refused(audit_log: AuditLog, store: Store, tree: StoredTree) -> None:
    fill(audit_log, 5)
    with store.engine.connect() as conn:
        body = bytes(conn.execute(text("SELECT body FROM audit_entries WHERE idx = 2")).scalar_one())
    sql(store, "UPDATE audit_entries SET body = :b WHERE idx = 2",
        b=body.replace(b'"allow"', b'"deny!"'))
    with pytest.raises(IntegrityError, match=r"audit entry 2 no longer matches"):
        export_all(AuditExporter(tree))


def test_a_rewritten_entry_is_detected_on_resume(audit_log: AuditLog, store: Store,
                                                 tree: StoredTree) -> None:
    """Body and leaf hash rewritten together pass the row check; the cursor still catches it."""
    fill(audit_log, 6)
    exporter = AuditExporter(tree)
    _, cursor = export_all(exporter)
    with store.engine.connect() as conn:
        body = bytes(conn.execute(text("SELECT body FROM audit_entries WHERE idx = 5")).scalar_one())
    forged = body.replace(b'"allow"', b'"deny!"')
    sql(store, "UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = 5",
        b=forged, h=leaf_hash(forged))
    with pytest.raises(IntegrityError, match=r"audit entry 5 was rewritten after it was exported"):
        exporter.check_resume(cursor)


def test_a_shortened_log_is_detected_on_resume(audit_log: AuditLog, store: Store,
                                               tree: StoredTree) -> None:
    fill(audit_log, 6)
    exporter = AuditExporter(tree)
    _, cursor = export_all(exporter)
    sql(store, "DELETE FROM audit_entries WHERE idx >= 4")
    sql(store, "UPDATE audit_head SET size = 4 WHERE id = 1")
    with pytest.raises(IntegrityError, match=r"entries 4\.\.5 are gone"):
        exporter.check_resume(cursor)


def test_bad_cursors_are_refused(audit_log: AuditLog, tree: StoredTree, tmp_path: Path) -> None:
    fill(audit_log, 2)
    exporter = AuditExporter(tree)
    with pytest.raises(InvalidInput, match="belongs to the log 'other/log'"):
        exporter.check_resume(ExportCursor("other/log", 0, None))
    path = tmp_path / "cursor.json"
    path.write_text('{"format": "strongroom-audit-export-cursor/v1", "origin": "o", '
                    '"next_index": 3, "last_leaf_hash": null}')
    with pytest.raises(InvalidInput, match="not a strongroom export cursor"):
        ExportCursor.load(path)
    with pytest.raises(InvalidInput, match="past its end"):
        exporter.cursor_at(3)
    assert exporter.cursor_at(2).last_leaf_hash == leaf_hash(audit_log.event(1).body)

"""``strongroom audit export`` / ``alerts export`` as a SIEM forwarder runs them: the real CLI.

The log is written in this process (another process than the exporter); the
exporter is the installed ``strongroom`` script reading the same database
(SQLite file or PostgreSQL schema). Every OCSF line is validated against
OCSF's published schema. Matching and --follow run on both databases; the
refusals, covered on both by tests/audit/test_export.py, run on SQLite here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from ocsf_validation import validate_ocsf
from strongroom.audit import AuditLog
from strongroom.audit.merkle import leaf_hash
from strongroom.crypto.note import Ed25519Signer
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.store.db import Store

from cli_fixtures import json_line_reader, make_runner, strongroom_exe

ORIGIN = "strongroom.test/export"


@pytest.fixture
def log(db_url: str) -> Iterator[AuditLog]:
    store = Store.open(db_url)
    audit = AuditLog(store, Ed25519Signer(ORIGIN, Ed25519PrivateKey.generate()), ORIGIN)
    try:
        yield audit
    finally:
        audit.close()
        store.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ, STRONGROOM_HOME=str(tmp_path / "home"), STRONGROOM_DATABASE_URL=db_url)
    out.pop("STRONGROOM_URL", None)
    return out


def append(log: AuditLog, n: int, start: int = 0) -> None:
    log.append_many([dict(actor="alice", action="weights.read", obj=f"m@{start + i}",
                          decision="allow") for i in range(n)])


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_matches_the_log_entry_for_entry(log: AuditLog, env: dict[str, str],
                                                 tmp_path: Path) -> None:
    append(log, 5)
    log.checkpoint(require_quorum=False)
    alerts = AlertManager(log.store, audit=log)
    alerts.raise_alert(Alert(rule="SR-BREAK-GLASS", severity="critical", subject="bob",
                             obj="atlas@1", message="break-glass used", dedup_key="bg:1"))
    run = make_runner(env)
    ocsf = [json.loads(line) for line in run("audit", "export").stdout.splitlines()]
    events = log.events()
    assert [e["metadata"]["sequence"] for e in ocsf] == [e.index for e in events]
    for got, entry in zip(ocsf, events, strict=True):
        validate_ocsf(got)
        assert got["raw_data"].encode() == entry.body
        mark = got["unmapped"]["strongroom"]
        assert mark["leaf_hash"] == leaf_hash(entry.body).hex()
        assert (mark["checkpoint"] or {}).get("size") == (5 if entry.index < 5 else None)
    plain = [json.loads(line) for line in run("audit", "export", "--format", "jsonl").stdout
             .splitlines()]
    assert [p["entry"] for p in plain] == [e.to_dict() for e in events]
    only = [json.loads(line) for line in run("alerts", "export").stdout.splitlines()]
    assert [(e["class_uid"], e["finding_info"]["uid"], e["severity"]) for e in only] == \
        [(2004, "bg:1", "Critical")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_resume_from_a_cursor_has_no_gap_and_no_duplicate(log: AuditLog, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    run = make_runner(env)
    out, cursor = tmp_path / "siem.jsonl", tmp_path / "cursor.json"
    append(log, 3)
    run("audit", "export", "--format", "jsonl", "--cursor", cursor, "-o", out)
    append(log, 4, start=3)
    run("audit", "export", "--format", "jsonl", "--cursor", cursor, "-o", out)
    run("audit", "export", "--format", "jsonl", "--cursor", cursor, "-o", out)  # nothing new
    assert [line["index"] for line in lines(out)] == list(range(7))
    saved = json.loads(cursor.read_text())
    assert saved["next_index"] == 7
    assert saved["last_leaf_hash"] == leaf_hash(log.event(6).body).hex()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    refused = run("audit", "export", "--cursor", cursor, "--from", "2", ok=False)
    assert refused.returncode != 0 and "not both" in refused.stderr


def test_follow_picks_up_entries_another_process_appends(log: AuditLog, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """The one test of --follow: a running exporter, entries appended, lines read, SIGTERM."""
    append(log, 2)
    cursor = tmp_path / "cursor.json"
    proc = subprocess.Popen([strongroom_exe(), "audit", "export", "--follow", "--interval", "0.1",
                             "--cursor", str(cursor)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read = json_line_reader(proc)

    try:
        first = read(2)
        append(log, 3, start=2)
        started = time.monotonic()
        later = read(3)
        picked_up = time.monotonic() - started
        log.append(actor="alice", action="key.release", obj="m@1", decision="deny")
        last = read(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, proc.stderr.read()  # type: ignore[union-attr]
    for event in first + later + last:
        validate_ocsf(event)
    assert [e["metadata"]["sequence"] for e in first + later + last] == list(range(6))  # type: ignore[index]
    assert picked_up < 5
    assert json.loads(cursor.read_text())["next_index"] == 6


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_deleted_row_stops_the_export_naming_it(log: AuditLog, env: dict[str, str]) -> None:
    append(log, 6)
    with log.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE idx = 3"))
    result = make_runner(env)("audit", "export", "--format", "jsonl", ok=False)
    assert result.returncode == 4, result.stderr
    assert "audit entry 3 is missing" in result.stderr
    assert result.stdout == ""  # the batch holding the gap is not written at all


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rewritten_entry_is_refused_on_resume(log: AuditLog, env: dict[str, str],
                                                tmp_path: Path) -> None:
    run = make_runner(env)
    cursor = tmp_path / "cursor.json"
    append(log, 4)
    run("audit", "export", "--cursor", cursor, "-o", tmp_path / "out.ocsf")
    body = log.event(3).body.replace(b'"allow"', b'"deny!"')
    with log.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = 3"),
                     {"b": body, "h": leaf_hash(body)})
    result = run("audit", "export", "--cursor", cursor, "-o", tmp_path / "out.ocsf", ok=False)
    assert result.returncode == 4
    assert "audit entry 3 was rewritten after it was exported" in result.stderr


def test_remote_export_touches_nothing_local(tmp_path: Path) -> None:
    """With STRONGROOM_URL set the export goes to that server (tests/cli/
    test_audit_export_remote_cli.py), never to a local directory instead."""
    env = dict(os.environ, STRONGROOM_URL="http://127.0.0.1:9", STRONGROOM_HOME=str(tmp_path))
    env.pop("STRONGROOM_IDENTITY", None)
    for group in ("audit", "alerts"):
        result = make_runner(env)(group, "export", ok=False)
        assert result.returncode != 0
        assert "STRONGROOM_IDENTITY" in result.stderr
    assert not any(tmp_path.iterdir())

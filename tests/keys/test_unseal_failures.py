"""Unseal attempts that fail while sealed are audited by the next unseal; several raise an alert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.errors import StrongroomError
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.monitor.alerts import AlertManager
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store

from keyring_fixtures import audit_factory, claimed_sizes, init_shamir, officer_evidence, submit


def _service(store: Store, home: Path) -> LocalKeyService:
    return LocalKeyService(store, KeysSettings(key_backend="shamir"), audit_factory=audit_factory,
                           evidence_factory=officer_evidence, sizes_factory=claimed_sizes,
                           alerts_file=home / "alerts.jsonl")


def _bad_share(svc: LocalKeyService, result: object, cust: object) -> None:
    content = ceremony.read_share_file(result.share_files[0],  # type: ignore[attr-defined]
                                       [cust.identities[0]])  # type: ignore[attr-defined]
    stale = ceremony.build_submission(svc.status(), content)
    svc.reset()  # a new ceremony nonce: the submission above is now a replay
    with pytest.raises(StrongroomError):
        svc.submit_share(stale)


def test_failures_while_sealed_reach_the_log_and_alert(store: Store, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result, cust = init_shamir(store, tmp_path)
    first = _service(store, home)
    for _ in range(3):
        _bad_share(first, result, cust)
    record = home / "unseal-failures.jsonl"
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    assert len(lines) == 3 and {x["kind"] for x in lines} == {"share"}
    assert record.stat().st_mode & 0o777 == 0o600
    assert "submission" not in record.read_text()  # what failed, never the share itself
    # the process restarts (the memory is gone; the file is not), and is unsealed properly
    svc = _service(store, home)
    for i in (1, 2):
        submit(svc, result, cust, i)
    assert svc.audit is not None
    entries = [e for e in svc.audit.tail(20) if e.action == "keys.unseal-failed"]
    assert len(entries) == 3 and all(e.decision == "deny" for e in entries)
    assert entries[0].details["kind"] == "share" and entries[0].details["attempted_at"] > 0
    assert not record.exists()
    alerts = AlertManager(store).recent()
    assert [a.rule for a in alerts] == ["SR-UNSEAL-FAILURES"]
    assert "3 failed unseal attempts" in alerts[0].message
    size = svc.audit.size()
    svc.seal()
    again = _service(store, home)
    for i in (1, 2):
        submit(again, result, cust, i)
    assert again.audit is not None
    later = list(again.audit.events(size, again.audit.size()))
    assert [e.action for e in later] == ["keys.seal", "keys.unseal"]  # reported once only
    again.seal()


def test_one_failure_is_audited_without_an_alert(store: Store, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result, cust = init_shamir(store, tmp_path)
    svc = _service(store, home)
    _bad_share(svc, result, cust)
    for i in (1, 2):
        submit(svc, result, cust, i)
    assert svc.audit is not None
    assert len([e for e in svc.audit.tail(20) if e.action == "keys.unseal-failed"]) == 1
    assert AlertManager(store).recent() == []
    svc.seal()

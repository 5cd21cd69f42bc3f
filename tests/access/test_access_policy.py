"""Policy statements, action mapping, rules and the directory reader's trust decisions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from access_kit import access_world

from strongroom.access import statements
from strongroom.access.approvals import satisfy
from strongroom.access.directory import (
    DirectoryReader,
    Enrollment,
    Rule,
    Vetting,
    publish,
)
from strongroom.access.policy import (
    PolicyEngine,
    action_for_purpose,
    current_policy,
    shipped_policy,
    sign_policy,
    validate_policy,
)
from strongroom.errors import InvalidInput
from strongroom.keys.identity import Identity
from strongroom.store.db import Store
from strongroom.vault.documents import CLASSIFICATION_KEY, CLASSIFICATIONS
from strongroom.vault.vault import Vault

from vault_fixtures import make_model

OFFICERS = [Identity.generate(f"o{i}") for i in range(3)]
KEYS = {o.public.key_id: o.public.public_key for o in OFFICERS}


def _reader(store: Store, threshold: int = 2) -> DirectoryReader:
    return DirectoryReader(store, lambda: KEYS, threshold)


def test_purposes_map_to_actions() -> None:
    assert action_for_purpose("load") == action_for_purpose("load (lazy)") == "load"
    assert action_for_purpose("verify") == "load"
    assert action_for_purpose("export: eval handover") == "export"
    assert action_for_purpose("read") == "read"
    assert action_for_purpose("transfer: enclave-b") == "export"  # a copy leaves
    assert action_for_purpose("load: exfiltration drill") == "load"
    for bad in ("infer", "demo: loop", "loader", ""):
        with pytest.raises(InvalidInput, match="gateway"):
            action_for_purpose(bad)


def test_constants_shared_with_the_vault_agree() -> None:
    from strongroom.access.directory import LEVELS
    from strongroom.access.evidence import DOCUMENT_CLASSIFICATION_KEY

    assert DOCUMENT_CLASSIFICATION_KEY == CLASSIFICATION_KEY
    assert tuple(LEVELS) == CLASSIFICATIONS


def test_policy_change_needs_quorum_and_must_validate(store: Store) -> None:
    reader = _reader(store)
    assert current_policy(reader) == (shipped_policy(), 0)
    stricter = shipped_policy().replace('"infer", Strongroom::Action::"load",',
                                        '"infer",')
    issued = int(time.time())  # both officers sign the very same statement
    one = sign_policy(stricter, 1, issued, OFFICERS[0].private_key)
    statements.put(store, "policy", one, subject="policy")
    assert current_policy(reader)[1] == 0  # one officer is not the quorum
    two = sign_policy(stricter, 1, issued, OFFICERS[1].private_key)
    statements.put(store, "policy", two, subject="policy")  # cosignature merges
    assert current_policy(reader) == (stricter, 1)
    with pytest.raises(InvalidInput, match="does not"):
        sign_policy("permit (principal, action, resource) when { 1 };", 2, 0,
                    OFFICERS[0].private_key)
    # a broken policy smuggled in with valid signatures is ignored: the old one stays
    bad = statements.sign("policy", {"cedar": "permit(", "serial": 3, "issued": 0},
                          OFFICERS[0].private_key, OFFICERS[1].private_key)
    statements.put(store, "policy", bad, subject="policy")
    assert current_policy(reader)[1] == 1
    with pytest.raises(InvalidInput):
        validate_policy("permit(")


def test_enrollment_needs_k_officers_and_newest_serial_wins(store: Store) -> None:
    alice = Identity.generate("alice")
    now = int(time.time())

    def enr(serial: int, clearance: int) -> Enrollment:
        return Enrollment(name="alice", key=alice.public.public_bytes, roles=("approvers",),
                          clearance=clearance, vetting=Vetting("active", now, now + 999),
                          serial=serial, issued=now)

    reader = _reader(store)
    publish(store, "enrollment", enr(1, 4).sign(OFFICERS[0].private_key))
    assert reader.view().principal(alice.public.key_id) is None
    publish(store, "enrollment", enr(1, 4).sign(OFFICERS[1].private_key))
    assert reader.view().principal(alice.public.key_id).clearance == 4  # type: ignore[union-attr]
    publish(store, "enrollment", enr(2, 1).sign(OFFICERS[0].private_key,
                                                 OFFICERS[2].private_key))
    assert reader.view().principal(alice.public.key_id).clearance == 1  # type: ignore[union-attr]
    # deleting the newer enrollment does not bring the older, broader one back
    from sqlalchemy import delete

    from strongroom.store.tables.access import AccessStatement

    with store.session() as s:
        s.execute(delete(AccessStatement).where(AccessStatement.kind == "enrollment"))
    publish(store, "enrollment", enr(1, 4).sign(OFFICERS[0].private_key,
                                                 OFFICERS[1].private_key))
    assert reader.view().principal(alice.public.key_id) is None


def test_rules_parse_and_count_each_person_once() -> None:
    rule = Rule.parse("2 of security-officers AND 1 of model-owners")
    assert str(rule) == "2 of security-officers AND 1 of model-owners" and rule.required == 3
    now = int(time.time())

    def person(name: str, *roles: str) -> Enrollment:
        return Enrollment(name=name, key=Identity.generate().public.public_bytes, roles=roles,
                          vetting=Vetting("active", now, now + 9))

    both = person("erin", "security-officers", "model-owners")
    so = person("sam", "security-officers")
    assert satisfy(rule, [both, so]) is None
    assert satisfy(rule, [both, so, person("mo", "model-owners")]) is not None
    with pytest.raises(InvalidInput):
        Rule.parse("two of approvers")


def test_engine_snapshot_matches_single_decisions() -> None:
    from strongroom.access.directory import Resource

    now = int(time.time())
    people = [Enrollment(name=f"p{i}", key=Identity.generate().public.public_bytes,
                         clearance=i % 5, compartments=("atlas",) if i % 2 else (),
                         vetting=Vetting("active", now, now + 99)) for i in range(10)]
    res = [Resource(f"r{i}@1", "weights", i % 5, ("atlas",) if i % 3 else ()) for i in range(6)]
    engine = PolicyEngine()
    snap = engine.snapshot(people, res)
    for p in people:
        for r in res:
            assert snap.allowed(p.key_id, "load", r.name, now) == \
                engine.decide(p, "load", r, now).allowed


def test_demo_access_runs_on_a_gated_vault(tmp_path: Path) -> None:
    from rich.console import Console

    from strongroom.demo.access import demo_access

    with access_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, n_officers=1) as w:
        make_model(tmp_path / "m.safetensors")
        w.vault.import_weights(tmp_path / "m.safetensors", "minilm", compartments=["demo"])
        console = Console(record=True, width=200)
        alice = demo_access(w.vault, console, tmp_path / "home")
        text = console.export_text()
        assert "ApprovalRequired" in text and "Grant" in text and "tensors" in text
        assert "policy denies dave" in text
        report = Vault(w.vault.settings, w.store, w.vault.blobs, w.keys, w.vault.audit,
                       identity=alice).verify("minilm")
        assert report.files == 1

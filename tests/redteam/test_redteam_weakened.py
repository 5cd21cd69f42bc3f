"""A deliberately weakened target makes the scenarios that rely on the weakened control missed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strongroom.redteam.runner import run_suite
from strongroom.redteam.schema import load_builtin
from strongroom.redteam.target import EmbeddedTarget

GRANT_DEPENDENT = ["RT-CRED-001", "RT-CRED-002", "RT-MPA-001", "RT-MPA-002", "RT-DBA-001",
                   "RT-DBA-002", "RT-VET-001", "RT-GRT-001"]
#: Controls elsewhere than the evidence rule: still stopped on the weakened target.
INDEPENDENT = ["RT-EXF-003", "RT-KEY-001", "RT-TAMPER-002"]


@pytest.fixture(scope="module")
def weak_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTarget]:
    target = EmbeddedTarget.build(tmp_path_factory.mktemp("rt-weak"), weaken={"evidence": "noop"})
    try:
        yield target
    finally:
        target.close()


def test_noop_evidence_rule_is_caught_by_grading(weak_target: EmbeddedTarget) -> None:
    report = run_suite(weak_target, load_builtin(GRANT_DEPENDENT + INDEPENDENT))
    outcomes = {r.id: r for r in report.results}
    for sid in GRANT_DEPENDENT:
        r = outcomes[sid]
        assert r.outcome == "missed", (sid, r.evidence)
        # the evidence shows why: the gate allowed the release, as the log records
        assert any(e["kind"] in ("audit-allow", "missing") for e in r.evidence), r.evidence
    allowed = [e for r in report.results for e in r.evidence if e["kind"] == "audit-allow"]
    for e in allowed:
        assert weak_target.audit.event(e["id"]).decision == "allow"
    for sid in INDEPENDENT:
        assert outcomes[sid].outcome in ("blocked", "detected"), outcomes[sid].evidence


def test_unknown_weakening_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    from strongroom.errors import InvalidInput

    with pytest.raises(InvalidInput):
        EmbeddedTarget.build(tmp_path_factory.mktemp("rt-bad"), weaken={"audit": "off"})


#: Rows a database administrator deletes (issue 15): only the gate's state guard stops them.
GUARD_DEPENDENT = ["RT-ABS-002", "RT-ABS-003", "RT-ABS-004"]


def test_a_gate_without_its_state_guard_misses_the_deletions(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with EmbeddedTarget.build(tmp_path_factory.mktemp("rt-noguard"),
                              weaken={"guard": "off"}) as target:
        report = run_suite(target, load_builtin([*GUARD_DEPENDENT, "RT-ABS-001"]))
    outcomes = {r.id: r for r in report.results}
    for sid in GUARD_DEPENDENT:
        r = outcomes[sid]
        assert r.outcome == "missed", (sid, r.evidence)
        assert any(e.get("detector") == "SR-STATE-TAMPER" and e["kind"] == "missing"
                   for e in r.evidence), r.evidence
    # the shard's size comes from the signed manifest, not from the guard
    assert outcomes["RT-ABS-001"].outcome == "blocked", outcomes["RT-ABS-001"].evidence


def test_no_publisher_and_no_lock_bound_miss_the_rollback_and_the_stall(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 15's tail truncation and lock stall: only the checkpoint publisher (signing on its
    interval, checking the log against what it signed) and the lock bound stop them."""
    with EmbeddedTarget.build(tmp_path_factory.mktemp("rt-nopub"),
                              weaken={"publisher": "off", "lock_bound": "off"}) as target:
        report = run_suite(target, load_builtin(["RT-ABS-005", "RT-ABS-007", "RT-ABS-001"]))
    outcomes = {r.id: r for r in report.results}
    rollback = outcomes["RT-ABS-005"]
    assert rollback.outcome == "missed", rollback.evidence
    missing = {e.get("check") or e.get("detector") for e in rollback.evidence
               if e["kind"] == "missing"}
    assert {"rollback_refuses_releases", "audit_verify_names_gone_range",
            "SR-AUDIT-ROLLBACK"} <= missing, rollback.evidence
    assert all(e.get("target") == "own" for e in rollback.evidence)  # same weakening there
    stall = outcomes["RT-ABS-007"]
    assert stall.outcome == "missed", stall.evidence
    assert any(e.get("check") == "lock_stall_refused_within_bound" for e in stall.evidence)
    assert any("went through" in o for o in stall.observed), stall.observed  # it waited
    assert outcomes["RT-ABS-001"].outcome == "blocked", outcomes["RT-ABS-001"].evidence

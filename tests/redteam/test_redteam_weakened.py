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

"""CI's red-team run: every scenario against the embedded target, graded from evidence."""

from __future__ import annotations

import json
import os

from strongroom.redteam.runner import SuiteReport, load_results, run_suite, save_results
from strongroom.redteam.schema import Expectation, Scenario, StepCall, load_builtin
from strongroom.redteam.steps import STEPS
from strongroom.redteam.target import EmbeddedTarget

#: Scenarios missed because a control is missing, with the reason (none today). Each one is
#: reported; add a strict xfail for it so the entry is removed when the control lands.
KNOWN_GAPS: dict[str, str] = {}


def test_nothing_missed_but_the_known_gaps(rt_report: SuiteReport) -> None:
    missed = {r.id: r.evidence for r in rt_report.results if r.outcome == "missed"}
    assert set(missed) <= set(KNOWN_GAPS), json.dumps(
        {k: v for k, v in missed.items() if k not in KNOWN_GAPS}, indent=1)
    assert len(rt_report.results) >= 25
    unsupported = [r.id for r in rt_report.results if r.outcome == "unsupported"]
    if os.environ.get("STRONGROOM_TEST_REQUIRE_SERVICES") == "1":
        assert not unsupported, unsupported  # e.g. SoftHSM2 missing: CI must install it


def test_break_glass_abuse_is_detected(rt_report: SuiteReport) -> None:
    outcome = next(r.outcome for r in rt_report.results if r.id == "RT-BG-002")
    assert outcome == "detected"


def test_evidence_is_real_audit_entries_and_alerts(rt_target: EmbeddedTarget,
                                                   rt_report: SuiteReport) -> None:
    scenarios = {s.id: s for s in load_builtin()}
    for r in rt_report.results:
        if r.outcome == "missed":
            continue
        sc = scenarios[r.id]
        if sc.expect.blocked and sc.expect.audit_action is not None:
            audit = [e for e in r.evidence if e["kind"] == "audit"]
            assert audit, r
            for item in audit:
                event = rt_target.audit.event(item["id"])
                assert event.decision == "deny" and event.action == sc.expect.audit_action
                assert r.marker in event.actor + event.object
                assert sc.expect.reason.lower() in event.reason.lower()
        if sc.expect.detected:
            found = [e for e in r.evidence if e.get("detector") == sc.expect.detected]
            assert found, r
            for item in found:
                if item["kind"] == "alert":
                    alert = rt_target.alerts.get(item["id"])
                    assert alert.rule == sc.expect.detected and r.marker in alert.subject
                elif item["kind"] == "tamper-alert":  # names the deleted row, not the marker
                    alert = rt_target.alerts.get(item["id"])
                    assert alert.rule == sc.expect.detected
                    assert alert.details["digest"] == item["digest"]
                elif item["kind"] == "audit-alert":
                    event = rt_target.audit.event(item["id"])
                    assert event.details["kind"] == sc.expect.detected
                elif item["kind"] == "rollback-alert":  # names the log; its own target is gone
                    assert item["target"] == "own" and "are gone" in item["message"]


def test_issue15_rollback_and_lock_stall_rows(rt_target: EmbeddedTarget,
                                              rt_report: SuiteReport) -> None:
    """The tail truncated after a checkpoint (on its own target) and the lock stall."""
    results = {r.id: r for r in rt_report.results}
    rollback, stall = results["RT-ABS-005"], results["RT-ABS-007"]
    assert rollback.outcome == "blocked", rollback.evidence
    assert {e.get("detector") for e in rollback.evidence} >= {"SR-AUDIT-ROLLBACK",
                                                               "SR-AUDIT-VERIFY"}
    assert all(e["target"] == "own" for e in rollback.evidence)
    assert stall.outcome == "blocked", stall.evidence
    refusal = rt_target.audit.event(next(e["id"] for e in stall.evidence
                                         if e["kind"] == "audit"))
    assert refusal.decision == "deny" and refusal.details["unrecorded"]["decision"] == "allow"
    assert stall.marker in refusal.actor


def test_cleanups_leave_the_target_consistent(rt_target: EmbeddedTarget,
                                              rt_report: SuiteReport) -> None:
    rt_target.audit.verify()  # every tampering scenario restored the log
    assert not rt_target.svc.status().sealed


def test_json_shape_and_stored_results(rt_report: SuiteReport, tmp_path: object) -> None:
    doc = rt_report.to_json()
    assert set(doc) == {"scenarios", "missed"}
    assert doc["missed"] == rt_report.missed
    for item in doc["scenarios"]:
        assert set(item) == {"id", "group", "outcome", "evidence"}
        assert item["outcome"] in ("blocked", "detected", "missed")
    path = tmp_path / "latest.json"  # type: ignore[operator]
    save_results(path, rt_report)
    stored = load_results(path)
    assert stored is not None and stored["run_id"] == rt_report.run_id
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_step_that_claims_success_is_not_evidence(rt_target: EmbeddedTarget) -> None:
    """Grading reads the log: an attack that never reached the gate is missed, not blocked."""
    STEPS["redteam_test_noop"] = lambda ctx, **_: ctx.saw("pretended to be refused")
    try:
        sc = Scenario("RT-TEST-001", "no-op", "credentials", "grant-evidence", ("T1078",), (), (),
                      "OC1", (),
                      (StepCall("redteam_test_noop"),), (),
                      Expectation(True, "key.release", "SR-CANARY", (), "no grant"), (), 10)
        report = run_suite(rt_target, [sc])
    finally:
        del STEPS["redteam_test_noop"]
    (r,) = report.results
    assert r.outcome == "missed"
    kinds = {e["kind"] for e in r.evidence}
    assert kinds == {"missing"}

"""Run scenarios against a target, grade them, clean up, and keep the latest results.

::

    with EmbeddedTarget.build() as target:
        report = run_suite(target, load_builtin())
    save_results(home / "redteam" / "latest.json", report)

Each scenario gets a marker ``rt<run id>-<nn>`` that goes into every actor,
path and reason it creates (as Stratus Red Team tags its detonations), so its
audit entries and alerts are found afterwards. Order per scenario:
preconditions, the attack steps (the timeout is checked between steps), the
deployment's monitor pass, grading, then cleanup — always, even after an error.
An error in a precondition or a step, or a timeout, is graded *missed*: the
suite could not show the control working.

A scenario that leaves a deployment unusable by design (``needs: [own-target]``:
the audit log found rolled back refuses every release from then on) runs against
a fresh deployment built the same way (:meth:`EmbeddedTarget.own`), closed
afterwards; its evidence items say ``"target": "own"``.
"""

from __future__ import annotations

import json
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import StrongroomError
from strongroom.outputs import write_output
from strongroom.posture import redteam_results
from strongroom.posture.redteam_results import load_results, results_path
from strongroom.redteam.context import RunContext
from strongroom.redteam.grading import grade
from strongroom.redteam.schema import Scenario
from strongroom.redteam.steps import STEPS
from strongroom.timefmt import utc_stamp

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.keys.identity import Identity

__all__ = ["OUTCOMES", "ScenarioResult", "SuiteReport", "load_results", "record_result",
           "results_path", "run_scenario", "run_suite", "save_results"]

OUTCOMES = ("blocked", "detected", "missed", "unsupported")


@dataclass
class ScenarioResult:
    """One scenario's outcome with its evidence."""

    id: str
    title: str
    group: str
    outcome: str
    evidence: list[dict[str, Any]]
    observed: list[str] = field(default_factory=list)
    expected: str = ""
    marker: str = ""
    duration_s: float = 0.0


@dataclass
class SuiteReport:
    """A whole run."""

    run_id: str
    target: str
    started: str
    results: list[ScenarioResult]
    duration_s: float = 0.0

    @property
    def missed(self) -> int:
        """Scenarios graded missed."""
        return sum(1 for r in self.results if r.outcome == "missed")

    @property
    def unsupported(self) -> int:
        """Scenarios the target could not run."""
        return sum(1 for r in self.results if r.outcome == "unsupported")

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape: ``{"scenarios": [{id, group, outcome, evidence}], "missed": N}``."""
        return {"scenarios": [{"id": r.id, "group": r.group, "outcome": r.outcome,
                               "evidence": r.evidence} for r in self.results],
                "missed": self.missed}

    def to_record(self) -> dict[str, Any]:
        """Everything, for the stored results (read by ``posture assess``)."""
        return {"run_id": self.run_id, "target": self.target, "started": self.started,
                "duration_s": round(self.duration_s, 2), "missed": self.missed,
                "unsupported": self.unsupported,
                "results": [asdict(r) for r in self.results]}


def _expected(sc: Scenario) -> str:
    parts = []
    if sc.expect.blocked:
        parts.append("blocked")
    if sc.expect.detected:
        parts.append(f"detected by {sc.expect.detected}")
    return " and ".join(parts)


def _call(ctx: RunContext, calls: Sequence[Any]) -> None:
    for c in calls:
        STEPS[c.name](ctx, **dict(c.args))


def run_scenario(target: Any, sc: Scenario, run_id: str, seq: int) -> ScenarioResult:
    """Run, grade and clean up one scenario."""
    marker = f"{run_id}-{seq:02d}"
    t0 = time.monotonic()
    result = ScenarioResult(sc.id, sc.title, sc.group, "missed", [], expected=_expected(sc),
                            marker=marker)
    reason = target.unsupported(sc.needs)
    if reason is not None:  # listed as not run, with what it needs: never passed silently
        result.outcome = "unsupported"
        result.evidence = [{"kind": "unsupported", "needs": list(sc.needs), "detail": reason}]
        return result
    if "own-target" in sc.needs:
        try:
            own = target.own()
        except Exception as exc:  # the suite could not show the control working
            result.evidence = [{"kind": "error", "error": type(exc).__name__,
                                "detail": f"could not build the scenario's own target: "
                                          f"{getattr(exc, 'message', None) or exc}"[:400]}]
            return result
        try:  # the timeout counts from the attack, not from the build
            result = _run(own, sc, marker, run_id, result, time.monotonic())
        finally:
            own.close()
        for item in result.evidence:
            item["target"] = "own"
        result.duration_s = round(time.monotonic() - t0, 3)
        return result
    return _run(target, sc, marker, run_id, result, t0)


def _run(target: Any, sc: Scenario, marker: str, run_id: str, result: ScenarioResult,
         t0: float) -> ScenarioResult:
    ctx = RunContext(target, run_id, marker, audit_start=target.audit.size())
    try:
        try:
            _call(ctx, sc.preconditions)
            ctx.audit_start = target.audit.size()
            ctx.started = time.time()
            for c in sc.steps:
                if time.monotonic() - t0 > sc.timeout_s:
                    raise TimeoutError(f"timed out after {sc.timeout_s:g} s before step {c.name}")
                STEPS[c.name](ctx, **dict(c.args))
            if time.monotonic() - t0 > sc.timeout_s:
                raise TimeoutError(f"timed out after {sc.timeout_s:g} s")
            target.scan_monitor()
            result.outcome, result.evidence = grade(ctx, sc)
        except (StrongroomError, TimeoutError, Exception) as exc:  # graded missed, with why
            result.outcome = "missed"
            detail = getattr(exc, "message", None) or str(exc)
            result.evidence = [{"kind": "error", "error": type(exc).__name__,
                                "detail": str(detail)[:400],
                                "where": traceback.format_exc(limit=-2).strip()[-400:]}]
    finally:
        try:
            _call(ctx, sc.cleanup)
            acknowledge = getattr(target, "acknowledge", None)  # a live deployment's alerts
            if acknowledge is not None:
                acked = acknowledge(ctx, sc.id)
                if acked:
                    result.evidence.append({"kind": "acknowledged", "ids": acked,
                                            "detail": f"alerts acknowledged as red-team run "
                                                      f"{marker}"})
        except Exception as exc:
            result.outcome = "missed"
            result.evidence.append({"kind": "error", "error": type(exc).__name__,
                                    "detail": f"cleanup failed: {exc}"[:400]})
    result.observed = ctx.observed
    result.duration_s = round(time.monotonic() - t0, 3)
    return result


def run_suite(target: Any, scenarios: Sequence[Scenario], *, run_id: str | None = None,
              on_result: Callable[[ScenarioResult], None] | None = None) -> SuiteReport:
    """Run every scenario in order against ``target``."""
    run_id = run_id or f"rt{secrets.token_hex(3)}"
    started = utc_stamp()
    t0 = time.monotonic()
    results = []
    for seq, sc in enumerate(scenarios, 1):
        r = run_scenario(target, sc, run_id, seq)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return SuiteReport(run_id, target.description, started, results,
                       time.monotonic() - t0)


def save_results(path: Path, report: SuiteReport) -> None:
    """Write the run as JSON atomically (mode 0600); the posture report reads it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_output(path, json.dumps(report.to_record(), indent=1, sort_keys=True).encode("utf-8"))


def record_result(log: AuditLog, report: SuiteReport, identity: Identity) -> int:
    """Append the run's scorecard, signed by the red-team ``identity``, as ``redteam.result``.

    The actor is the identity's name (as the operator enrolled it); the entry's
    ``dsse`` envelope is checked against the directory by ``posture assess``.
    Returns the entry's index; raises AuditUnavailable when the log cannot be written.
    """
    card = redteam_results.scorecard(report.to_record())
    actor = identity.name or f"redteam:{identity.public.key_id}"
    return log.append(actor=actor, action=redteam_results.RESULT_ACTION, obj=report.run_id,
                      decision="allow",
                      reason=f"{report.missed} missed of {len(report.results)}",
                      details=redteam_results.result_details(card, identity.private_key))

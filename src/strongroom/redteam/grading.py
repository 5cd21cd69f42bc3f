"""Grading: blocked / detected / missed, from evidence found after the attack.

The grader never trusts a step's result. It reads:

* the **audit log** entries appended since the scenario's attack began whose
  actor, object or reason carries the scenario's marker — a scenario counts as
  *blocked* by the gate when there is a ``deny`` for the expected action and
  no ``allow`` of it after the first deny;
* the **alert store** (and ``gateway.alert`` audit entries) for the expected
  detector id on a marked subject, raised since the scenario started — after
  running the deployment's monitor over the new audit events;
* **checks** (:mod:`strongroom.redteam.checks`): independent reads of the
  keyring's status, a verifier's or a witness's verdict, the store.

Every expectation must hold; otherwise the scenario is *missed*, with what
was and was not found as its evidence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strongroom.redteam.checks import CHECKS, Missing
from strongroom.redteam.context import RunContext
from strongroom.redteam.schema import Scenario

__all__ = ["grade"]


def _audit_evidence(ctx: RunContext, action: str,
                    reason: str) -> tuple[bool, list[dict[str, Any]]]:
    log = ctx.target.audit
    events = [e for e in log.events(ctx.audit_start, log.size())
              if ctx.ours(e.actor, e.object, e.reason)
              and (not action or e.action == action)]
    denies = [e for e in events if e.decision == "deny"
              and reason.lower() in e.reason.lower()]
    allows = [e for e in events if e.decision == "allow"]
    items = [{"kind": "audit", "id": e.index, "action": e.action, "decision": e.decision,
              "actor": e.actor, "object": e.object, "reason": e.reason[:200]}
             for e in denies[:5]]
    if not denies:
        others = [e for e in events if e.decision == "deny"]
        items.append({"kind": "missing", "detail": f"no {action or 'audit'} denial"
                      + (f" naming {reason!r}" if reason else "")
                      + f" for {ctx.marker} in entries {ctx.audit_start}..{log.size()}"
                      + (f" (denied for another reason: {others[0].reason[:120]})"
                         if others else "")})
        return False, items
    late = [e for e in allows if e.index > denies[0].index]
    if late:
        items.append({"kind": "audit-allow", "id": late[0].index, "action": late[0].action,
                      "actor": late[0].actor,
                      "detail": f"{len(late)} allow(s) after the first denial"})
        return False, items
    return True, items


def _alert_evidence(ctx: RunContext, detector: str) -> list[dict[str, Any]]:
    since = datetime.fromtimestamp(ctx.started - 1, UTC)
    found: list[dict[str, Any]] = []
    for a in ctx.target.alerts.recent(limit=1000):
        seen = a.last_seen if a.last_seen.tzinfo else a.last_seen.replace(tzinfo=UTC)
        if a.rule == detector and seen >= since and ctx.ours(a.subject, a.obj, a.message):
            found.append({"kind": "alert", "id": a.id, "detector": a.rule,
                          "severity": a.severity, "subject": a.subject,
                          "message": a.message[:200]})
    log = ctx.target.audit
    for e in log.events(ctx.audit_start, log.size()):
        if e.action == "gateway.alert" and e.details.get("kind") == detector \
                and ctx.ours(e.object, e.actor):
            found.append({"kind": "audit-alert", "id": e.index, "detector": detector,
                          "severity": e.decision, "subject": e.object,
                          "message": e.reason[:200]})
    return found[:5]


def grade(ctx: RunContext, scenario: Scenario) -> tuple[str, list[dict[str, Any]]]:
    """The outcome and the evidence behind it."""
    expect = scenario.expect
    evidence: list[dict[str, Any]] = []
    ok = True
    if expect.blocked and expect.audit_action is not None:
        blocked, items = _audit_evidence(ctx, expect.audit_action, expect.reason)
        evidence += items
        ok = ok and blocked
    check_items: list[dict[str, Any]] = []
    for call in expect.checks:
        try:
            check_items += CHECKS[call.name](ctx, **call.args)
        except Missing as exc:
            ok = False
            evidence.append({"kind": "missing", "check": call.name, "detail": str(exc)[:300]})
    evidence += check_items
    if expect.detected:
        found = _alert_evidence(ctx, expect.detected)
        found += [i for i in check_items if i.get("detector") == expect.detected]
        if not found:
            ok = False
            evidence.append({"kind": "missing", "detector": expect.detected,
                             "detail": f"no {expect.detected} alert for {ctx.marker}"})
        evidence += [f for f in found if f not in evidence]
    if not ok:
        return "missed", evidence
    return ("blocked" if expect.blocked else "detected"), evidence

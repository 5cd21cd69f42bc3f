"""Grader-side checks: independent reads of the target's state after an attack.

A check is ``fn(ctx, **args) -> list[dict]`` returning evidence items, or
raising :class:`Missing` when the evidence is not there. Checks never look at
what a step returned; they read the store, the keyring's status, a verifier's
verdict or a witness's state themselves. Evidence items carrying a
``detector`` count as detection by that detector.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from strongroom.errors import AuditUnavailable, IntegrityError, Sealed, StrongroomError
from strongroom.redteam.context import RunContext
from strongroom.timefmt import parse_utc

__all__ = ["CHECKS", "Missing"]

Check = Callable[..., list[dict[str, Any]]]
CHECKS: dict[str, Check] = {}

#: Detector ids of the verifiers the checks run (as an operator's periodic job would).
AUDIT_VERIFY = "SR-AUDIT-VERIFY"
WITNESS_FORK = "SR-WITNESS-FORK"


# Internal control flow, not a user-facing error: grading.grade catches it at once and
# records its text as a "missing" evidence item; it never leaves the red-team harness.
class Missing(Exception):
    """The evidence a check looks for is not there."""


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under ``name``."""
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn
    return register


@check("keyring_stays_sealed")
def keyring_stays_sealed(ctx: RunContext) -> list[dict[str, Any]]:
    """The attacked keyring service reads as sealed, with no unseal progress."""
    svc = ctx.vars.get("sealed_service")
    if svc is None:
        raise Missing("no keyring service was attacked")
    status = svc.status()
    before = int(ctx.vars.get("progress_before", 0))
    if not status.sealed or int(status.progress) > before:
        raise Missing(f"keyring status after the attack: sealed={status.sealed}, "
                      f"progress={status.progress} (was {before})")
    try:  # a probe: the sealed service must refuse a key operation as sealed, nothing else
        svc.sign("manifest", b"red-team probe")
    except Sealed:
        pass
    except Exception as exc:  # anything but Sealed: the seal is not what stopped it
        raise Missing(f"a signing probe on the sealed keyring failed with {type(exc).__name__}, "
                      "not Sealed") from None
    else:
        raise Missing("a signing probe on the sealed keyring was answered")
    return [{"kind": "state", "check": "keyring_stays_sealed",
             "detail": f"keyring status read afterwards: sealed, unseal progress "
                       f"{status.progress}/{status.threshold} (nonce {str(status.nonce)[:8]}…); "
                       "a signing probe is refused as sealed"}]


@check("hsm_guesses_refused")
def hsm_guesses_refused(ctx: RunContext) -> list[dict[str, Any]]:
    """Every wrong PIN was refused, the keyring stayed sealed, and the right PIN still works."""
    result = ctx.vars.get("hsm") or {}
    if "error" in result:
        raise Missing(f"the HSM probe did not run: {result['error']}")
    ok = (result.get("refused") == result.get("guesses") and result.get("sealed_after") is True
          and result.get("right_pin_unseals") is True)
    if not ok:
        raise Missing(f"HSM probe: {result}")
    return [{"kind": "state", "check": "hsm_guesses_refused",
             "detail": f"separate process, SoftHSM2 token: {result['summary']} "
                       f"(errors: {', '.join(result['errors'])})"}]


@check("audit_verify_fails")
def audit_verify_fails(ctx: RunContext) -> list[dict[str, Any]]:
    """``audit verify`` (with the checkpoint kept outside the database) names the divergence."""
    trusted = ctx.vars.get("trusted_checkpoint")
    try:
        report = ctx.target.audit.verify([trusted] if trusted else [])
    except IntegrityError as exc:
        return [{"kind": "verifier", "detector": AUDIT_VERIFY, "check": "audit_verify_fails",
                 "detail": f"audit verify: {exc.message}"}]
    summary = report.summary() if hasattr(report, "summary") else report  # live: the API's
    raise Missing(f"audit verify passed on the tampered log: {summary}")


@check("witness_refuses_fork")
def witness_refuses_fork(ctx: RunContext) -> list[dict[str, Any]]:
    """The witness still holds the genuine root and answers the fork with 409."""
    from strongroom.crypto.note import parse_note
    from strongroom.redteam import tamper

    witness, fork = ctx.vars.get("witness"), ctx.vars.get("forked_checkpoint")
    genuine = ctx.vars.get("genuine_checkpoint")
    if witness is None or fork is None or genuine is None:
        raise Missing("no fork was attempted")
    from strongroom.audit.checkpoint import Checkpoint

    cp = Checkpoint.parse(parse_note(genuine)[0])
    size, root = witness.latest(cp.origin)
    status, _, body = witness.add_checkpoint(
        tamper.add_checkpoint_body(tamper.size_of(fork), [], fork))
    if status == 200 or root != cp.root or size != cp.size:
        raise Missing(f"witness state size={size}, answer to the fork: HTTP {status}")
    return [{"kind": "witness", "detector": WITNESS_FORK, "check": "witness_refuses_fork",
             "detail": f"witness keeps root of size {size}; forked checkpoint answered "
                       f"HTTP {status}: {body.strip()}"}]


@check("artifact_absent")
def artifact_absent(ctx: RunContext, var: str) -> list[dict[str, Any]]:
    """No artifact named ``ctx.vars[var]`` exists in the store."""
    from strongroom.store.tables.vault import Artifact

    name = ctx.vars.get(var)
    if not name:
        raise Missing(f"the scenario recorded no {var}")
    with ctx.target.store.session() as s:
        found = s.scalars(select(Artifact.version).where(Artifact.name == name)).all()
    if found:
        raise Missing(f"{name} was imported (versions {list(found)})")
    return [{"kind": "state", "check": "artifact_absent",
             "detail": f"no artifact named {name} in the store"}]


@check("not_imported")
def not_imported(ctx: RunContext, var: str) -> list[dict[str, Any]]:
    """The deployment lists no artifact named ``ctx.vars[var]`` (its vault, or a live
    deployment's API, answers NotFound for its manifest)."""
    from strongroom.errors import NotFound

    name = ctx.vars.get(var)
    if not name:
        raise Missing(f"the scenario recorded no {var}")
    try:
        m = ctx.target.vault.manifest(name)
    except NotFound:
        return [{"kind": "state", "check": "not_imported",
                 "detail": f"the deployment has no artifact named {name}"}]
    raise Missing(f"{name} was imported ({m.ref})")


@check("scanner_names_global")
def scanner_names_global(ctx: RunContext, var: str, expect: str) -> list[dict[str, Any]]:
    """Scanning the attacker's files again refuses them, naming ``expect``."""
    from strongroom.scanning.scan import scan_path

    path = ctx.vars.get(var)
    if not isinstance(path, Path) or not path.exists():
        raise Missing(f"the scenario kept no {var} to scan")
    try:
        scan_path(path)
    except StrongroomError as exc:
        if expect in exc.message:
            return [{"kind": "scanner", "check": "scanner_names_global",
                     "detail": exc.message[:300]}]
        raise Missing(f"the scanner refused without naming {expect}: {exc.message}") from None
    raise Missing("the scanner accepted the malicious files")


@check("log_intact")
def log_intact(ctx: RunContext) -> list[dict[str, Any]]:
    """The audit log verifies (used after cleanups that restore it)."""
    report = ctx.target.audit.verify()
    return [{"kind": "state", "check": "log_intact", "detail": report.summary()}]


@check("replay_never_reached_gate")
def replay_never_reached_gate(ctx: RunContext, victim: str) -> list[dict[str, Any]]:
    """The original request reached the gate once (allowed or not), and nothing the victim
    sent after it reached the gate."""
    log = ctx.target.audit
    after = int(ctx.vars.get("replay_after", -1))
    if after < 0:
        raise Missing("no signed request was captured")
    name = ctx.actor(victim)
    before = [e for e in log.events(ctx.audit_start, after)
              if e.actor == name and e.action == "key.release"]
    later = [e for e in log.events(after, log.size()) if e.actor == name]
    if len(before) != 1:
        raise Missing(f"the victim's original release is not in the log once ({len(before)})")
    if later:
        raise Missing(f"{len(later)} entries by {name} after the capture: the replay reached "
                      f"the service (#{later[0].index} {later[0].action} {later[0].decision})")
    return [{"kind": "audit", "id": before[0].index, "action": "key.release",
             "decision": before[0].decision, "actor": name,
             "detail": f"the captured request's release is entry #{before[0].index}; no entry by "
                       f"{name} after it: the replays stopped at the signature check"}]


@check("signin_flood_throttled")
def signin_flood_throttled(ctx: RunContext, victim: str) -> list[dict[str, Any]]:
    """No forged sign-in got in; the address was throttled; the failures are in the log."""
    statuses = list(ctx.vars.get("flood_statuses") or [])
    if not statuses:
        raise Missing("no sign-in was attempted")
    if 200 in statuses:
        raise Missing(f"{statuses.count(200)} forged sign-in(s) were accepted")
    if 429 not in statuses:
        raise Missing("the address was never throttled")
    log = ctx.target.audit
    failed = [e for e in log.events(ctx.audit_start, log.size())
              if e.action == "console.sign-in" and e.decision == "deny"
              and ctx.marker in str(e.details.get("host", ""))]
    if not failed:
        raise Missing("the failed sign-ins left no audit entry")
    signed_in = [e for e in log.events(ctx.audit_start, log.size())
                 if e.action == "console.sign-in" and e.decision == "allow"
                 and e.actor == ctx.actor(victim)]
    if signed_in:
        raise Missing(f"the victim was signed in (entry #{signed_in[0].index})")
    return [{"kind": "audit", "id": failed[0].index, "action": "console.sign-in",
             "decision": "deny", "actor": failed[0].actor,
             "detail": f"{len(failed)} refused sign-ins audited from the attacker's address "
                       f"(throttled ones sampled); {statuses.count(429)} attempts refused with "
                       "429 before any check"}]


@check("csrf_left_no_trace")
def csrf_left_no_trace(ctx: RunContext, victim: str, requester: str) -> list[dict[str, Any]]:
    """No approval ceremony started in the victim's session; the same POST with the token does."""
    from strongroom.access import statements
    from strongroom.server.console.sessions import COOKIE, Sessions

    t = ctx.target
    sessions = Sessions(t.store)
    value = ctx.vars.get("csrf_session")
    sess = sessions.get(value)
    if sess is None:
        raise Missing("the victim's session is gone")
    digest = ctx.vars["digest:" + requester]
    if sessions.take_ceremony(sess, "approve") is not None:
        raise Missing("a cross-site POST started an approval ceremony in the victim's session")
    approvals = statements.envelopes(t.store, "approval", subject=digest)
    if approvals:
        raise Missing(f"{len(approvals)} approval(s) stored for the request")
    # Control: the same request from the console's own page (origin + CSRF token) is accepted.
    from strongroom.redteam.target import console_origin

    origin = console_origin()
    r = t.server().post("/webauthn/approve/begin", content=json.dumps({"request": digest}),
                        headers={"Cookie": f"{COOKIE}={value}", "Origin": origin,
                                 "X-CSRF-Token": sess.csrf, "Content-Type": "application/json"})
    started = sessions.take_ceremony(sess, "approve") is not None
    if r.status_code != 200 or not started:
        raise Missing(f"control: the console's own POST was not accepted either (HTTP "
                      f"{r.status_code} {r.text[:160]}): the set-up, not CSRF protection, "
                      "refused")
    return [{"kind": "state", "check": "csrf_left_no_trace",
             "detail": f"no approval ceremony in {ctx.actor(victim)}'s session and no approval "
                       f"stored after the cross-site POSTs; the same POST with the session's "
                       f"CSRF token from {origin} starts one (control)"}]


@check("releases_charged_shard_size")
def releases_charged_shard_size(ctx: RunContext, who: str) -> list[dict[str, Any]]:
    """Every release ``who`` got is audited at the shard's signed size, with the client's claim."""
    from strongroom.redteam.steps import SHARD
    from strongroom.redteam.target import ARTIFACT

    size = ctx.target.vault.manifest(ARTIFACT).file(SHARD).size
    log = ctx.target.audit
    allowed = [e for e in log.events(ctx.audit_start, log.size())
               if e.actor == ctx.actor(who) and e.action == "key.release"
               and e.decision == "allow"]
    if not allowed:
        raise Missing(f"no release by {ctx.actor(who)} was allowed: nothing to check the charge of")
    short = [e for e in allowed if e.nbytes != size]
    if short:
        raise Missing(f"release #{short[0].index} was charged {short[0].nbytes} bytes, "
                      f"not the shard's {size}")
    unclaimed = [e for e in allowed if "claimed_nbytes" not in e.details]
    if unclaimed:
        raise Missing(f"release #{unclaimed[0].index} does not record the client's claim")
    return [{"kind": "charge", "id": e.index, "action": "key.release", "decision": "allow",
             "actor": e.actor, "detail": f"charged {e.nbytes} bytes (the signed size); the "
                                         f"client claimed {e.details['claimed_nbytes']}"}
            for e in allowed[:5]]


def _alerts_since_attack(ctx: RunContext, rule: str) -> list[Any]:
    """The alerts of ``rule`` raised (or seen again) since the scenario's attack began."""
    since = datetime.fromtimestamp(ctx.started - 1, UTC)
    found = []
    for a in ctx.target.alerts.recent(limit=1000):
        seen = a.last_seen if a.last_seen.tzinfo else a.last_seen.replace(tzinfo=UTC)
        if a.rule == rule and seen >= since:
            found.append(a)
    return found


@check("state_tamper_alerted")
def state_tamper_alerted(ctx: RunContext) -> list[dict[str, Any]]:
    """An ``SR-STATE-TAMPER`` alert names each restrictive row the scenario deleted."""
    from strongroom.runtime.state_guard import TAMPER_RULE

    deleted = set(ctx.vars.get("deleted_restrictions") or [])
    if not deleted:
        raise Missing("the scenario deleted no restrictive row")
    found = {}
    for a in _alerts_since_attack(ctx, TAMPER_RULE):
        digest = a.details.get("digest") if isinstance(a.details, dict) else None
        if digest in deleted:
            found[digest] = a
    if set(found) != deleted:
        raise Missing(f"no {TAMPER_RULE} alert for {len(deleted - set(found))} of the "
                      f"{len(deleted)} deleted row(s)")
    # Kind "tamper-alert": the alert names the deleted row (its digest), not the run's marker.
    return [{"kind": "tamper-alert", "id": a.id, "detector": a.rule, "severity": a.severity,
             "subject": a.subject, "digest": d, "message": a.message[:200]}
            for d, a in found.items()]


@check("undecodable_bodies_refused")
def undecodable_bodies_refused(ctx: RunContext, who: str) -> list[dict[str, Any]]:
    """Each undecodable body got a 400 with the usual error body; the refusals are audited."""
    answers = list(ctx.vars.get("utf8_answers") or [])
    if not answers:
        raise Missing("no body was sent")
    for path, status, text in answers:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if status != 400 or not isinstance(body, dict) \
                or not {"error", "object", "remedy", "type"} <= set(body):
            raise Missing(f"POST {path} answered HTTP {status}: {text[:160]}")
    kid = ctx.person(who).public.key_id  # refusals name the keyid the request claimed
    log = ctx.target.audit
    refused = [e for e in log.events(ctx.audit_start, log.size())
               if e.action == "api.request" and e.decision == "deny"
               and "not acceptable JSON" in e.reason and e.actor.endswith(f":{kid}")]
    if len(refused) < len(answers):
        raise Missing(f"{len(refused)} audited refusal(s) for {len(answers)} undecodable bodies")
    return [{"kind": "audit", "id": e.index, "action": e.action, "decision": "deny",
             "actor": e.actor, "detail": f"HTTP 400; audited: {e.reason[:160]}"}
            for e in refused[:len(answers)]]


#: Detector of the deployment's checkpoint publisher when the log no longer extends a mark.
ROLLBACK_RULE = "SR-AUDIT-ROLLBACK"
_GONE = re.compile(r"entries (\d+)\.\.(\d+) are gone")


def _truncated(ctx: RunContext) -> tuple[int, int]:
    cut = ctx.vars.get("truncated")
    if cut is None:
        raise Missing("the scenario truncated no log")
    return int(cut[0]), int(cut[1])


def _names_gone(message: str, keep: int, grown: int) -> bool:
    """Whether ``message`` names a range of entries gone covering the last one deleted."""
    found = _GONE.search(message)
    return found is not None and keep <= int(found[1]) <= grown - 1 <= int(found[2])


@check("rollback_refuses_releases")
def rollback_refuses_releases(ctx: RunContext, who: str) -> list[dict[str, Any]]:
    """The deployment's log reads as rolled back (its gate refuses every release, naming the
    checkpoint) and no release by ``who`` was allowed after the cut."""
    keep, _ = _truncated(ctx)
    log = ctx.target.audit
    try:
        log.require_intact()
    except AuditUnavailable as exc:
        refusal = exc.message
    else:
        raise Missing("the log was not found rolled back: the gate still releases keys")
    allowed = [e for e in log.events(keep, log.size()) if e.actor == ctx.actor(who)
               and e.action == "key.release" and e.decision == "allow"]
    if allowed:
        raise Missing(f"release #{allowed[0].index} by {ctx.actor(who)} was allowed after the "
                      "log was cut")
    return [{"kind": "state", "check": "rollback_refuses_releases",
             "detail": f"the gate's audit log refuses releases: {refusal[:240]}"}]


@check("audit_verify_names_gone_range")
def audit_verify_names_gone_range(ctx: RunContext) -> list[dict[str, Any]]:
    """What ``strongroom audit verify`` reads: the log replayed, then checked against every mark
    kept outside the database (the publisher's high-water mark, the witnesses); the failure
    names the entries that are gone."""
    from strongroom.audit.highwater import check_extends, witness_marks

    keep, grown = _truncated(ctx)
    log = ctx.target.audit
    publisher = ctx.target.svc.publisher
    try:
        report = log.verify()
        marks = (publisher.high_water.marks() if publisher is not None else []) \
            + witness_marks(log)
        for mark in sorted(marks, key=lambda m: m.size, reverse=True):
            check_extends(log, mark, (report.size, report.root))
    except IntegrityError as exc:
        if not _names_gone(exc.message, keep, grown):
            raise Missing(f"audit verify failed without naming entries {keep}..{grown - 1} "
                          f"as gone: {exc.message[:240]}") from None
        return [{"kind": "verifier", "detector": AUDIT_VERIFY,
                 "check": "audit_verify_names_gone_range",
                 "detail": f"audit verify: {exc.message[:300]}"}]
    raise Missing(f"audit verify passed on the truncated log: {report.summary()} "
                  f"(extends {len(marks)} mark(s) kept outside the database)")


@check("rollback_alerted")
def rollback_alerted(ctx: RunContext) -> list[dict[str, Any]]:
    """An ``SR-AUDIT-ROLLBACK`` alert raised since the attack names the entries that are gone."""
    keep, grown = _truncated(ctx)
    found = [a for a in _alerts_since_attack(ctx, ROLLBACK_RULE)
             if _names_gone(a.message, keep, grown)]
    if not found:
        raise Missing(f"no {ROLLBACK_RULE} alert naming entries {keep}..{grown - 1} as gone")
    # Kind "rollback-alert": the alert names the log (its origin), not the run's marker.
    return [{"kind": "rollback-alert", "id": a.id, "detector": a.rule, "severity": a.severity,
             "subject": a.subject, "message": a.message[:240]} for a in found[:3]]


@check("lock_stall_refused_within_bound")
def lock_stall_refused_within_bound(ctx: RunContext, who: str,
                                    slack_s: float = 2.5) -> list[dict[str, Any]]:
    """The release asked while the database was locked is in the log as a refusal, recorded
    once the lock was gone, refused within the log's bound (plus ``slack_s`` on a loaded
    machine) and naming what it would have been."""
    log = ctx.target.audit
    bound = float(log.lock_timeout)
    refused = [e for e in log.events(ctx.audit_start, log.size())
               if e.actor == ctx.actor(who) and e.action == "key.release"
               and e.decision == "deny" and isinstance(e.details.get("unrecorded"), dict)]
    if not refused:
        raise Missing(f"no refused release by {ctx.actor(who)} was recorded after the stall")
    items = []
    for e in refused:
        unrecorded = e.details["unrecorded"]
        took = e.at - parse_utc(unrecorded["attempted_at"], obj=f"audit entry {e.index}")
        if took > bound + slack_s:
            raise Missing(f"entry #{e.index}: refused {took} s after it was asked "
                          f"(bound {bound:g} s)")
        if unrecorded.get("error") != "AuditUnavailable":
            raise Missing(f"entry #{e.index} was refused by {unrecorded.get('error')}, "
                          "not by the lock bound")
        items.append({"kind": "audit", "id": e.index, "action": e.action, "decision": "deny",
                      "actor": e.actor,
                      "detail": f"refused {took:.2f} s after it was asked (bound {bound:g} s); "
                                f"would have been {unrecorded.get('decision')}; "
                                f"{e.reason[:160]}"})
    return items


@check("stolen_data_opens_nothing")
def stolen_data_opens_nothing(ctx: RunContext) -> list[dict[str, Any]]:
    """Every key-sized value in what the attacker copied, tried at every layer of the key
    hierarchy, opens no sealed row, no wrapped file key and no blob."""
    from strongroom.redteam.loot import try_every_key

    loot = ctx.vars.get("loot")
    if not isinstance(loot, Path) or not loot.is_dir():
        raise Missing("the scenario copied nothing to try keys on")
    report = try_every_key(loot)
    if report.opened or not report.blobs or not report.trials:
        raise Missing(report.summary())
    return [{"kind": "state", "check": "stolen_data_opens_nothing", "detail": report.summary()}]


@check("outputs_rounded")
def outputs_rounded(ctx: RunContext, who: str, precision: int = 4) -> list[dict[str, Any]]:
    """Every answer the caller kept is one the gateway logged as served (its SHA-256 is an
    audited ``gateway.infer`` allow) and carries no component finer than ``precision``."""
    import hashlib

    replies = [(s, b) for s, b in ctx.vars.get("gateway_replies") or [] if s == 200]
    if not replies:
        raise Missing("the gateway answered no probe")
    log = ctx.target.audit
    served = {e.details.get("output_sha256"): e for e in log.events(ctx.audit_start, log.size())
              if e.action == "gateway.infer" and e.decision == "allow"
              and e.actor == ctx.actor(who)}
    items = []
    for _, body in replies:
        entry = served.get(hashlib.sha256(body).hexdigest())
        if entry is None:
            raise Missing("an answer the caller kept is not in the audit log as served")
        values = [x for row in json.loads(body)["data"] for x in row["embedding"]]
        fine = [x for x in values if round(x, precision) != x]
        if fine:
            raise Missing(f"entry #{entry.index}: {len(fine)} of {len(values)} components carry "
                          f"more than {precision} decimals (e.g. {fine[0]!r})")
        items.append({"kind": "audit", "id": entry.index, "action": entry.action,
                      "decision": "allow", "actor": entry.actor,
                      "detail": f"served {len(values)} components, none finer than "
                                f"{precision} decimals"})
    return items[:3]


@check("query_budget_held")
def query_budget_held(ctx: RunContext, who: str, budget: int) -> list[dict[str, Any]]:
    """The texts the gateway served the caller (its audited ``gateway.infer`` allows) stay
    within ``budget``, and a later request was refused naming the query budget."""
    log = ctx.target.audit
    mine = [e for e in log.events(ctx.audit_start, log.size())
            if e.action == "gateway.infer" and e.actor == ctx.actor(who)]
    served = sum(int(e.details.get("texts", 0)) for e in mine if e.decision == "allow")
    if served > budget:
        raise Missing(f"the gateway served {who} {served} texts, over the budget of {budget}")
    refused = [e for e in mine if e.decision == "throttle" and "query budget" in e.reason]
    if not refused:
        raise Missing(f"no request by {ctx.actor(who)} was refused for the query budget "
                      f"({served} texts served)")
    return [{"kind": "audit", "id": refused[0].index, "action": "gateway.infer",
             "decision": "throttle", "actor": refused[0].actor,
             "detail": f"{served} texts served of a budget of {budget}; then refused: "
                       f"{refused[0].reason[:120]}"}]

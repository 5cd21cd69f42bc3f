"""Steps over people, Grants, approvals, documents and the gate: preconditions and an insider's moves.

Enrol people and grant them access (the preconditions most scenarios start
with), then what an insider tries: presenting another's or a forged Grant,
approvals lifted from other requests, rows a DBA inserts or deletes,
break-glass, documents outside their compartments, pulling weights until the
egress budget stops them, and touching a canary.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import (
    SHARD,
    ask_gate,
    attempt,
    release_request,
    send_request,
    step,
)
from strongroom.redteam.target import ARTIFACT, COMPARTMENT, DECOY, OTHER

if TYPE_CHECKING:
    from strongroom.redteam.live import LiveTarget


@step("enroll")
def enroll(ctx: RunContext, who: str, roles: list[str] | None = None,
           clearance: str = "secret", compartments: list[str] | None = None,
           kind: str = "person", security_key: bool = False) -> None:
    """The officers enroll marked principal ``who`` (with a console security key if asked)."""
    ctx.target.enroll(ctx.actor(who), roles=tuple(roles or ["requesters"]), clearance=clearance,
                      compartments=tuple(compartments if compartments is not None
                                         else [COMPARTMENT]), kind=kind,
                      security_key=security_key)


@step("grant")
def grant(ctx: RunContext, who: str, action: str = "load", resource: str = ARTIFACT,
          approvers: list[str] | None = None, budget: int | None = None,
          budget_shards: int | None = None) -> None:
    """``who`` requests access and two standing approvers approve; the Grant is kept.

    ``budget_shards`` sizes the Grant's byte budget in shards of ``resource``.
    """
    if budget_shards is not None:
        budget = budget_shards * ctx.target.vault.manifest(resource).file(SHARD).size
    env = ctx.target.grant(ctx.actor(who), resource, action,
                           approvers=tuple(approvers or ["bob", "carol"]),
                           budget=budget if budget is not None else 1 << 30)
    ctx.vars[f"grant:{who}"] = env


@step("load_with_grant")
def load_with_grant(ctx: RunContext, who: str, times: int = 1, resource: str = ARTIFACT,
                    purpose: str = "load") -> None:
    """``who`` releases the shard ``times`` times with their own Grant."""
    for _ in range(times):
        ask_gate(ctx, who, grant=ctx.vars.get(f"grant:{who}"), resource=resource,
                 purpose=purpose)


@step("add_document")
def add_document(ctx: RunContext, name: str, compartments: list[str],
                 classification: str = "secret") -> None:
    """An officer stores a secret document (name gets the marker)."""
    from strongroom.vault.documents import add_document as add

    tmp = ctx.target.root / f"doc-{ctx.marker}.md"
    tmp.write_text("# training recipe\nlr 3e-4, warmup 2000 steps\n")
    try:
        add(ctx.target.vault, tmp, name=f"{name}-{ctx.marker}", classification=classification,
            compartments=compartments)
    finally:
        tmp.unlink(missing_ok=True)


# -- credentials and approvals ------------------------------------------------------------


@step("load_weights")
def load_weights(ctx: RunContext, who: str, resource: str = ARTIFACT) -> None:
    """``who`` (whose key the attacker holds) loads the weights through the vault."""
    t = ctx.target
    attempt(ctx, f"{ctx.actor(who)} loads {resource}",
         lambda: t.vault_as(ctx.person(who)).open_weights(resource).close())


@step("present_grant_of")
def present_grant_of(ctx: RunContext, thief: str, victim: str) -> None:
    """``thief`` presents ``victim``'s Grant with a release request signed by the thief."""
    ask_gate(ctx, thief, grant=ctx.vars[f"grant:{victim}"])


@step("replay_release")
def replay_release(ctx: RunContext, victim: str) -> None:
    """A release request ``victim`` sent earlier, captured on the wire, is sent again."""
    captured = ctx.vars[f"last_evidence:{victim}"]
    ask_gate(ctx, victim, evidence=captured)


@step("load_with_load_evidence")
def load_with_load_evidence(ctx: RunContext, who: str, resource: str = ARTIFACT,
                            purpose: str = "load") -> None:
    """``who`` loads every shard of ``resource`` with their Grant under ONE signed load
    evidence (one signature over ``[[path, blob], ...]``), each shard asked of the gate on its
    own; the evidence is kept as ``load_evidence:<who>``."""
    from strongroom.access.evidence import make_load_evidence

    manifest = ctx.target.vault.manifest(resource)
    shards = [(f.path, f.blob) for f in manifest.files]
    evidence = make_load_evidence(ctx.person(who).private_key, artifact=manifest.ref,
                                  shards=shards, purpose=purpose,
                                  grant=ctx.vars.get(f"grant:{who}"))
    ctx.vars[f"load_evidence:{who}"] = evidence
    for path, _ in shards:
        send_request(ctx, who, release_request(ctx, who, resource=resource, purpose=purpose,
                                               evidence=evidence, shard=path))


@step("replay_load_evidence")
def replay_load_evidence(ctx: RunContext, victim: str, resource: str = ARTIFACT) -> None:
    """The load evidence ``victim`` loaded with, captured on the wire, is sent again for a shard
    it already released (the model's weights shard, which every load lists)."""
    ask_gate(ctx, victim, resource=resource, evidence=ctx.vars[f"load_evidence:{victim}"])


def _forge(ctx: RunContext, who: str, approval_envs: list[str], *, store: bool) -> str:
    from strongroom.access import statements
    from strongroom.access.grants import build_grant

    env = ctx.vars["request:" + who]
    forged = build_grant(ctx.person(who).private_key, env, approval_envs, now=time.time())
    if store:
        ctx.vars["forged_grant_row"] = statements.put(
            ctx.target.store, "grant", forged, subject=ctx.person(who).public.key_id,
            resource=ctx.target.artifact, expires=int(time.time()) + 3600)
    return forged


def _resource(ctx: RunContext, document: str | None) -> str:
    return f"{document}-{ctx.marker}" if document else ARTIFACT


@step("request")
def request(ctx: RunContext, who: str, action: str = "load",
            document: str | None = None) -> None:
    """``who`` signs and submits an access request (for the model, or a marked document)."""
    env, _ = ctx.target.request(ctx.actor(who), _resource(ctx, document), action)
    ctx.vars["request:" + who] = env


@step("approve")
def approve(ctx: RunContext, approver: str, requester: str, marked: bool = True) -> None:
    """``approver`` (marked role, or a standing approver when ``marked`` is false) approves."""
    from strongroom.access.approvals import approve as sign_approval

    name = ctx.actor(approver) if marked else approver
    env = sign_approval(ctx.target.people[name].private_key, name,
                        ctx.vars["request:" + requester], now=time.time())
    ctx.vars.setdefault("approvals:" + requester, []).append(env)


@step("approval_from_other_request")
def approval_from_other_request(ctx: RunContext, requester: str, approver: str = "bob") -> None:
    """A genuine approval of an earlier, different request is attached to a new one."""
    from strongroom.access.approvals import approve as sign_approval

    old_env, _ = ctx.target.request(ctx.actor(requester), OTHER, "load")
    env = sign_approval(ctx.target.people[approver].private_key, approver, old_env,
                        now=time.time())
    ctx.vars.setdefault("approvals:" + requester, []).append(env)


@step("present_forged_grant")
def present_forged_grant(ctx: RunContext, who: str, document: str | None = None) -> None:
    """``who`` assembles a Grant from the approvals they have and presents it at the gate."""
    forged = _forge(ctx, who, ctx.vars.get("approvals:" + who, []), store=False)
    ask_gate(ctx, who, grant=forged, resource=_resource(ctx, document),
             purpose="read" if document else "load")


@step("dba_insert_grant")
def dba_insert_grant(ctx: RunContext, who: str) -> None:
    """A database administrator writes a Grant row for ``who`` straight into the store."""
    _forge(ctx, who, ctx.vars.get("approvals:" + who, []), store=True)
    ask_gate(ctx, who)  # the gate looks Grants up in the store


@step("dba_remove_grant")
def dba_remove_grant(ctx: RunContext) -> None:
    """Cleanup: the DBA deletes the Grant row the scenario inserted (a live deployment keeps
    nothing of the run but its audit entries)."""
    from sqlalchemy import delete

    from strongroom.store.tables.access import AccessStatement

    digest = ctx.vars.get("forged_grant_row")
    if digest is None:
        return
    with ctx.target.store.session() as s:
        gone = s.execute(delete(AccessStatement).where(AccessStatement.kind == "grant",
                                                       AccessStatement.digest == digest))
    ctx.saw(f"cleanup: deleted {getattr(gone, 'rowcount', 0)} inserted Grant row(s)")


@step("dba_enroll_ghosts")
def dba_enroll_ghosts(ctx: RunContext, requester: str, ghosts: int = 2) -> None:
    """A DBA writes enrollment rows for fake approvers (self-signed), who then approve."""
    from strongroom.access.approvals import approve as sign_approval
    from strongroom.access.directory import Enrollment, Vetting, level, publish
    from strongroom.keys.identity import Identity

    now = int(time.time())
    for i in range(ghosts):
        name = ctx.actor(f"ghost{i}")
        ghost = Identity.generate(name)
        ctx.target.people[name] = ghost
        e = Enrollment(name=name, key=ghost.public.public_bytes, roles=("approvers",),
                       clearance=level("top-secret"), compartments=(COMPARTMENT,),
                       vetting=Vetting("active", now - 60, now + 86400), serial=1, issued=now)
        publish(ctx.target.store, "enrollment", e.sign(ghost.private_key))
        ctx.vars.setdefault("approvals:" + requester, []).append(
            sign_approval(ghost.private_key, name, ctx.vars["request:" + requester],
                          now=time.time()))
    _forge(ctx, requester, ctx.vars["approvals:" + requester], store=True)
    ask_gate(ctx, requester)


@step("lapse_vetting")
def lapse_vetting(ctx: RunContext, who: str) -> None:
    """Continuous evaluation: the officers re-enroll ``who`` with lapsed vetting (live: the
    lent officers re-issue the insider's enrollment, put back after the scenario)."""
    if ctx.target.kind == "live":
        cast("LiveTarget", ctx.target).lapse_vetting(ctx.actor(who))
        return
    ctx.target.enroll(ctx.actor(who), vetting="lapsed", serial=2)


@step("revoke_grant")
def revoke_grant(ctx: RunContext, who: str, by: str = "carol") -> None:
    """An approver revokes ``who``'s Grant."""
    from strongroom.access import statements
    from strongroom.access.grants import revoke_grant as revoke

    gid = statements.payload_digest(ctx.vars[f"grant:{who}"])
    reason = f"red-team {ctx.marker}"
    if ctx.target.kind == "live":  # a lent approver revokes over the API; the server journals
        ctx.vars.setdefault("restrictions", []).append(
            statements_digest(cast("LiveTarget", ctx.target).revoke(gid, reason)))
        return
    env = revoke(ctx.target.store, ctx.target.people[by].private_key, by, gid, reason,
                 now=time.time())
    _journal(ctx, by, "access.revoke", "grant-revocation", env, gid, reason)


def _journal(ctx: RunContext, by: str, action: str, kind: str, env: str, subject: str,
             reason: str) -> None:
    """Record a restrictive statement in the audit log as the faces do (``access revoke|deny``)."""
    from strongroom.access.restrictions import journal_details

    ctx.target.audit.append(actor=by, action=action, obj=subject[:16],
                            decision="deny" if kind == "denial" else "allow", reason=reason,
                            details=journal_details(kind, env, subject=subject))
    ctx.vars.setdefault("restrictions", []).append(statements_digest(env))


def statements_digest(env: str) -> str:
    """The digest a statement row is stored under."""
    from strongroom.access import statements

    return statements.payload_digest(env)


@step("deny_request")
def deny_request(ctx: RunContext, requester: str, by: str = "carol") -> None:
    """A standing approver denies ``requester``'s pending request (signed, with a reason)."""
    from strongroom.access.approvals import deny, submit_approval

    t = ctx.target
    env = ctx.vars["request:" + requester]
    reason = f"red-team veto {ctx.marker}"
    denial = deny(t.people[by].private_key, by, env, now=time.time(), reason=reason)
    submit_approval(t.store, denial, kind="denial", directory=t.reader().view())
    _journal(ctx, by, "access.deny", "denial", denial, statements_digest(env), reason)


@step("dba_delete_restrictions")
def dba_delete_restrictions(ctx: RunContext) -> None:
    """A DBA deletes the rows of every restrictive statement the scenario made (plain SQL)."""
    from sqlalchemy import delete

    from strongroom.store.tables.access import AccessStatement

    digests = list(ctx.vars.get("restrictions", []))
    with ctx.target.store.engine.begin() as conn:
        gone = conn.execute(delete(AccessStatement).where(AccessStatement.digest.in_(digests)))
    ctx.vars["deleted_restrictions"] = digests
    ctx.saw(f"deleted {gone.rowcount} restrictive row(s) from access_statements")


@step("load_claiming_nbytes")
def load_claiming_nbytes(ctx: RunContext, who: str, times: int = 1, nbytes: int = 0) -> None:
    """``who`` releases the shard with their Grant, each request claiming ``nbytes``."""
    for _ in range(times):
        ask_gate(ctx, who, grant=ctx.vars.get(f"grant:{who}"), nbytes=nbytes)


@step("dba_reset_egress")
def dba_reset_egress(ctx: RunContext, who: str) -> None:
    """A DBA deletes ``who``'s egress charges and bumps the ledger's generation (meter reloads)."""
    from sqlalchemy import text

    with ctx.target.store.engine.begin() as conn:
        gone = conn.execute(text("DELETE FROM egress_charges WHERE principal = :p"),
                            {"p": ctx.actor(who)})
        conn.execute(text("UPDATE egress_ledger SET generation = generation + 1"))
    ctx.saw(f"deleted {gone.rowcount} egress charge(s) of {ctx.actor(who)}; generation bumped")


@step("server_post_invalid_utf8")
def server_post_invalid_utf8(ctx: RunContext, who: str) -> None:
    """``who`` sends correctly signed JSON bodies holding invalid UTF-8 to the API's POSTs."""
    from strongroom.server.signatures import sign_request

    client = ctx.target.server()
    body = b'{"artifact":"\xff\xfe' + ctx.marker.encode() + b'"}'
    statuses: dict[str, int] = {}
    for path in INVALID_UTF8_ROUTES:
        headers = {**sign_request(ctx.person(who).private_key, "POST", path, body),
                   "Content-Type": "application/json"}
        r = client.post(path, content=body, headers=headers)
        statuses[path] = r.status_code
        ctx.vars.setdefault("utf8_answers", []).append((path, r.status_code, r.text[:300]))
    ctx.saw(f"invalid UTF-8 bodies answered with {statuses}")


#: The signed POST routes issue 15 sent invalid UTF-8 to.
INVALID_UTF8_ROUTES = ("/v1/keys/release", "/v1/access/requests", "/v1/statements")


@step("swap_blob")
def swap_blob(ctx: RunContext, who: str) -> None:
    """With a Grant for one model, ask for the key of another model's blob."""
    ask_gate(ctx, who, grant=ctx.vars.get(f"grant:{who}"), blob_of=OTHER)


@step("read_document")
def read_document(ctx: RunContext, who: str, name: str) -> None:
    """``who`` reads a secret document through the gate."""
    from strongroom.vault.documents import read_document as read

    t = ctx.target
    attempt(ctx, f"{ctx.actor(who)} reads {name}-{ctx.marker}",
         lambda: read(t.vault_as(ctx.person(who)), f"{name}-{ctx.marker}"))


@step("request_document_grant")
def request_document_grant(ctx: RunContext, who: str, name: str) -> None:
    """``who`` asks approvers for read access to a document outside their compartments."""
    t = ctx.target
    attempt(ctx, f"{ctx.actor(who)} is granted read on {name}-{ctx.marker}",
         lambda: t.grant(ctx.actor(who), f"{name}-{ctx.marker}", "read",
                         approvers=("bob",)))


@step("list_for_break_glass")
def list_for_break_glass(ctx: RunContext, who: str) -> None:
    """The officers list ``who`` for emergency access to the model."""
    ctx.target.relabel(ARTIFACT, break_glass=(ctx.actor(who),))


@step("break_glass")
def break_glass(ctx: RunContext, who: str, reason: str = "pager: inference outage",
                times: int = 1) -> None:
    """``who`` takes break-glass access and releases the model's key ``times`` times."""
    from strongroom.access.breakglass import submit_break_glass, take

    env = take(ctx.person(who).private_key, ctx.actor(who), ctx.target.artifact, "load",
               f"{reason} ({ctx.marker})", now=time.time(), window_s=600)
    if ctx.target.kind == "live":  # posted over the API (the server audits it as taken)
        cast("LiveTarget", ctx.target).take_break_glass(env)
    else:
        submit_break_glass(ctx.target.store, env)
    for _ in range(times):
        ask_gate(ctx, who, break_glass=env)


@step("unlist_break_glass")
def unlist_break_glass(ctx: RunContext) -> None:
    """Cleanup: the officers relabel the model with no break-glass list."""
    ctx.target.relabel(ARTIFACT)


# -- exfiltration --------------------------------------------------------------------------


@step("pull_until_stopped")
def pull_until_stopped(ctx: RunContext, who: str, max_pulls: int = 50) -> None:
    """A loop releases the model again and again until the gate stops it."""
    for _ in range(max_pulls):
        ask_gate(ctx, who, grant=ctx.vars.get(f"grant:{who}"))
        if not ctx.vars["released"][-1]:
            break


@step("pull_fraction_of_cap")
def pull_fraction_of_cap(ctx: RunContext, who: str, fraction: float = 0.9) -> None:
    """Release just under ``fraction`` of the principal's cap, then stop (slow exfiltration)."""
    t = ctx.target
    size = t.vault.manifest(ARTIFACT).file(SHARD).size
    pulls = int(t.cap_bytes * fraction) // max(1, size)
    for _ in range(pulls):
        ask_gate(ctx, who, grant=ctx.vars.get(f"grant:{who}"))


@step("touch_canary")
def touch_canary(ctx: RunContext, who: str) -> None:
    """``who`` asks for the key of a plausible-looking decoy model."""
    ask_gate(ctx, who, resource=DECOY)



@step("request_marked")
def request_marked(ctx: RunContext, who: str, action: str = "load") -> None:
    """``who`` files an access request for the model (its digest is kept)."""
    env, digest = ctx.target.request(ctx.actor(who), ARTIFACT, action)
    ctx.vars["request:" + who] = env
    ctx.vars["digest:" + who] = digest

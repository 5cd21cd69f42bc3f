"""The named steps scenarios call: preconditions, attacks and cleanups, in a registry.

Every step is ``fn(ctx: RunContext, **args) -> None`` registered under its
name in :data:`STEPS`. Attack steps *try* something and record what happened
(``ctx.saw``); they never decide the outcome — the grader reads the audit log,
the alert store and the target's state afterwards (:mod:`strongroom.redteam.grading`).
Principals a scenario creates carry its marker (``ctx.actor(role)``).
"""

from __future__ import annotations

import json
import pickle
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import StrongroomError
from strongroom.redteam.context import RunContext
from strongroom.redteam.target import ARTIFACT, COMPARTMENT, DECOY, OTHER

if TYPE_CHECKING:
    from strongroom.release import ReleaseRequest

__all__ = ["STEPS", "step"]

Step = Callable[..., None]
STEPS: dict[str, Step] = {}
SHARD = "model.safetensors"


def step(name: str) -> Callable[[Step], Step]:
    """Register a step under ``name``."""
    def register(fn: Step) -> Step:
        STEPS[name] = fn
        return fn
    return register


def _try(ctx: RunContext, label: str, fn: Callable[[], Any]) -> Any:
    """Run one attempt; a refusal (StrongroomError) is recorded, not raised."""
    try:
        result = fn()
    except StrongroomError as exc:
        ctx.saw(label, exc)
        return None
    ctx.saw(f"{label}: went through")
    return result


def _release(ctx: RunContext, who: str, *, resource: str = ARTIFACT, purpose: str = "load",
             grant: str | None = None, break_glass: str | None = None,
             blob_of: str | None = None, evidence: str | None = None,
             nbytes: int | None = None) -> str | None:
    """Ask the target's gate for a shard's file key as ``who``; the evidence sent (or None)."""
    request = _release_request(ctx, who, resource=resource, purpose=purpose, grant=grant,
                               break_glass=break_glass, blob_of=blob_of, evidence=evidence,
                               nbytes=nbytes)
    _send(ctx, who, request)
    return request.evidence


def _release_request(ctx: RunContext, who: str, *, resource: str = ARTIFACT,
                     purpose: str = "load", grant: str | None = None,
                     break_glass: str | None = None, blob_of: str | None = None,
                     evidence: str | None = None, nbytes: int | None = None) -> ReleaseRequest:
    """The release request ``who`` would send (signed evidence, read from the manifest)."""
    from strongroom.access.evidence import make_evidence
    from strongroom.release import ReleaseRequest

    t = ctx.target
    ident = ctx.person(who)
    manifest = t.vault.manifest(resource)
    source = t.vault.manifest(blob_of) if blob_of else manifest
    shard = SHARD if manifest.kind != "document" else manifest.files[0].path
    entry = next(f for f in source.files if f.path == shard)
    if evidence is None:
        evidence = make_evidence(ident.private_key, artifact=manifest.ref, shard=shard,
                                 blob_id=entry.blob, purpose=purpose, grant=grant,
                                 break_glass=break_glass)
    return ReleaseRequest(principal=ident.public.principal,
                          principal_key=ident.public.public_bytes, artifact=manifest.ref,
                          shard=shard, blob_id=entry.blob,
                          nbytes=entry.size if nbytes is None else nbytes,
                          purpose=purpose, evidence=evidence)


def _send(ctx: RunContext, who: str, request: ReleaseRequest) -> None:
    """Send ``request`` to the target's gate as ``who``; what happened is recorded."""
    t = ctx.target

    def go() -> bool:
        key = t.keys.release(request)
        key[:] = bytes(len(key))
        return True

    ctx.vars[f"last_evidence:{who}"] = request.evidence
    released = _try(ctx, f"{ctx.actor(who)} asks the gate for {request.obj} ({request.purpose})",
                    go)
    ctx.vars.setdefault("released", []).append(bool(released))


# -- preconditions --------------------------------------------------------------------


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
        _release(ctx, who, grant=ctx.vars.get(f"grant:{who}"), resource=resource,
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
    _try(ctx, f"{ctx.actor(who)} loads {resource}",
         lambda: t.vault_as(ctx.person(who)).open_weights(resource).close())


@step("present_grant_of")
def present_grant_of(ctx: RunContext, thief: str, victim: str) -> None:
    """``thief`` presents ``victim``'s Grant with a release request signed by the thief."""
    _release(ctx, thief, grant=ctx.vars[f"grant:{victim}"])


@step("replay_release")
def replay_release(ctx: RunContext, victim: str) -> None:
    """A release request ``victim`` sent earlier, captured on the wire, is sent again."""
    captured = ctx.vars[f"last_evidence:{victim}"]
    _release(ctx, victim, evidence=captured)


def _forge(ctx: RunContext, who: str, approval_envs: list[str], *, store: bool) -> str:
    from strongroom.access import statements
    from strongroom.access.grants import build_grant

    env = ctx.vars["request:" + who]
    forged = build_grant(ctx.person(who).private_key, env, approval_envs, now=time.time())
    if store:
        statements.put(ctx.target.store, "grant", forged, subject=ctx.person(who).public.key_id,
                       resource=ARTIFACT, expires=int(time.time()) + 3600)
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
    _release(ctx, who, grant=forged, resource=_resource(ctx, document),
             purpose="read" if document else "load")


@step("dba_insert_grant")
def dba_insert_grant(ctx: RunContext, who: str) -> None:
    """A database administrator writes a Grant row for ``who`` straight into the store."""
    _forge(ctx, who, ctx.vars.get("approvals:" + who, []), store=True)
    _release(ctx, who)  # the gate looks Grants up in the store


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
    _release(ctx, requester)


@step("lapse_vetting")
def lapse_vetting(ctx: RunContext, who: str) -> None:
    """Continuous evaluation: the officers re-enroll ``who`` with lapsed vetting."""
    ctx.target.enroll(ctx.actor(who), vetting="lapsed", serial=2)


@step("revoke_grant")
def revoke_grant(ctx: RunContext, who: str, by: str = "carol") -> None:
    """An approver revokes ``who``'s Grant."""
    from strongroom.access import statements
    from strongroom.access.grants import revoke_grant as revoke

    gid = statements.payload_digest(ctx.vars[f"grant:{who}"])
    reason = f"red-team {ctx.marker}"
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
        _release(ctx, who, grant=ctx.vars.get(f"grant:{who}"), nbytes=nbytes)


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
    _release(ctx, who, grant=ctx.vars.get(f"grant:{who}"), blob_of=OTHER)


@step("read_document")
def read_document(ctx: RunContext, who: str, name: str) -> None:
    """``who`` reads a secret document through the gate."""
    from strongroom.vault.documents import read_document as read

    t = ctx.target
    _try(ctx, f"{ctx.actor(who)} reads {name}-{ctx.marker}",
         lambda: read(t.vault_as(ctx.person(who)), f"{name}-{ctx.marker}"))


@step("request_document_grant")
def request_document_grant(ctx: RunContext, who: str, name: str) -> None:
    """``who`` asks approvers for read access to a document outside their compartments."""
    t = ctx.target
    _try(ctx, f"{ctx.actor(who)} is granted read on {name}-{ctx.marker}",
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

    env = take(ctx.person(who).private_key, ctx.actor(who), ARTIFACT, "load",
               f"{reason} ({ctx.marker})", now=time.time(), window_s=600)
    submit_break_glass(ctx.target.store, env)
    for _ in range(times):
        _release(ctx, who, break_glass=env)


@step("unlist_break_glass")
def unlist_break_glass(ctx: RunContext) -> None:
    """Cleanup: the officers relabel the model with no break-glass list."""
    ctx.target.relabel(ARTIFACT)


# -- exfiltration --------------------------------------------------------------------------


@step("pull_until_stopped")
def pull_until_stopped(ctx: RunContext, who: str, max_pulls: int = 50) -> None:
    """A loop releases the model again and again until the gate stops it."""
    for _ in range(max_pulls):
        _release(ctx, who, grant=ctx.vars.get(f"grant:{who}"))
        if not ctx.vars["released"][-1]:
            break


@step("pull_fraction_of_cap")
def pull_fraction_of_cap(ctx: RunContext, who: str, fraction: float = 0.9) -> None:
    """Release just under ``fraction`` of the principal's cap, then stop (slow exfiltration)."""
    t = ctx.target
    size = t.vault.manifest(ARTIFACT).file(SHARD).size
    pulls = int(t.cap_bytes * fraction) // max(1, size)
    for _ in range(pulls):
        _release(ctx, who, grant=ctx.vars.get(f"grant:{who}"))


@step("touch_canary")
def touch_canary(ctx: RunContext, who: str) -> None:
    """``who`` asks for the key of a plausible-looking decoy model."""
    _release(ctx, who, resource=DECOY)


# -- keys ---------------------------------------------------------------------------------


@step("sealed_key_operations")
def sealed_key_operations(ctx: RunContext) -> None:
    """On a server process whose keyring is sealed, try release, wrap and sign."""
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.services import LocalKeyService

    sealed = LocalKeyService(ctx.target.store, KeysSettings(key_backend="shamir"),
                             actor=ctx.actor("attacker"))
    ctx.vars["sealed_service"] = sealed
    blob = ctx.target.vault.manifest(ARTIFACT).file(SHARD).blob
    from strongroom.release import ReleaseRequest

    ident = ctx.target.officers[0]
    req = ReleaseRequest(principal=ctx.actor("attacker"), principal_key=ident.public.public_bytes,
                         artifact=f"{ARTIFACT}@1", shard=SHARD, blob_id=blob, nbytes=1,
                         purpose="load", evidence="{}")
    _try(ctx, "release on a sealed keyring", lambda: sealed.release(req))
    _try(ctx, "wrap on a sealed keyring", lambda: sealed.wrap_file_key("x" * 16, bytes(16)))
    _try(ctx, "sign a manifest on a sealed keyring", lambda: sealed.sign("manifest", b"forged"))


@step("replay_share")
def replay_share(ctx: RunContext) -> None:
    """A share submission captured in one unseal ceremony is replayed into the next."""
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.services import LocalKeyService

    t = ctx.target
    svc = LocalKeyService(t.store, KeysSettings(key_backend="shamir"),
                          actor=ctx.actor("attacker"))
    ctx.vars["sealed_service"] = svc
    content = ceremony.read_share_file(t.share_files[0], [t.custodians[0]])
    captured = ceremony.build_submission(svc.status(), content)
    svc.reset()  # a new ceremony starts (the next unseal)
    ctx.vars["progress_before"] = svc.status().progress
    _try(ctx, "replayed share submitted to the next ceremony",
         lambda: svc.submit_share(captured))


@step("close_sealed_service")
def close_sealed_service(ctx: RunContext) -> None:
    """Cleanup: forget the extra keyring service."""
    svc = ctx.vars.pop("sealed_service", None)
    if svc is not None:
        svc.seal()


@step("guess_hsm_pin")
def guess_hsm_pin(ctx: RunContext, guesses: int = 8) -> None:
    """In a separate process with its own SoftHSM token, guess the user PIN."""
    from strongroom.redteam.hsm import run_pin_guessing

    result = run_pin_guessing(ctx.target.root / f"hsm-{ctx.marker}", guesses=guesses,
                              actor=ctx.actor("attacker"))
    ctx.vars["hsm"] = result
    ctx.saw(f"{guesses} PIN guesses in a separate process: {result.get('summary', '')}")


# -- audit tampering --------------------------------------------------------------------------


@step("snapshot_audit")
def snapshot_audit(ctx: RunContext) -> None:
    """Take a signed checkpoint (kept outside the database) and snapshot the audit tables."""
    from strongroom.redteam import tamper

    t = ctx.target
    ctx.vars["trusted_checkpoint"] = t.audit.checkpoint(require_quorum=False)
    ctx.vars["audit_snapshot"] = tamper.snapshot(t.store)


@step("edit_audit_entry")
def edit_audit_entry(ctx: RunContext) -> None:
    """A DBA rewrites one past denial into an allow (bytes changed in place)."""
    from strongroom.redteam import tamper

    idx = tamper.edit_entry(ctx.target.store)
    ctx.saw(f"entry #{idx} rewritten from deny to allow")


@step("delete_audit_entry")
def delete_audit_entry(ctx: RunContext) -> None:
    """A DBA deletes one entry from the middle of the log."""
    from strongroom.redteam import tamper

    idx = tamper.delete_entry(ctx.target.store)
    ctx.saw(f"entry #{idx} deleted")


@step("truncate_audit")
def truncate_audit(ctx: RunContext, keep_fraction: float = 0.5) -> None:
    """A DBA cuts the log's tail and rewinds the head consistently (a rollback)."""
    from strongroom.redteam import tamper

    size = tamper.truncate(ctx.target.store, keep_fraction)
    ctx.saw(f"log truncated to {size} entries with a recomputed head")


@step("fork_checkpoint")
def fork_checkpoint(ctx: RunContext) -> None:
    """A compromised log server shows a witness a second, different tree of the same size."""
    from strongroom.redteam import tamper

    t = ctx.target
    witness = tamper.witness_for(t.audit)
    genuine = t.audit.checkpoint(require_quorum=False)
    status, _, _ = witness.add_checkpoint(tamper.add_checkpoint_body(0, [], genuine))
    ctx.vars["witness"] = witness
    ctx.vars["genuine_checkpoint"] = genuine
    ctx.vars["forked_checkpoint"] = tamper.forked_note(t.audit, genuine)
    ctx.saw(f"witness cosigned the genuine checkpoint (HTTP {status}); fork prepared")
    fork_status, _, body = witness.add_checkpoint(
        tamper.add_checkpoint_body(tamper.size_of(genuine), [], ctx.vars["forked_checkpoint"]))
    ctx.saw(f"forked checkpoint shown to the witness: HTTP {fork_status} {body.strip()}")


@step("audit_checkpoint")
def audit_checkpoint(ctx: RunContext) -> None:
    """An operator runs ``strongroom audit checkpoint``: the log signs one over what it holds."""
    from strongroom.redteam import tamper

    note = ctx.target.audit.checkpoint(require_quorum=False)
    ctx.vars["operator_checkpoint"] = note
    ctx.saw(f"checkpoint signed at size {tamper.size_of(note)}")


def _publisher_rounds(ctx: RunContext, what: str, done: Callable[[Any], bool],
                      rounds: int) -> None:
    """Wait (at most ``rounds`` of the publisher's intervals, 10 s) for ``done(publisher)``.

    The deployment's own checkpoint publisher does the work on its interval; the
    step only waits for it, and records when it did not come (the grader decides).
    """
    t = ctx.target
    limit = min(10.0, rounds * t.checkpoint_interval)
    deadline = time.monotonic() + limit
    pub = t.svc.publisher
    while pub is None or not done(pub):
        if time.monotonic() >= deadline:
            ctx.saw(f"after {limit:g} s the checkpoint publisher had not {what}")
            return
        time.sleep(0.02)
    ctx.saw(f"the checkpoint publisher {what}")


@step("await_checkpoint_publisher")
def await_checkpoint_publisher(ctx: RunContext, rounds: int = 6) -> None:
    """Let the deployment's checkpoint publisher sign what the log holds now (its interval)."""
    size = ctx.target.audit.size()
    _publisher_rounds(ctx, f"signed a checkpoint of size {size}",
                      lambda pub: pub.status().signed_size >= size, rounds)


@step("dba_truncate_tail")
def dba_truncate_tail(ctx: RunContext) -> None:
    """A DBA deletes the entries after the operator's checkpoint and recomputes nodes and head
    with plain SHA-256 (issue 15's attack; the operator's checkpoint still verifies)."""
    from strongroom.redteam import tamper

    t = ctx.target
    keep = tamper.size_of(ctx.vars["operator_checkpoint"])
    size = t.audit.size()
    tamper.truncate_tail(t.store, keep)
    ctx.vars["truncated"] = (keep, size)
    ctx.saw(f"entries {keep}..{size - 1} deleted; nodes and head recomputed with SHA-256")


@step("await_rollback_check")
def await_rollback_check(ctx: RunContext, rounds: int = 6) -> None:
    """Let the deployment's checkpoint publisher run its next rounds over the changed log."""
    _publisher_rounds(ctx, "found the log rolled back",
                      lambda pub: pub.status().rollback is not None, rounds)


@step("hold_write_lock_during_release")
def hold_write_lock_during_release(ctx: RunContext, who: str, hold_factor: float = 4.0) -> None:
    """Another connection holds SQLite's write lock (``BEGIN IMMEDIATE``) for ``hold_factor``
    times the target's bound while ``who`` releases with their Grant; once the holder lets go,
    ``who`` releases again (the service is back)."""
    import sqlite3
    import threading

    from strongroom.redteam.target import LOCK_BOUND_S

    t = ctx.target
    path = t.store.url.split("///", 1)[1]
    hold = hold_factor * LOCK_BOUND_S
    locked, failed = threading.Event(), []

    def holder() -> None:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            try:
                conn.execute("BEGIN IMMEDIATE")
                locked.set()
                time.sleep(hold)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            failed.append(exc)
            locked.set()

    grant = ctx.vars.get(f"grant:{who}")
    request = _release_request(ctx, who, grant=grant)  # the client's reads, before the stall
    thread = threading.Thread(target=holder, name=f"lock-holder-{ctx.marker}", daemon=True)
    thread.start()
    if not locked.wait(30) or failed:
        raise StrongroomError(f"could not take the database's write lock: {failed}", obj=path)
    ctx.saw(f"another connection holds the write lock for {hold:g} s")
    start = time.monotonic()
    _send(ctx, who, request)
    ctx.saw(f"the release under the lock answered after {time.monotonic() - start:.2f} s")
    thread.join(hold + 30)
    _release(ctx, who, grant=grant)


@step("restore_audit")
def restore_audit(ctx: RunContext) -> None:
    """Cleanup: put the audit tables back exactly as snapshotted."""
    from strongroom.redteam import tamper

    snap = ctx.vars.pop("audit_snapshot", None)
    if snap is not None:
        tamper.restore(ctx.target.store, snap)


# -- supply chain ------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


@step("import_malicious_pickle")
def import_malicious_pickle(ctx: RunContext) -> None:
    """Import a checkpoint whose pickle calls ``os.system`` when loaded."""
    from strongroom.supplychain.imports import import_checked

    src = ctx.target.root / f"evil-{ctx.marker}"
    src.mkdir()
    (src / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload()}, protocol=2))
    ctx.vars["evil_name"] = f"evil-{ctx.marker}"
    ctx.vars["evil_dir"] = src
    _try(ctx, "import of a poisoned pickle",
         lambda: import_checked(ctx.target.vault, src, f"evil-{ctx.marker}", convert=True))


@step("remove_evil_dir")
def remove_evil_dir(ctx: RunContext) -> None:
    """Cleanup: delete the attacker's model directory."""
    src = ctx.vars.pop("evil_dir", None)
    if isinstance(src, Path):
        shutil.rmtree(src, ignore_errors=True)


@step("tampered_airgap_bundle")
def tampered_airgap_bundle(ctx: RunContext, who: str) -> None:
    """Export an approved bundle, flip one byte of a blob on the media, import it."""
    from strongroom.crypto.age import X25519Identity
    from strongroom.supplychain.airgap import (
        OfficerQuorum,
        TransferRequest,
        export_bundle,
        receive_bundle,
        sign_approval,
    )

    t = ctx.target
    exporter = ctx.person(who)
    transfer = X25519Identity.generate()
    media = t.root / f"usb-{ctx.marker}"
    bundle = media / "bundle"
    req = TransferRequest("transfer.export", secrets.token_hex(16), f"{ARTIFACT}@1", "enclave-b")
    exporter_vault = t.vault_as(exporter)
    export_bundle(exporter_vault, ARTIFACT, bundle, enclave="enclave-b",
                  recipient=transfer.recipient, sender=exporter,
                  approvals=[sign_approval(t.officers[0], req)],
                  approver=OfficerQuorum.from_vault(t.vault), bundle_id=req.bundle_id)
    tampered = media / f"tampered-{ctx.marker}"
    shutil.copytree(bundle, tampered)
    blob = next(p for p in sorted((tampered / "blobs").rglob("*")) if p.is_file())
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    ctx.vars["media"] = media
    _try(ctx, "import of the tampered bundle",
         lambda: receive_bundle(t.vault, tampered, sender=exporter.public, enclave="enclave-b",
                                identity=transfer))


@step("remove_media")
def remove_media(ctx: RunContext) -> None:
    """Cleanup: delete the removable-media directory."""
    media = ctx.vars.pop("media", None)
    if isinstance(media, Path):
        shutil.rmtree(media, ignore_errors=True)


# -- gateway -------------------------------------------------------------------------------------


def _gateway(ctx: RunContext, release: str, owners: list[Any], callers: list[Any]) -> Any:
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.auth import AllowList, SignedRequestAuth
    from strongroom.gateway.server import start_gateway

    t = ctx.target
    svc = t.vault_as(t.people["gateway-svc"])
    return start_gateway(svc, ARTIFACT, release=release, code_owners=[o.public for o in owners],
                         threshold=2, auth=SignedRequestAuth([c.public for c in callers]),
                         authorizer=AllowList({c.name for c in callers}),
                         alerts=AuditAlertSink(t.audit))


@step("start_gateway_unsigned")
def start_gateway_unsigned(ctx: RunContext) -> None:
    """Start the gateway with a release the code owners did not sign (an attacker's key)."""
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.keys.identity import Identity

    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    attacker = Identity.generate(ctx.actor("attacker"))
    forged = add_signature(sign_release([attacker]), owners[0])
    t = ctx.target
    svc = t.vault_as(t.people["gateway-svc"])
    svc.actor = ctx.actor("gateway")
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.auth import AllowList, SignedRequestAuth
    from strongroom.gateway.server import start_gateway

    def go() -> None:
        gw = start_gateway(svc, ARTIFACT, release=forged, code_owners=[o.public for o in owners],
                           threshold=2, auth=SignedRequestAuth([]), authorizer=AllowList(()),
                           alerts=AuditAlertSink(t.audit))
        gw.close()

    _try(ctx, "gateway start with 1 owner + attacker signature", go)


@step("extraction_attack")
def extraction_attack(ctx: RunContext, batches: int = 6, batch: int = 24) -> None:
    """An ``infer``-only caller sends batches of near-random strings (output-space extraction)."""
    import random
    import string

    from strongroom.gateway.auth import sign_request
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.gateway.server import EMBEDDINGS_PATH
    from strongroom.keys.identity import Identity

    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    release = add_signature(sign_release([owners[0]]), owners[1])
    caller = Identity.generate(ctx.actor("extractor"))
    gw = _gateway(ctx, release, owners, [caller])
    rng = random.Random(ctx.marker)  # noqa: S311 - attack inputs, not secrets
    codes = []
    try:
        for _ in range(batches):
            texts = ["".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
                     for _ in range(batch)]
            body = json.dumps({"input": texts}).encode()
            headers = sign_request(caller, "POST", EMBEDDINGS_PATH, body)
            codes.append(gw.handle("POST", EMBEDDINGS_PATH, headers, body, "10.9.8.7").status)
    finally:
        gw.close()
    ctx.saw(f"extraction batches answered with HTTP {codes}")


# -- the API server and its console -----------------------------------------------------------


@step("server_release_replay")
def server_release_replay(ctx: RunContext, victim: str) -> None:
    """``victim`` releases a key over the signed API; the captured request is sent again."""
    from strongroom.access.evidence import make_evidence
    from strongroom.server.signatures import sign_request

    t = ctx.target
    client = t.server()
    ident = ctx.person(victim)
    manifest = t.vault.manifest(ARTIFACT)
    entry = manifest.file(SHARD)
    evidence = make_evidence(ident.private_key, artifact=manifest.ref, shard=SHARD,
                             blob_id=entry.blob, purpose="load",
                             grant=ctx.vars.get(f"grant:{victim}"))
    body = json.dumps({"artifact": manifest.ref, "shard": SHARD, "purpose": "load",
                       "evidence": evidence}).encode()
    headers = {**sign_request(ident.private_key, "POST", "/v1/keys/release", body),
               "Content-Type": "application/json"}
    first = client.post("/v1/keys/release", content=body, headers=headers)
    ctx.vars["replay_after"] = t.audit.size()
    ctx.saw(f"{ctx.actor(victim)}'s signed release over the API: HTTP {first.status_code}")
    for attempt in range(3):
        again = client.post("/v1/keys/release", content=body, headers=headers)
        ctx.saw(f"replay {attempt + 1} of the captured request: HTTP {again.status_code} "
                f"{again.json().get('error', '')[:80]}")


@step("console_csrf_approve")
def console_csrf_approve(ctx: RunContext, victim: str, requester: str) -> None:
    """A page on another site makes the signed-in approver's browser start an approval."""
    from strongroom.server.console.sessions import COOKIE, Sessions

    t = ctx.target
    client = t.server()
    approver = ctx.person(victim)
    value, _ = Sessions(t.store).new(approver.public.key_id)  # the victim is signed in
    ctx.vars["csrf_session"] = value
    digest = ctx.vars["digest:" + requester]
    body = json.dumps({"request": digest}).encode()
    cookie = {"Cookie": f"{COOKIE}={value}", "Content-Type": "application/json"}
    attempts = {
        "cross-site Origin": {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        "Sec-Fetch-Site cross-site, no Origin": {"Sec-Fetch-Site": "cross-site"},
        "no Origin, no token (old browser)": {},
    }
    for label, extra in attempts.items():
        r = client.post("/webauthn/approve/begin", content=body, headers={**cookie, **extra})
        ctx.saw(f"CSRF POST ({label}) to /webauthn/approve/begin: HTTP {r.status_code}")


@step("console_signin_flood")
def console_signin_flood(ctx: RunContext, victim: str, attempts: int = 25) -> None:
    """Someone holding the victim's credential id (from a log) but not the key tries again and
    again to sign in to the console, from one address."""
    import base64
    import hashlib
    import os
    from urllib.parse import urlsplit

    from starlette.testclient import TestClient

    from strongroom.redteam.target import console_origin
    from strongroom.server.console.sessions import COOKIE

    t = ctx.target
    origin = console_origin()
    rp_id = os.environ.get("STRONGROOM_CONSOLE_RP_ID") or urlsplit(origin).hostname or "localhost"
    who = t.reader().view().by_name(ctx.actor(victim))
    if who is None or not who.security_keys:
        raise StrongroomError("the victim has no console security key", obj=victim)
    credential = who.security_keys[0].id
    attacker = TestClient(t.server().app, base_url=origin,
                          client=(f"attacker.{ctx.marker}", 40000))
    page = attacker.get("/console/sign-in")
    csrf = page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
    # The session cookie is Secure; a browser sends it to http://localhost, httpx does not.
    headers = {"X-CSRF-Token": csrf, "Origin": origin,
               "Cookie": f"{COOKIE}={page.cookies.get(COOKIE)}"}

    def b64url(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    statuses: list[int] = []
    for _ in range(attempts):
        begin = attacker.post("/webauthn/login/begin", json={"name": ctx.actor(victim)},
                              headers=headers)
        if begin.status_code != 200:
            statuses.append(begin.status_code)
            continue
        client_data = json.dumps({"type": "webauthn.get", "origin": origin,
                                  "challenge": begin.json()["options"]["challenge"]}).encode()
        auth_data = hashlib.sha256(rp_id.encode()).digest() + b"\x05" + (7).to_bytes(4, "big")
        forged = {"id": credential, "rawId": credential, "type": "public-key",
                  "response": {"clientDataJSON": b64url(client_data),
                               "authenticatorData": b64url(auth_data),
                               "signature": b64url(secrets.token_bytes(64))}}
        done = attacker.post("/webauthn/login/finish", json={"credential": forged},
                             headers=headers)
        statuses.append(done.status_code)
    ctx.vars["flood_statuses"] = statuses
    ctx.saw(f"{attempts} forged sign-ins with {ctx.actor(victim)}'s credential id: "
            f"{statuses.count(200)} accepted, {statuses.count(403)} refused (403), "
            f"{statuses.count(429)} throttled (429)")


@step("request_marked")
def request_marked(ctx: RunContext, who: str, action: str = "load") -> None:
    """``who`` files an access request for the model (its digest is kept)."""
    env, digest = ctx.target.request(ctx.actor(who), ARTIFACT, action)
    ctx.vars["request:" + who] = env
    ctx.vars["digest:" + who] = digest

"""Access routes: requests, approvals, denials, Grants, revocations, break-glass (``/v1/access/*``).

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. Every statement is a DSSE envelope the caller signed; it is verified here
as the CLI verifies it, stored through :mod:`strongroom.access`, and checked again
by the release gate. The server adds no authority of its own.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from strongroom.access.restrictions import journal_details
from strongroom.access.statements import Stored, find_by_prefix
from strongroom.artifacts import ArtifactRef
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, NotFound
from strongroom.server import models as M
from strongroom.server.auth import PrincipalKeys, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.keyserver_push import push_revocation
from strongroom.server.signatures import Caller

__all__ = ["build_router"]

_DIGEST = r"^[0-9a-f]{8,64}$"


def _verify_own(env: str, kind: str, caller: Caller) -> dict[str, Any]:
    from strongroom.access import statements

    try:
        return statements.VerifyCache().verify(env, kind, {caller.key_id: caller.public_key},
                                               obj=f"{kind} statement")
    except IntegrityError as exc:
        raise AccessDenied(f"the {kind} is not signed by the caller's key: {exc.message}",
                           obj=f"{kind} statement",
                           remedy="sign statements with the identity that signs the request"
                           ) from None


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``access`` routes over ``ctx``."""
    r = APIRouter(prefix="/v1/access", tags=["access"])

    def engine() -> Any:
        from strongroom.access.policy import PolicyEngine, current_policy

        return PolicyEngine(current_policy(ctx.directory_reader())[0])

    def resource(name: str, directory: Any) -> Any:
        from strongroom.access.evidence import describe_resource

        ref = ArtifactRef.parse(name, obj="resource")
        m = ctx.vault().manifest(ref.name, ref.version)
        res = describe_resource(m.ref, m.kind, m.compartments, m.metadata)
        return res.labelled(directory.label(m.name))

    def request_out(env: str, directory: Any = None) -> M.RequestOut:
        from strongroom.access import statements
        from strongroom.access.grants import parse_approval

        st = statements.unverified_payload(env)
        digest = statements.payload_digest(env)
        approvals = statements.envelopes(ctx.store, "approval", subject=digest,
                                         newest_first=False)
        action, name = str(st.get("action", "")), str(st.get("resource", ""))
        try:
            rule = str((directory or ctx.directory()).rule(name, action))
        except InvalidInput:
            rule = ""
        return M.RequestOut(
            digest=digest, requester=str(st.get("requester", "")),
            action=action, resource=name, purpose=str(st.get("purpose", "")),
            approvals=[parse_approval(a).approver for a in approvals],
            denied=bool(statements.envelopes(ctx.store, "denial", subject=digest)),
            envelope=env, approval_envelopes=approvals,
            duration_s=int(st.get("duration_s", 0) or 0),
            byte_budget=int(st.get("byte_budget", 0) or 0), rule=rule)

    @r.get("/requests", response_model=list[M.RequestOut])
    def list_requests(request: Request) -> list[M.RequestOut]:
        """Stored access requests with their approvals."""
        from strongroom.access import statements

        caller_of(request)
        directory = ctx.directory()
        return [request_out(env, directory) for env in statements.envelopes(ctx.store, "request")]

    @r.get("/requests/{digest}", response_model=M.RequestOut)
    def get_request(request: Request,
                    digest: Annotated[str, Path(pattern=_DIGEST)]) -> M.RequestOut:
        """One request (by digest or a unique prefix of at least 8 characters)."""
        caller_of(request)
        return request_out(_find(ctx, "request", digest).envelope)

    @r.post("/requests", response_model=M.StoredOut, status_code=201)
    def submit_request(request: Request, body: M.Envelope) -> M.StoredOut:
        """File a request signed by the caller; refused if policy forbids the caller outright."""
        from strongroom.access.approvals import AccessRequest, require_enrolled
        from strongroom.access.approvals import submit_request as store_request

        caller = caller_of(request)
        req = AccessRequest.from_statement(_verify_own(body.envelope, "request", caller))
        if req.requester_key != caller.key_id or req.requester != caller.name:
            raise AccessDenied("the request names someone other than the caller",
                               obj=req.resource)
        directory = ctx.directory()
        me = require_enrolled(directory, caller.key_id, caller.name, "a request",
                              obj=req.resource)
        res = resource(req.resource, directory)
        vault = ctx.vault(actor=caller.name)
        if not engine().decide(me, req.action, res, time.time()).allowed:
            vault.record("access.request", res.name, "deny", reason="policy",
                         access_action=req.action)
            raise AccessDenied(f"policy denies {me.name} {req.action} on {res.name} "
                               "(clearance, compartments or vetting)", obj=res.name,
                               remedy="ask the security officers about your enrollment")
        digest = store_request(ctx.store, body.envelope)
        vault.record("access.request", res.name, "allow", reason=req.purpose,
                     access_action=req.action, request=digest)
        return M.StoredOut(digest=digest, kind="request")

    def _submit_verdict(request: Request, digest: str, body: M.Envelope,
                        kind: str) -> M.StoredOut:
        from strongroom.access.approvals import Approval, require_enrolled, submit_approval

        caller = caller_of(request)
        full = _find(ctx, "request", digest).digest
        a = Approval.from_statement(_verify_own(body.envelope, kind, caller))
        if a.approver_key != caller.key_id or a.request != full:
            raise AccessDenied(f"the {kind} is not the caller's for this request",
                               obj=full[:16])
        directory = ctx.directory()
        require_enrolled(directory, caller.key_id, caller.name, f"a {kind}",
                         obj=f"request {full[:16]}")
        stored = submit_approval(ctx.store, body.envelope, kind=kind, directory=directory)
        ctx.vault(actor=caller.name).record(
            "access.approve" if kind == "approval" else "access.deny", full[:16],
            "allow" if kind == "approval" else "deny", reason=a.reason or "", request=full,
            **(journal_details(kind, body.envelope, subject=full) if kind == "denial" else {}))
        return M.StoredOut(digest=stored, kind=kind)

    @r.post("/requests/{digest}/approvals", response_model=M.StoredOut, status_code=201)
    def submit_approval(request: Request, digest: Annotated[str, Path(pattern=_DIGEST)],
                        body: M.Envelope) -> M.StoredOut:
        """Store an approval the caller signed; the Grant is then signed and posted by a party."""
        return _submit_verdict(request, digest, body, "approval")

    @r.post("/requests/{digest}/denials", response_model=M.StoredOut, status_code=201)
    def submit_denial(request: Request, digest: Annotated[str, Path(pattern=_DIGEST)],
                      body: M.Envelope) -> M.StoredOut:
        """Store a denial the caller signed (no grant is issued while it stands)."""
        return _submit_verdict(request, digest, body, "denial")

    def grant_out(g: Any) -> M.GrantOut:
        from strongroom.runtime.listings import grant_row

        return M.GrantOut(**grant_row(g))

    @r.get("/grants", response_model=list[M.GrantStateOut])
    def list_grants(request: Request) -> list[dict[str, Any]]:
        """Grants whose signatures verify, each with its state (active, revoked, expired,
        budget spent) derived as the gate derives it."""
        from strongroom.runtime.listings import grant_rows

        caller_of(request)
        directory = ctx.directory()
        pins = ctx.officer_pins()
        return grant_rows(ctx.store, directory, engine(), lambda name: resource(name, directory),
                          pins.ed25519, now=time.time(), officer_mldsa=pins.mldsa)

    @r.post("/grants", response_model=M.GrantOut, status_code=201)
    def submit_grant(request: Request, body: M.Envelope) -> M.GrantOut:
        """Store a Grant the caller (requester or an approver) signed, if it verifies now."""
        from strongroom.access import statements
        from strongroom.access.grants import admit_grant, verify_grant

        caller = caller_of(request)
        if caller.key_id not in statements.signer_ids(body.envelope):
            raise AccessDenied("the grant is not signed by the caller", obj="grant")
        try:
            claimed = statements.unverified_payload(
                str(statements.unverified_payload(body.envelope)["request"]))
            name = str(claimed["resource"])
        except (KeyError, InvalidInput):
            raise AccessDenied("the grant is malformed", obj="grant") from None
        directory = ctx.directory()
        res = resource(name, directory)
        eng, now = engine(), time.time()
        g = verify_grant(body.envelope, directory, eng, res, now=now)
        if statements.envelopes(ctx.store, "denial", subject=g.request_digest):
            raise AccessDenied("the request was denied", obj=g.request_digest[:16],
                               remedy="file a new request")
        admit_grant(ctx.store, body.envelope, g, directory, eng, res, now=now)
        ctx.vault(actor=caller.name).record(
            "access.grant", res.name, "allow", reason=g.request.purpose, grant=g.grant_id,
            approvers=list(g.approvers), access_action=g.request.action,
            requester=g.request.requester, expires=g.expires, byte_budget=g.byte_budget)
        return grant_out(g)

    @r.post("/grants/{grant_id}/revocations", response_model=M.StoredOut, status_code=201)
    def revoke(request: Request, grant_id: Annotated[str, Path(pattern=_DIGEST)],
               body: M.Envelope) -> M.StoredOut:
        """Store a grant revocation the caller signed; the gate refuses the grant from then on."""
        from strongroom.access import statements

        caller = caller_of(request)
        stored = _find(ctx, "grant", grant_id)
        full = stored.digest
        st = _verify_own(body.envelope, "grant-revocation", caller)
        if st.get("grant") != full or st.get("by_key") != caller.key_id:
            raise AccessDenied("the revocation names another grant or signer", obj=full[:16])
        _require_entitled(ctx, caller, stored.envelope, full)
        digest = statements.put(ctx.store, "grant-revocation", body.envelope, subject=full)
        ctx.vault(actor=caller.name).record(
            "access.revoke", full[:16], "allow", reason=str(st.get("reason", "")), grant=full,
            **journal_details("grant-revocation", body.envelope, subject=full))
        pushed = push_revocation(ctx, caller.name, "grant-revocation", body.envelope)
        return M.StoredOut(digest=digest, kind="grant-revocation", key_servers=pushed)

    @r.post("/break-glass", response_model=M.StoredOut, status_code=201)
    def break_glass(request: Request, body: M.Envelope) -> M.StoredOut:
        """Store a break-glass statement the caller signed: a critical alert at once.

        As on the vault host, it is stored and audited as taken; whether it holds (the
        caller listed on the label, the window, policy) the gate decides at each release.
        """
        from strongroom.access import statements
        from strongroom.access.breakglass import (
            ALERT_ACTION,
            BreakGlass,
            require_listed,
            submit_break_glass,
        )

        caller = caller_of(request)
        st = _verify_own(body.envelope, "break-glass", caller)
        bg = BreakGlass.from_statement(st, statements.payload_digest(body.envelope))
        if bg.principal != caller.name or bg.principal_key != caller.key_id:
            raise AccessDenied("the break-glass names someone other than the caller",
                               obj=bg.resource)
        require_listed(ctx.directory(), bg.resource, caller.name, caller.key_id)
        digest = submit_break_glass(ctx.store, body.envelope)
        ctx.vault(actor=caller.name).record(
            ALERT_ACTION, bg.resource, "allow", reason=bg.reason, severity="critical",
            break_glass=digest, access_action=bg.action, window_s=bg.expires - bg.issued)
        return M.StoredOut(digest=digest, kind="break-glass")

    @r.get("/break-glass", response_model=list[M.BreakGlassOut])
    def list_break_glass(request: Request) -> list[dict[str, Any]]:
        """Every break-glass access and who reviewed it (``access break-glass --pending``)."""
        from strongroom.runtime.listings import break_glass_rows

        caller_of(request)
        return break_glass_rows(ctx.store, ctx.directory())

    @r.post("/break-glass/{bg_id}/reviews", response_model=M.StoredOut, status_code=201)
    def review_break_glass(request: Request, bg_id: Annotated[str, Path(pattern=_DIGEST)],
                           body: M.Envelope) -> M.StoredOut:
        """Store a review of a break-glass access the caller signed (not the taker's own)."""
        from strongroom.access import statements
        from strongroom.access.approvals import require_enrolled
        from strongroom.access.breakglass import submit_review

        caller = caller_of(request)
        taken = _find(ctx, "break-glass", bg_id)
        st = _verify_own(body.envelope, "review", caller)
        if st.get("break_glass") != taken.digest or st.get("reviewer_key") != caller.key_id:
            raise AccessDenied("the review names another break-glass or reviewer",
                               obj=taken.digest[:16])
        require_enrolled(ctx.directory(), caller.key_id, caller.name, "a review",
                         obj=f"break-glass {taken.digest[:16]}")
        if statements.unverified_payload(taken.envelope).get("principal_key") == caller.key_id:
            raise AccessDenied(f"{caller.name} took this break-glass and cannot review it",
                               obj=taken.digest[:16],
                               remedy="two other security officers review it")
        digest = submit_review(ctx.store, body.envelope)
        ctx.vault(actor=caller.name).record(
            "access.break-glass.review", taken.digest[:16], "allow",
            reason=str(st.get("verdict", "")), break_glass=taken.digest,
            **journal_details("review", body.envelope, subject=taken.digest))
        return M.StoredOut(digest=digest, kind="review")

    @r.get("/caps", response_model=list[M.CapsOut])
    def caps(request: Request) -> list[dict[str, Any]]:
        """Holders of valid Grants per artifact and action, against the caps."""
        from strongroom.access.grants import valid_grants
        from strongroom.runtime.listings import caps_rows

        caller = caller_of(request)
        directory = ctx.directory()
        grants = valid_grants(ctx.store, directory, engine(),
                              lambda name: resource(name, directory), now=time.time())
        return caps_rows(grants, (a.name for a in ctx.vault(actor=caller.name).list_artifacts()))

    return r


def _require_entitled(ctx: ServerContext, caller: Caller, grant_env: str, grant_id: str) -> None:
    """AccessDenied unless the caller's revocation of the grant would count at the gate:
    its requester, one of its approvers, a security officer (role) or a pinned officer."""
    from strongroom.access import statements

    if caller.officer:
        return
    person = ctx.directory(key_ids=[caller.key_id], resources=[]).principal(caller.key_id)
    if person is not None and "security-officers" in person.roles:
        return
    try:
        st = statements.unverified_payload(grant_env)
        keys = {str(statements.unverified_payload(str(st["request"])).get("requester_key"))}
        keys |= {str(statements.unverified_payload(str(a)).get("approver_key"))
                 for a in st.get("approvals", [])}
    except (KeyError, InvalidInput):
        keys = set()
    if caller.key_id not in keys:
        raise AccessDenied(f"{caller.name} is neither the grant's requester nor one of its "
                           "approvers nor a security officer: the revocation would not count",
                           obj=grant_id[:16],
                           remedy="ask the requester, an approver or a security officer")


def _find(ctx: ServerContext, kind: str, prefix: str) -> Stored:
    """The one stored statement of ``kind`` whose digest starts with ``prefix``."""
    found = find_by_prefix(ctx.store, kind, prefix, limit=2)
    if not found:
        raise NotFound(f"no {kind} statement {prefix}", obj=prefix)
    if len(found) > 1:
        raise InvalidInput(f"several {kind} statements match {prefix!r}", obj=prefix,
                           remedy="give more characters of the id")
    return found[0]

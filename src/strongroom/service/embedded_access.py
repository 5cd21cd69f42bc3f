"""The embedded service's access operations: requests, approvals, Grants, caps, break-glass.

:class:`EmbeddedAccess` is the half of
:class:`~strongroom.service.embedded.EmbeddedService` that signs with
``STRONGROOM_IDENTITY`` and works on the local vault's statements through
:func:`~strongroom.service.access_context.open_context`. Every operation
returns the rows :class:`~strongroom.service.protocol.Service` documents and
records its decision in the audit log; nothing here prints.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from strongroom.artifacts import ArtifactRef, base_name
from strongroom.errors import AccessDenied, InvalidInput
from strongroom.runtime.listings import grant_row
from strongroom.service.access_context import (
    Context,
    find_envelope,
    find_statement,
    open_context,
)

if TYPE_CHECKING:
    from strongroom.access.directory import Directory

__all__ = ["EmbeddedAccess", "grant_row"]

Row = dict[str, Any]


def _try_issue(ctx: Context, digest: str) -> tuple[Row | None, str | None]:
    """Issue the Grant of request ``digest`` if its rule is met: (GrantOut, None) or (None, why)."""
    from strongroom.access import statements
    from strongroom.access.approvals import AccessRequest
    from strongroom.access.grants import issue_grant
    from strongroom.errors import ApprovalRequired

    store = ctx.vault.store
    envs = statements.envelopes(store, "request", subject=digest)
    if not envs:
        raise InvalidInput("no such request", obj=digest[:16])
    req = AccessRequest.from_statement(statements.unverified_payload(envs[0]))
    directory = ctx.directory()
    res = ctx.resource(req.resource, directory)
    try:
        _, grant = issue_grant(store, ctx.me.private_key, digest, directory, ctx.engine(), res,
                               now=time.time(), pq=ctx.me.mldsa_key)
    except ApprovalRequired as exc:
        return None, exc.message
    ctx.vault.record("access.grant", res.name, "allow", reason=req.purpose,
                     grant=grant.grant_id, approvers=list(grant.approvers),
                     access_action=req.action, requester=req.requester, expires=grant.expires,
                     byte_budget=grant.byte_budget)
    return grant_row(grant), None


def _enrolled_on(ctx: Context, request_id: str, what: str) -> tuple[str, str, Directory]:
    """The request ``request_id`` names (digest, envelope) and the directory, once the
    signer is found enrolled to give ``what`` (an approval, a denial) on it."""
    from strongroom.access.approvals import require_enrolled

    digest, env = find_envelope(ctx.vault.store, "request", request_id)
    directory = ctx.directory()
    require_enrolled(directory, ctx.me.public.key_id, ctx.name, what,
                     obj=f"request {digest[:16]}")
    return digest, env, directory


class EmbeddedAccess:
    """Access operations on the local vault, signed as ``STRONGROOM_IDENTITY``."""

    def access_request(self, resource: str, *, purpose: str, action: str, duration_s: int,
                       byte_budget: int, attested: str = "") -> Row:
        """File a signed request (refused, and audited, when policy denies it)."""
        from strongroom.access.approvals import AccessRequest, require_enrolled, submit_request

        vault, ctx = open_context()
        with vault:
            directory = ctx.directory()
            res = ctx.resource(resource, directory)
            me = require_enrolled(directory, ctx.me.public.key_id, ctx.name, "a request",
                                  obj=res.name)
            decision = ctx.engine().decide(me, action, res, time.time())
            if not decision.allowed:
                vault.record("access.request", res.name, "deny", reason="policy",
                             access_action=action)
                raise AccessDenied(f"policy denies {me.name} {action} on {res.name} "
                                   "(clearance, compartments or vetting)", obj=res.name,
                                   remedy="ask the security officers about your enrollment")
            target = resource if ArtifactRef.parse(resource).version is not None \
                else base_name(res.name)
            req = AccessRequest.new(me.name, me.key_id, target, action, purpose, duration_s,
                                    byte_budget, time.time(), attested=attested)
            digest = submit_request(vault.store, req.sign(ctx.me.private_key, pq=ctx.me.mldsa_key))
            vault.record("access.request", res.name, "allow", reason=purpose,
                         access_action=action, request=digest)
            return {"digest": digest, "requester": me.name, "action": action,
                    "resource": target, "duration_s": req.duration_s,
                    "byte_budget": req.byte_budget,
                    "rule": str(directory.rule(res.name, action)), "attested": req.attested}

    def access_approve(self, request_id: str, *, ttl_s: int) -> Row:
        """Sign an approval; issue the Grant once the rule is met."""
        from strongroom.access.approvals import approve, submit_approval

        vault, ctx = open_context()
        with vault:
            digest, env, directory = _enrolled_on(ctx, request_id, "an approval")
            submit_approval(vault.store, approve(ctx.me.private_key, ctx.name, env,
                                                 now=time.time(), ttl_s=ttl_s,
                                                 pq=ctx.me.mldsa_key),
                            directory=directory)
            vault.record("access.approve", digest[:16], "allow", request=digest)
            grant, not_yet = _try_issue(ctx, digest)
            return {"approver": ctx.name, "request": digest, "grant": grant,
                    "not_yet": not_yet}

    def access_deny(self, request_id: str, *, reason: str) -> Row:
        """Sign a denial: no Grant is issued for the request."""
        from strongroom.access.approvals import deny, submit_approval
        from strongroom.access.restrictions import journal_details

        vault, ctx = open_context()
        with vault:
            digest, env, directory = _enrolled_on(ctx, request_id, "a denial")
            denial = deny(ctx.me.private_key, ctx.name, env, now=time.time(), reason=reason,
                          pq=ctx.me.mldsa_key)
            submit_approval(vault.store, denial, kind="denial", directory=directory)
            vault.record("access.deny", digest[:16], "deny", reason=reason, request=digest,
                         **journal_details("denial", denial, subject=digest))
            return {"denier": ctx.name, "request": digest, "reason": reason}

    def access_grants(self) -> list[Row]:
        """Grants whose signatures verify, each with its state as the gate derives it."""
        from strongroom.runtime.listings import grant_rows

        vault, ctx = open_context()
        with vault:
            directory = ctx.directory()
            return grant_rows(vault.store, directory, ctx.engine(),
                              lambda name: ctx.resource(name, directory), ctx.officers,
                              now=time.time(), officer_mldsa=ctx.pins.mldsa)

    def access_show(self, request_id: str) -> Row:
        """The request ``request_id`` names, its signature verified under the requester's
        enrollment, with its digest's short code."""
        from strongroom.access import statements
        from strongroom.errors import IntegrityError
        from strongroom.runtime.listings import request_shown

        vault, ctx = open_context()
        with vault:
            digest, env = find_envelope(vault.store, "request", request_id)
            kid = str(statements.unverified_payload(env).get("requester_key", ""))
            who = ctx.directory().principal(kid)
            if who is None:
                raise IntegrityError(f"request {digest[:16]} is signed by a key no officer "
                                     "enrolled", obj=digest[:16], remedy="do not approve it")
            ctx.reader.cache.verify(env, "request", {kid: who.public_key},
                                    obj=f"request {digest[:16]}", pq=who.pq_pins())
            return request_shown(env)

    def access_requests(self) -> list[Row]:
        """Requests without a Grant, with who approved so far."""
        from strongroom.access import statements
        from strongroom.access.approvals import AccessRequest
        from strongroom.access.grants import parse_approval

        vault, ctx = open_context()
        with vault:
            directory = ctx.directory()
            rows = []
            for env in statements.envelopes(vault.store, "request"):
                st = statements.unverified_payload(env)
                digest = statements.payload_digest(env)
                if statements.envelopes(vault.store, "grant", subject=str(st["requester_key"]),
                                        resource=base_name(str(st["resource"]))) and any(
                        statements.unverified_payload(g).get("request") == env
                        for g in statements.envelopes(vault.store, "grant")):
                    continue
                req = AccessRequest.from_statement(st)
                rows.append({"digest": digest, "requester": req.requester,
                             "action": req.action, "resource": req.resource,
                             "purpose": req.purpose,
                             "approvals": [parse_approval(a).approver for a in
                                           statements.envelopes(vault.store, "approval",
                                                                subject=digest)],
                             "duration_s": req.duration_s, "byte_budget": req.byte_budget,
                             "rule": str(directory.rule(req.resource, req.action))})
            return rows

    def access_caps(self) -> list[Row]:
        """Holders of valid Grants per artifact and action, against the caps."""
        from strongroom.access.grants import valid_grants
        from strongroom.runtime.listings import caps_rows

        vault, ctx = open_context()
        with vault:
            directory = ctx.directory()
            grants = valid_grants(vault.store, directory, ctx.engine(),
                                  lambda name: ctx.resource(name, directory), now=time.time())
            return caps_rows(grants, (a.name for a in vault.list_artifacts()))

    def access_revoke(self, grant_id: str, *, reason: str) -> Row:
        """Revoke a Grant (its holder, its approvers or officers)."""
        from strongroom.access.grants import revoke_grant
        from strongroom.access.restrictions import journal_details

        vault, ctx = open_context()
        with vault:
            digest = find_statement(vault.store, "grant", grant_id)
            env = revoke_grant(vault.store, ctx.me.private_key, ctx.name, digest, reason,
                               now=time.time(), pq=ctx.me.mldsa_key)
            vault.record("access.revoke", digest[:16], "allow", reason=reason, grant=digest,
                         **journal_details("grant-revocation", env, subject=digest))
            return {"grant": digest, "by": ctx.name, "envelope": env}

    def break_glass(self, resource: str, *, reason: str, action: str, window_s: int) -> Row:
        """Take emergency access alone (at most the label's window); a critical alert at once."""
        from strongroom.access.breakglass import (
            ALERT_ACTION,
            require_listed,
            submit_break_glass,
            take,
        )

        vault, ctx = open_context()
        with vault:
            directory = ctx.directory()
            res = ctx.resource(resource, directory)
            label = require_listed(directory, base_name(res.name), ctx.name, ctx.me.public.key_id)
            limit = label.break_glass_window_s
            seconds = min(window_s, limit) if limit else window_s
            env = take(ctx.me.private_key, ctx.name, base_name(res.name), action, reason,
                       now=time.time(), window_s=seconds)
            digest = submit_break_glass(vault.store, env)
            vault.record(ALERT_ACTION, res.name, "allow", reason=reason, severity="critical",
                         break_glass=digest, access_action=action, window_s=seconds)
            # the resource as the signed statement names it (its base name), as remotely
            return {"break_glass": digest, "principal": ctx.name,
                    "resource": base_name(res.name), "action": action, "window_s": seconds,
                    "reason": reason}

    def break_glass_review(self, break_glass_id: str, *, verdict: str) -> Row:
        """Sign a review of one break-glass (``justified`` or ``unjustified``)."""
        from strongroom.access.breakglass import review, submit_review
        from strongroom.access.restrictions import journal_details

        vault, ctx = open_context()
        with vault:
            digest, env = find_envelope(vault.store, "break-glass", break_glass_id)
            signed = review(ctx.me.private_key, ctx.name, env, verdict, now=time.time())
            submit_review(vault.store, signed)
            vault.record("access.break-glass.review", digest[:16], "allow", reason=verdict,
                         break_glass=digest, **journal_details("review", signed, subject=digest))
            return {"break_glass": digest, "reviewer": ctx.name, "verdict": verdict}

    def break_glass_pending(self) -> list[Row]:
        """Every break-glass and who reviewed it."""
        from strongroom.runtime.listings import break_glass_rows

        vault, ctx = open_context()
        with vault:
            return break_glass_rows(vault.store, ctx.directory())

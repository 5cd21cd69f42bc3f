"""What the console's pages show, computed from verified statements (never from row columns)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from strongroom.access import statements
from strongroom.access.approvals import MAX_APPROVAL_TTL_S, AccessRequest, count_approvals, satisfy
from strongroom.access.directory import Directory, Enrollment, Resource, Rule
from strongroom.access.grants import grant_revoked, standing_denials, verify_grant
from strongroom.artifacts import ArtifactRef
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, StrongroomError
from strongroom.server.console.core import Console, ConsoleError

__all__ = ["RequestItem", "inbox", "request_item", "resource"]


@dataclass
class RequestItem:
    """A verified request and where its approvals stand for one viewer."""

    digest: str
    request: AccessRequest
    rule: Rule | None
    counted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    assignment: dict[str, list[str]] | None = None
    approved_by_me: bool = False
    denied: bool = False
    denied_by: list[str] = field(default_factory=list)
    granted: str = ""
    grant_state: str = ""
    revoked_by: str | None = None
    may_revoke: bool = False
    may_approve: bool = False
    why_not: str = ""


def resource(console: Console, name: str, directory: Directory) -> Resource:
    """The resource ``name`` (newest version unless ``name@v``) with its officers' label."""
    from strongroom.access.evidence import describe_resource

    ref = ArtifactRef.parse(name, obj="resource")
    with console.ctx.vault(actor="console") as vault:
        m = vault.manifest(ref.name, ref.version)
    return describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
        directory.label(m.name))


def request_item(console: Console, digest: str, me: Enrollment,
                 env: str | None = None) -> RequestItem:
    """One request, verified against its requester's enrollment, as ``me`` sees it."""
    store = console.ctx.store
    if env is None:
        env = statements.by_digest(store, digest)
        if env is None or len(digest) != 64:
            raise ConsoleError(404, "no such request")
    try:
        claimed = statements.unverified_payload(env)
        directory = console.ctx.directory()
        requester = directory.principal(str(claimed.get("requester_key", "")))
        if requester is None:
            raise ConsoleError(404, "the request's signer is not enrolled")
        req = AccessRequest.from_statement(console.ctx.directory_reader().cache.verify(
            env, "request", {requester.key_id: requester.public_key}, obj="request",
            pq=requester.pq_pins()))
    except (IntegrityError, InvalidInput) as exc:
        raise ConsoleError(400, f"the request does not verify: {exc.message}") from None
    if statements.payload_digest(env) != digest:
        raise ConsoleError(404, "no such request")
    item = RequestItem(digest, req, None)
    now = time.time()
    res: Resource | None = None
    try:
        res = resource(console, req.resource, directory)
        item.rule = directory.rule(res.name, req.action)
        approvals = statements.envelopes(store, "approval", subject=digest, newest_first=False)
        counted = count_approvals(req, digest, approvals, directory, console.engine(), res,
                                  at=now, now=now, cache=console.ctx.directory_reader().cache)
        item.counted = [p.name for p in counted.approvers]
        item.refused = counted.refused
        item.assignment = satisfy(item.rule, counted.approvers)
        item.approved_by_me = any(
            str(statements.unverified_payload(a).get("approver_key")) == me.key_id
            for a in approvals)
    except StrongroomError as exc:
        item.why_not = exc.message
    item.denied_by = standing_denials(store, digest, directory)
    item.denied = bool(item.denied_by)
    for g in statements.envelopes(store, "grant", subject=req.requester_key):
        try:
            if statements.payload_digest(str(statements.unverified_payload(g)["request"])) \
                    == digest:
                item.granted = statements.payload_digest(g)
                if res is not None:
                    _grant_state(console, item, g, directory, res, me, now)
                break
        except (InvalidInput, KeyError):
            continue
    if item.why_not:
        pass
    elif me.name == req.requester or me.key_id == req.requester_key:
        item.why_not = "you made this request: the requester never counts"
    elif item.approved_by_me:
        item.why_not = "you approved this request already"
    elif item.denied:
        item.why_not = f"the request was denied by {', '.join(sorted(set(item.denied_by)))}"
    elif item.granted:
        item.why_not = "a Grant was issued already"
    elif req.created + MAX_APPROVAL_TTL_S < now:
        item.why_not = "the request is too old"
    elif item.rule is not None and not set(me.roles) & {t.group for t in item.rule.terms}:
        item.why_not = f"none of your roles counts towards {item.rule}"
    elif not me.security_keys:
        item.why_not = "you have no security key enrolled"
    else:
        item.may_approve = True
    return item


def _grant_state(console: Console, item: RequestItem, env: str, directory: Directory,
                 res: Resource, me: Enrollment, now: float) -> None:
    """Whether the request's Grant still holds, who revoked it, and whether ``me`` may."""
    try:
        g = verify_grant(env, directory, console.engine(), res, now=now)
    except AccessDenied as exc:
        item.grant_state = exc.message  # expired, requester no longer eligible ...
        return
    revocations = statements.envelopes(console.ctx.store, "grant-revocation",
                                       subject=g.grant_id)
    pins = console.ctx.officer_pins()
    item.revoked_by = grant_revoked(g, revocations, directory, pins.ed25519,
                                    officer_mldsa=pins.mldsa) if revocations else None
    entitled = me.name in {g.request.requester, *g.approvers} or \
        "security-officers" in me.roles
    item.may_revoke = item.revoked_by is None and entitled and bool(me.security_keys)


def inbox(console: Console, me: Enrollment, *, limit: int = 100) -> list[RequestItem]:
    """Open requests, newest first, with whether ``me`` may approve each."""
    out: list[RequestItem] = []
    now = time.time()
    for env in statements.envelopes(console.ctx.store, "request")[:limit * 2]:
        try:
            created = int(statements.unverified_payload(env).get("created", 0))
        except InvalidInput:
            continue
        if created + MAX_APPROVAL_TTL_S < now:
            continue
        try:
            out.append(request_item(console, statements.payload_digest(env), me, env))
        except ConsoleError:
            continue
        if len(out) >= limit:
            break
    return out

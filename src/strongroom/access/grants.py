"""Grants: a request plus the approvals that meet its rule, bounded in time and bytes.

A Grant is a statement carrying the signed request and the signed approvals,
its issue time and its expiry (issue time + the requested duration), signed by
whoever assembled it (the requester or one of the counted approvers, with
their identity key or, in the web console, an enrolled security key). It adds
no authority of its own: :func:`verify_grant` re-checks every signature and
the rule from a verified directory, exactly as the release gate does::

    env = build_grant(bob_key, request_env, approval_envs, now=now)
    grant = verify_grant(env, directory, engine, resource, now=now)   # AccessDenied if not
    issue_grant(store, bob_key, request_digest, directory, engine, resource, now=now)
    valid_grants(store, directory, engine, resource_of, now=now)   # what holds now

Storing a grant (:func:`issue_grant`, :func:`store_grant`, :func:`admit_grant`)
refuses one that would take its resource over the access cap of its action
(:class:`~strongroom.access.caps.AccessCaps`); the gate checks the cap again at
every release.

Revoke with :func:`revoke_grant` (the requester, an approver of the grant, a
security officer, or an officer pinned in the keyring may): the gate honours it
at the next release. Byte budgets are charged by the gate
(:class:`~strongroom.access.evidence.GrantEvidence`), not here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.access import fido, statements
from strongroom.access.approvals import (
    MAX_APPROVAL_TTL_S,
    AccessRequest,
    Approval,
    Candidates,
    approval_asks,
    approval_candidates,
    assignment,
    counted_from,
    denial_refusal,
    denials,
)
from strongroom.access.caps import AccessCaps, holders
from strongroom.access.directory import Directory, Enrollment, Resource, Rule, base_name
from strongroom.access.policy import Decision, PolicyEngine, PreparedAsks
from strongroom.access.statements import VerifyCache
from strongroom.crypto.dsse import key_id
from strongroom.errors import AccessDenied, ApprovalRequired, IntegrityError, InvalidInput, NotFound
from strongroom.store.db import Store

__all__ = [
    "CLOCK_SKEW_S",
    "GrantParts",
    "PartsMemo",
    "ResourceOf",
    "VerifiedGrant",
    "admit_grant",
    "build_grant",
    "check_cap",
    "check_grant_parts",
    "grant_parts",
    "grant_revoked",
    "grant_statement",
    "issue_grant",
    "parse_approval",
    "pending_grant_inputs",
    "revocation_statement",
    "revoke_grant",
    "standing_denials",
    "store_grant",
    "valid_grants",
    "verify_grant",
]

#: How far a grant's issue time may lie in the future of the verifier's clock.
CLOCK_SKEW_S = 300


@dataclass(frozen=True)
class VerifiedGrant:
    """A grant whose every signature and rule was checked (immutable: it may be shared)."""

    grant_id: str
    request: AccessRequest
    request_digest: str
    approvers: tuple[str, ...]
    #: Which approvers filled each term of the rule (read-only).
    assignment: Mapping[str, tuple[str, ...]]
    issued: int
    expires: int
    byte_budget: int
    issuer: str


def grant_statement(request_env: str, approval_envs: Sequence[str], *,
                    now: float) -> dict[str, Any]:
    """The (unsigned) grant statement for a request and its approvals, issued at ``now``."""
    req = AccessRequest.from_statement(statements.unverified_payload(request_env))
    issued = int(now)
    return {"request": request_env, "approvals": list(approval_envs), "issued": issued,
            "expires": issued + req.duration_s, "nonce": secrets.token_hex(8)}


def build_grant(key: Ed25519PrivateKey, request_env: str, approval_envs: Sequence[str], *,
                now: float, pq: MLDSA65PrivateKey | None = None) -> str:
    """Assemble (and sign) a grant statement; :func:`verify_grant` decides whether it holds.

    ``pq``: a hybrid signer's ML-DSA-65 key, required once their enrollment pins it.
    """
    return statements.sign("grant", grant_statement(request_env, approval_envs, now=now), key,
                           pq=pq)


def standing_denials(store: Store, request_digest: str, directory: Directory) -> list[str]:
    """Who denied the request (names), from :func:`~strongroom.access.approvals.denials`."""
    return [v.by.name for v in denials(store, request_digest, directory)]


def pending_grant_inputs(store: Store, request_digest: str,
                         directory: Directory) -> tuple[str, list[str]]:
    """The stored request envelope and its approvals, refusing denied or unknown requests."""
    requests = statements.envelopes(store, "request", subject=request_digest)
    if not requests:
        raise InvalidInput("no such request", obj=request_digest[:16],
                           remedy="`strongroom access grants --pending` lists open requests")
    vetoes = denials(store, request_digest, directory)
    if vetoes:
        raise denial_refusal(vetoes, request_digest)
    return requests[0], statements.envelopes(store, "approval", subject=request_digest,
                                             newest_first=False)


def store_grant(
    store: Store,
    env: str,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    cache: VerifyCache | None = None,
    caps: AccessCaps | None = None,
) -> VerifiedGrant:
    """Verify a signed grant as the gate would, then store it (:func:`admit_grant`)."""
    verified = verify_grant(env, directory, engine, resource, now=now, cache=cache)
    admit_grant(store, env, verified, directory, engine, resource, now=now, cache=cache,
                caps=caps)
    return verified


def admit_grant(
    store: Store,
    env: str,
    verified: VerifiedGrant,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    cache: VerifyCache | None = None,
    caps: AccessCaps | None = None,
) -> None:
    """Store ``env`` (verified as ``verified``) unless it takes ``resource`` over its cap.

    ``caps`` defaults to :class:`AccessCaps` from the environment; the refusal
    is :class:`~strongroom.errors.AccessDenied` naming the count and the cap.
    """
    check_cap(store, verified, directory, engine, resource, now=now, cache=cache, caps=caps)
    statements.put(store, "grant", env, subject=verified.request.requester_key,
                   resource=base_name(verified.request.resource), expires=verified.expires)


#: Resolves the resource a grant's request names (``name`` or ``name@version``), labelled.
ResourceOf = Callable[[str], Resource]


def valid_grants(
    store: Store,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource | ResourceOf,
    *,
    now: float,
    cache: VerifyCache | None = None,
) -> list[VerifiedGrant]:
    """The stored grants that verify at ``now``, newest first; the others are left out.

    ``resource`` is either one resource (the grants stored for its base name,
    each checked against it: the holders the access cap counts) or a function
    that resolves the resource each grant's request names (every stored grant:
    listings). A grant whose resource cannot be resolved is left out.
    """
    def target(env: str) -> Resource:
        if isinstance(resource, Resource):
            return resource
        claimed = statements.unverified_payload(str(statements.unverified_payload(env)["request"]))
        return resource(str(claimed["resource"]))

    envs = statements.envelopes(store, "grant", resource=base_name(resource.name)) \
        if isinstance(resource, Resource) else statements.envelopes(store, "grant")
    out: list[VerifiedGrant] = []
    for env in envs:
        try:
            out.append(verify_grant(env, directory, engine, target(env), now=now, cache=cache))
        except (AccessDenied, InvalidInput, NotFound, KeyError):
            continue
    return out


def check_cap(
    store: Store,
    grant: VerifiedGrant,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    cache: VerifyCache | None = None,
    caps: AccessCaps | None = None,
) -> None:
    """Refuse ``grant`` (AccessDenied) if its requester would exceed the cap on ``resource``."""
    action = grant.request.action
    current = holders(valid_grants(store, directory, engine, resource, now=now, cache=cache)
                      ).get((base_name(resource.name), action), set())
    (caps or AccessCaps()).check(resource.name, action, current, grant.request.requester)


def _deny(message: str, obj: str, remedy: str = "") -> AccessDenied:
    return AccessDenied(message, obj=obj, remedy=remedy or None)


@dataclass(frozen=True)
class GrantParts:
    """What :func:`verify_grant` establishes without the time: signatures, structure, approvals.

    Valid for the directory and resource it was computed against; the checks
    that depend on the time (issued in the future, expiry, Cedar at ``now``,
    hence the rule) are made by :func:`check_grant_parts` on every use.
    """

    grant_id: str
    request: AccessRequest
    request_digest: str
    requester: Enrollment
    issued: int
    expires: int
    issuer_kid: str
    candidates: Candidates
    #: Cedar's inputs for the candidates and the requester, prepared on first use (they
    #: depend on the same directory entries as the rest; the time is added per use).
    cedar: list[PreparedAsks] = field(default_factory=list, compare=False, repr=False)
    #: The last outcome that held: (the rule, Cedar's decisions, the grant they verify).
    #: Everything after Cedar is a pure function of these and the fields above, so the
    #: same rule and decisions at a later ``now`` verify the same grant; Cedar is still
    #: asked at every use, and any other decisions are counted afresh.
    held: list[tuple[Rule, tuple[Decision, ...], VerifiedGrant]] = field(
        default_factory=list, compare=False, repr=False)


#: A caller-owned memo of :class:`GrantParts`, valid only for one directory view.
PartsMemo = MutableMapping[tuple[str, Resource], GrantParts]


def verify_grant(
    env: str,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    cache: VerifyCache | None = None,
    memo: PartsMemo | None = None,
) -> VerifiedGrant:
    """Check a grant from its signatures against ``directory`` for ``resource`` at ``now``.

    ``memo`` (optional) keeps the time-independent part per (envelope, resource);
    the caller must use a fresh memo whenever ``directory`` may have changed.
    """
    key = (env, resource)
    parts = memo.get(key) if memo is not None else None
    if parts is None:
        parts = grant_parts(env, directory, resource, cache=cache)
        if memo is not None:
            memo[key] = parts
    return check_grant_parts(parts, directory, engine, resource, now=now)


def grant_parts(env: str, directory: Directory, resource: Resource, *,
                cache: VerifyCache | None = None) -> GrantParts:
    """The time-independent checks of a grant (AccessDenied if one fails)."""
    cache = cache or VerifyCache()
    obj = resource.name
    try:
        claimed = statements.unverified_payload(env)
        request_env = claimed["request"]
        approval_envs = claimed["approvals"]
        if not isinstance(request_env, str) or not isinstance(approval_envs, list) \
                or not all(isinstance(a, str) for a in approval_envs):
            raise ValueError("request or approvals malformed")
        claimed_req = statements.unverified_payload(request_env)
    except (InvalidInput, KeyError, ValueError):
        raise _deny("the grant is malformed", obj) from None
    requester = directory.principal(str(claimed_req.get("requester_key", "")))
    if requester is None:
        raise _deny("the grant's requester is not an enrolled, unrevoked principal", obj,
                    "ask the security officers to enroll the requester")
    try:
        req = AccessRequest.from_statement(cache.verify(
            request_env, "request", {requester.key_id: requester.public_key},
            obj=f"request by {requester.name}", pq=requester.pq_pins()))
    except IntegrityError as exc:
        raise _deny(f"the grant's request does not verify: {exc.message}", obj) from None
    if req.requester_key != requester.key_id or req.requester != requester.name:
        raise _deny("the request names another requester than its signer", obj)
    # The grant's own signature: by the requester or one of the claimed approvers.
    signers: dict[str, Ed25519PublicKey] = {requester.key_id: requester.public_key}
    pq: dict[str, MLDSA65PublicKey] = requester.pq_pins()
    people: dict[str, Enrollment] = {requester.key_id: requester}
    for a_env in approval_envs:
        try:
            kid = str(statements.unverified_payload(a_env).get("approver_key", ""))
        except InvalidInput:
            continue
        who = directory.principal(kid)
        if who is not None:
            signers[kid] = who.public_key
            pq.update(who.pq_pins())
            people[kid] = who
    try:
        if fido.is_webauthn(env):  # assembled in the console, signed with a security key
            st = fido.verify_envelope(env, "grant", people, obj=f"grant for {obj}").statement
        else:
            st = cache.verify(env, "grant", signers, obj=f"grant for {obj}", pq=pq)
        issued, expires = int(st["issued"]), int(st["expires"])
    except IntegrityError as exc:
        raise _deny(f"the grant does not verify: {exc.message}", obj) from None
    except (KeyError, TypeError, ValueError):
        raise _deny("the grant has no valid issue time or expiry", obj) from None
    if st["request"] != request_env or st["approvals"] != approval_envs:
        raise _deny("the grant's content changed after signing", obj)
    if not req.covers(resource.name):
        raise _deny(f"the grant is for {req.resource}, not {resource.name}", obj,
                    "request access to this resource")
    if expires != issued + req.duration_s or not req.created <= issued <= req.created \
            + MAX_APPROVAL_TTL_S:
        raise _deny("the grant's time bounds do not match its request", obj)
    digest = statements.payload_digest(request_env)
    found = approval_candidates(req, digest, approval_envs, directory, resource, at=issued,
                                cache=cache)
    issuer = next((kid for kid in statements.signer_ids(env) if kid in signers), "")
    return GrantParts(statements.payload_digest(env), req, digest, requester, issued, expires,
                      issuer, found)


def check_grant_parts(parts: GrantParts, directory: Directory, engine: PolicyEngine,
                      resource: Resource, *, now: float) -> VerifiedGrant:
    """The checks of a grant that depend on ``now``: issue time, expiry, Cedar, the rule."""
    obj = resource.name
    req, requester = parts.request, parts.requester
    if parts.issued > now + CLOCK_SKEW_S:
        raise _deny("the grant is issued in the future", obj)
    if now >= parts.expires:
        raise _deny("the grant has expired", obj, "request access again")
    if not parts.cedar:  # racing threads prepare the same inputs; either is kept
        parts.cedar.append(engine.prepare(
            approval_asks(parts.candidates, req, requester), resource))
    decisions = tuple(engine.decide_prepared(parts.cedar[0], now))
    held = parts.held
    if held:  # one slot, replaced whole (atomic under races)
        last = held[0]
        # Decisions are interned (policy._parse_result), so these compare by identity first.
        if last[1] == decisions:
            rule = directory.rule(resource.name, req.action)
            if last[0] is rule or last[0] == rule:
                return last[2]
    counted = counted_from(parts.candidates, decisions, resource, requester=True)
    if not counted.requester_allowed:
        raise _deny(f"policy denies {requester.name} {req.action} on {resource.name} "
                    "(clearance, compartments or vetting)" + counted.requester_errors, obj,
                    "the security officers must update the enrollment")
    rule = directory.rule(resource.name, req.action)
    assigned = assignment(rule, counted.approvers)
    if assigned is None:
        why = "; ".join(counted.refused[:4])
        raise ApprovalRequired(
            f"approvals do not meet the rule {rule} ({len(counted.approvers)} counted"
            + (f"; not counted: {why}" if why else "") + ")", obj=obj,
            remedy="collect approvals from distinct, vetted and cleared approvers")
    names = {p.key_id: p.name for p in (requester, *counted.approvers)}
    verified = VerifiedGrant(
        parts.grant_id, req, parts.request_digest, tuple(p.name for p in counted.approvers),
        assigned,
        parts.issued, parts.expires, req.byte_budget,
        names.get(parts.issuer_kid, parts.issuer_kid))
    parts.held[:] = [(rule, decisions, verified)]
    return verified


def issue_grant(
    store: Store,
    key: Ed25519PrivateKey,
    request_digest: str,
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    cache: VerifyCache | None = None,
    caps: AccessCaps | None = None,
    pq: MLDSA65PrivateKey | None = None,
) -> tuple[str, VerifiedGrant]:
    """Build a grant from the stored request and approvals, verify it as the gate would, store it.

    Refused (AccessDenied) when it would take ``resource`` over the access cap
    (``caps``, default :class:`AccessCaps` from the environment).
    """
    request_env, approvals = pending_grant_inputs(store, request_digest, directory)
    env = build_grant(key, request_env, approvals, now=now, pq=pq)
    return env, store_grant(store, env, directory, engine, resource, now=now, cache=cache,
                            caps=caps)


def revocation_statement(grant_id: str, by: str, by_key: str, reason: str, *,
                         now: float) -> dict[str, Any]:
    """The (unsigned) revocation of ``grant_id`` by ``by`` (key id ``by_key``)."""
    return {"grant": grant_id, "by": by, "by_key": by_key, "reason": reason,
            "issued": int(now)}


def revoke_grant(store: Store, key: Ed25519PrivateKey, by: str, grant_id: str, reason: str, *,
                 now: float, pq: MLDSA65PrivateKey | None = None) -> str:
    """Sign and store a grant revocation; the gate refuses the grant from the next release."""
    env = statements.sign("grant-revocation", revocation_statement(
        grant_id, by, key_id(key.public_key()), reason, now=now), key, pq=pq)
    statements.put(store, "grant-revocation", env, subject=grant_id)
    return env


def grant_revoked(
    grant: VerifiedGrant,
    revocation_envs: Sequence[str],
    directory: Directory,
    officers: Mapping[str, Ed25519PublicKey],
    cache: VerifyCache | None = None,
    *,
    officer_mldsa: Mapping[str, MLDSA65PublicKey] | None = None,
) -> str | None:
    """Who revoked ``grant`` (a name), if a valid revocation is among ``revocation_envs``.

    ``officer_mldsa``: hybrid officers' ML-DSA-65 keys; such an officer's revocation
    counts only with both signatures.
    """
    cache = cache or VerifyCache()
    entitled = {grant.request.requester, *grant.approvers}
    for env in revocation_envs:
        try:
            kid = str(statements.unverified_payload(env).get("by_key", ""))
        except InvalidInput:
            continue
        who = directory.principal(kid)
        trusted: dict[str, Ed25519PublicKey] = {}
        pq = who.pq_pins() if who is not None else {}
        if kid in officers:
            trusted[kid] = officers[kid]
            if officer_mldsa and kid in officer_mldsa:
                pq = {kid: officer_mldsa[kid]}
        elif who is not None and (who.name in entitled or "security-officers" in who.roles):
            trusted[kid] = who.public_key
        else:
            continue
        try:
            if fido.is_webauthn(env) and who is not None and kid in trusted:
                # revoked in the console with an enrolled security key
                st = fido.verify_envelope(env, "grant-revocation", {kid: who},
                                          obj="grant revocation").statement
            else:
                st = cache.verify(env, "grant-revocation", trusted, obj="grant revocation",
                                  pq=pq)
        except IntegrityError:
            continue
        if st.get("grant") == grant.grant_id and st.get("by_key") == kid:
            return who.name if who is not None else f"officer {kid}"
    return None


def parse_approval(env: str) -> Approval:
    """The unverified approval in ``env`` (for listings)."""
    return Approval.from_statement(statements.unverified_payload(env))

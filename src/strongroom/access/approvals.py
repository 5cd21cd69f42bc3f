"""Access requests and the signed approvals that answer them.

A request (who, what, action, purpose, duration, byte budget) is a statement
signed by the requester's own key; its identity is the SHA-256 of its signed
payload (:func:`~strongroom.access.statements.payload_digest`). An approval is
a statement signed by the approver's own key over that digest, with a nonce
and an expiry, so it cannot be replayed onto another request or used late::

    req_env = AccessRequest.new(alice, "minilm", "load", "eval run", 3600, 1 << 30).sign(alice_key)
    digest = submit_request(store, req_env)
    submit_approval(store, approve(bob_key, "bob", req_env), directory=directory)
    counted = count_approvals(request, approvals, directory, engine, resource, at=..., now=...)
    assignment = satisfy(rule, counted.approvers)          # None until the rule is met

A veto is final: :func:`submit_approval` refuses, and does not store, an
approval of a request that carries a verified denial (read through
:func:`denials`, the one place denials are read), as well as an approval by
the requester or by someone who approved the request already.

Rules are an AND of ``k of group`` terms. The requester never counts; a person
counts once, towards one term, even holding several roles; an approver must be
enrolled, unrevoked, vetted and cleared for the resource (the Cedar ``approve``
action). These functions are pure: the gate calls them with a directory it
verified itself, so nothing stored can add an approver.

An approval made in the web console is the same statement signed with a
security key enrolled for the approver (:mod:`strongroom.access.fido`); it is
verified here like any other approval signature. Where the resource's label
lists the action in ``security_key_actions``, only such approvals count.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from strongroom.access import fido, statements
from strongroom.access.directory import Directory, Enrollment, Resource, Rule, base_name
from strongroom.access.policy import ACTIONS, Decision, PolicyEngine, PreparedAsks
from strongroom.access.statements import VerifyCache
from strongroom.crypto.dsse import key_id
from strongroom.errors import AccessDenied, AlreadyExists, IntegrityError, InvalidInput, NotFound
from strongroom.store.db import Store

__all__ = [
    "MAX_APPROVAL_TTL_S",
    "MAX_GRANT_DURATION_S",
    "AccessRequest",
    "Approval",
    "Candidates",
    "Counted",
    "Verdict",
    "approval_candidates",
    "approve",
    "assignment",
    "check_approval",
    "count_approvals",
    "counted_from",
    "decide_approvals",
    "denial_refusal",
    "denials",
    "deny",
    "require_enrolled",
    "satisfy",
    "submit_approval",
    "submit_request",
]

#: What an attestation policy's name looks like (strongroom.attest.policy).
_POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: Longest a grant may last (also how far back the gate re-reads byte usage).
MAX_GRANT_DURATION_S = 7 * 24 * 3600
#: Longest an approval stays usable.
MAX_APPROVAL_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class AccessRequest:
    """Who asks for which action on what, why, for how long and for how many bytes."""

    requester: str
    requester_key: str
    resource: str
    action: str
    purpose: str
    duration_s: int
    byte_budget: int
    created: int
    nonce: str
    #: An attestation policy's name: the Grant then releases keys only into enclaves it
    #: admits (the approvers sign it with the request; a label's policy applies as well).
    attested: str = ""

    @classmethod
    def new(cls, requester: str, requester_key: str, resource: str, action: str, purpose: str,
            duration_s: int, byte_budget: int, now: float, *,
            attested: str = "") -> AccessRequest:
        """A fresh request (checked) with a random nonce."""
        req = cls(requester, requester_key, resource, action, purpose, int(duration_s),
                  int(byte_budget), int(now), secrets.token_hex(16), attested)
        req.check()
        return req

    def check(self) -> None:
        """Refuse malformed requests."""
        if self.action not in ACTIONS or self.action in ("approve", "administer", "write"):
            raise InvalidInput(f"cannot request action {self.action!r}", obj=self.resource,
                               remedy="request infer, load, read or export")
        if not 0 < self.duration_s <= MAX_GRANT_DURATION_S:
            raise InvalidInput(f"duration must be 1..{MAX_GRANT_DURATION_S} s", obj=self.resource)
        if self.byte_budget < 0:
            raise InvalidInput("byte budget must be >= 0", obj=self.resource)
        if not self.purpose.strip():
            raise InvalidInput("a request needs a purpose", obj=self.resource,
                               remedy="say why you need access (--purpose)")
        if not self.resource or not self.requester_key:
            raise InvalidInput("a request needs a resource and the requester's key",
                               obj="request")
        if self.attested and not _POLICY_NAME.match(self.attested):
            raise InvalidInput(f"{self.attested!r} is not an attestation policy name",
                               obj=self.resource, remedy="name a policy from "
                               "'strongroom attest policy show' (lowercase, digits, . _ -)")

    def to_statement(self) -> dict[str, Any]:
        """The signed form."""
        return {"requester": self.requester, "requester_key": self.requester_key,
                "resource": self.resource, "action": self.action, "purpose": self.purpose,
                "duration_s": self.duration_s, "byte_budget": self.byte_budget,
                "created": self.created, "nonce": self.nonce,
                # absent when empty, so requests without it sign (and digest) as before
                **({"attested": self.attested} if self.attested else {})}

    @classmethod
    def from_statement(cls, st: Mapping[str, Any]) -> AccessRequest:
        """Parse a verified request statement."""
        try:
            req = cls(str(st["requester"]), str(st["requester_key"]), str(st["resource"]),
                      str(st["action"]), str(st["purpose"]), int(st["duration_s"]),
                      int(st["byte_budget"]), int(st["created"]), str(st["nonce"]),
                      str(st.get("attested", "")))
            req.check()
            return req
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise IntegrityError(f"request statement has an unexpected shape ({exc})",
                                 obj="request") from None

    def sign(self, key: Ed25519PrivateKey, *, pq: MLDSA65PrivateKey | None = None) -> str:
        """The request statement signed by the requester's key (and ML-DSA key, if hybrid)."""
        if key_id(key.public_key()) != self.requester_key:
            raise InvalidInput("a request must be signed by the requester's own key",
                               obj=self.resource)
        return statements.sign("request", self.to_statement(), key, pq=pq)

    def covers(self, artifact: str) -> bool:
        """True if this request's resource names ``artifact`` (``name`` covers every version)."""
        return self.resource == artifact or (
            "@" not in self.resource and base_name(artifact) == self.resource)


@dataclass(frozen=True)
class Approval:
    """One approver's signed yes (or no) to one request."""

    request: str
    approver: str
    approver_key: str
    decision: str
    nonce: str
    issued: int
    expires: int
    reason: str = ""

    def to_statement(self) -> dict[str, Any]:
        """The signed form."""
        return {"request": self.request, "approver": self.approver,
                "approver_key": self.approver_key, "decision": self.decision,
                "nonce": self.nonce, "issued": self.issued, "expires": self.expires,
                "reason": self.reason}

    @classmethod
    def from_statement(cls, st: Mapping[str, Any]) -> Approval:
        """Parse a verified approval or denial statement."""
        try:
            return cls(str(st["request"]), str(st["approver"]), str(st["approver_key"]),
                       str(st["decision"]), str(st["nonce"]), int(st["issued"]),
                       int(st["expires"]), str(st.get("reason", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"approval statement has an unexpected shape ({exc})",
                                 obj="approval") from None


def approve(key: Ed25519PrivateKey, approver: str, request_env: str, *, now: float,
            ttl_s: int = 24 * 3600, pq: MLDSA65PrivateKey | None = None) -> str:
    """An approval of the request in ``request_env``, signed by the approver's key(s).

    ``pq``: a hybrid approver's ML-DSA-65 key; once enrolled with it, their
    approvals count only with both signatures.
    """
    if not 0 < ttl_s <= MAX_APPROVAL_TTL_S:
        raise InvalidInput(f"approval lifetime must be 1..{MAX_APPROVAL_TTL_S} s", obj="approval")
    a = Approval(statements.payload_digest(request_env), approver, key_id(key.public_key()),
                 "approve", secrets.token_hex(16), int(now), int(now) + ttl_s)
    return statements.sign("approval", a.to_statement(), key, pq=pq)


def deny(key: Ed25519PrivateKey, approver: str, request_env: str, *, now: float,
         reason: str, pq: MLDSA65PrivateKey | None = None) -> str:
    """A signed denial: the request is closed (no grant is issued while it stands)."""
    a = Approval(statements.payload_digest(request_env), approver, key_id(key.public_key()),
                 "deny", secrets.token_hex(16), int(now), int(now) + MAX_APPROVAL_TTL_S, reason)
    return statements.sign("denial", a.to_statement(), key, pq=pq)


def submit_request(store: Store, request_env: str) -> str:
    """Store a request (unverified: everything that acts on it verifies it); its digest."""
    req = AccessRequest.from_statement(statements.unverified_payload(request_env))
    digest = statements.payload_digest(request_env)
    return statements.put(store, "request", request_env, subject=digest,
                          resource=base_name(req.resource),
                          expires=req.created + MAX_APPROVAL_TTL_S)


def submit_approval(store: Store, env: str, kind: str = "approval", *,
                    directory: Directory) -> str:
    """Store an approval or denial under its request's digest.

    An approval that :func:`check_approval` refuses is not stored, nor is one by a person
    whose enrollment pins an ML-DSA-65 key that lacks a valid ML-DSA-65 signature (it
    could never count: IntegrityError naming the missing or failing signature).
    """
    a = Approval.from_statement(statements.unverified_payload(env))
    who = directory.principal(a.approver_key)
    if who is not None and who.mldsa_key and not fido.is_webauthn(env):
        VerifyCache().verify(env, kind, {who.key_id: who.public_key}, pq=who.pq_pins(),
                             obj=f"{kind} by {who.name}")
    if kind == "approval":
        check_approval(store, a, directory)
    return statements.put(store, kind, env, subject=a.request, expires=a.expires)


@dataclass(frozen=True)
class Verdict:
    """A stored approval or denial whose signature verified, and the enrolled person who made it."""

    by: Enrollment
    statement: Approval
    env: str


def _verified(env: str, kind: str, directory: Directory, cache: VerifyCache) -> Verdict | None:
    """The approval or denial in ``env`` if it verifies under its signer's enrolled key."""
    try:
        claimed = Approval.from_statement(statements.unverified_payload(env))
        who = directory.principal(claimed.approver_key)
        if who is None:
            return None
        if fido.is_webauthn(env):  # signed in the console with an enrolled security key
            st = fido.verify_envelope(env, kind, {who.key_id: who},
                                      obj=f"{kind} by {who.name}").statement
        else:
            st = cache.verify(env, kind, {who.key_id: who.public_key}, obj=f"{kind} by {who.name}",
                              pq=who.pq_pins())
        a = Approval.from_statement(st)
    except (IntegrityError, InvalidInput):
        return None
    decision = "deny" if kind == "denial" else "approve"
    if a.decision != decision or a.approver_key != who.key_id:
        return None
    return Verdict(who, a, env)


def _verdicts(store: Store, kind: str, request_digest: str, directory: Directory) -> list[Verdict]:
    cache = VerifyCache()
    out = []
    for env in statements.envelopes(store, kind, subject=request_digest, newest_first=False):
        v = _verified(env, kind, directory, cache)
        if v is not None and v.statement.request == request_digest:
            out.append(v)
    return out


def denials(store: Store, request_digest: str, directory: Directory) -> list[Verdict]:
    """The denials of a request signed by an enrolled, unrevoked principal: each is a veto.

    Every check of a denial reads them here. A row that does not verify under
    its signer's enrolled key (written by a database administrator, signed by
    a key since revoked) blocks nothing, so whoever can write the database can
    neither grant nor block access.
    """
    return _verdicts(store, "denial", request_digest, directory)


def denial_refusal(vetoes: Sequence[Verdict], request_digest: str) -> AccessDenied:
    """The refusal of anything that would let a denied request go on, naming who denied and why."""
    who = "; ".join(dict.fromkeys(
        f"{v.by.name} ({v.statement.reason!r})" if v.statement.reason else v.by.name
        for v in vetoes))
    return AccessDenied(f"the request was denied by {who}: a denial is final",
                        obj=f"request {request_digest[:16]}", remedy="file a new request")


def require_enrolled(directory: Directory, key_id: str, name: str, doing: str, *,
                     obj: str) -> Enrollment:
    """The enrolled, unrevoked principal holding ``key_id``, or AccessDenied saying what to do.

    Security officers pinned in the keyring sign the directory; they are not
    principals by being officers. An officer who requests, approves or denies
    access enrolls their own key first, like anyone else.
    """
    who = directory.principal(key_id)
    if who is None:
        raise AccessDenied(
            f"{name} (key {key_id}) is not an enrolled, unrevoked principal: {doing} would not "
            "count", obj=obj,
            remedy="officers enroll the key first (`strongroom people enroll NAME --key "
            "FILE.pub --role ROLE --clearance LEVEL --compartment C --vetting-expires DATE`, "
            "signed by k officers); an officer pinned in the keyring enrolls their own key too")
    return who


def check_approval(store: Store, approval: Approval, directory: Directory) -> None:
    """Refuse an approval that could not count: of a denied request, by its requester, or twice."""
    digest = approval.request
    obj = f"request {digest[:16]}"
    requests = statements.envelopes(store, "request", subject=digest)
    if not requests:
        raise NotFound("no such request", obj=obj,
                       remedy="`strongroom access grants --pending` lists open requests")
    req = statements.unverified_payload(requests[0])
    who = directory.principal(approval.approver_key)
    name = who.name if who is not None else approval.approver
    if approval.approver_key == req.get("requester_key") or name == req.get("requester"):
        raise AccessDenied(f"{name} made this request and cannot approve it: the requester "
                           "never counts", obj=obj,
                           remedy="ask approvers other than the requester")
    vetoes = denials(store, digest, directory)
    if vetoes:
        raise denial_refusal(vetoes, digest)
    label = directory.label(str(req.get("resource", "")))
    key_only = label is not None and req.get("action") in label.security_key_actions
    for prior in _verdicts(store, "approval", digest, directory):
        same = prior.by.key_id == approval.approver_key or prior.by.name == name
        counts = not key_only or fido.is_webauthn(prior.env)  # else a new one may replace it
        if same and counts and prior.statement.expires > approval.issued:
            raise AlreadyExists(f"{name} approved this request already: a person counts once",
                                obj=obj, remedy="nothing to do; ask other approvers")


@dataclass
class Counted:
    """Approvals that count, why the others do not, and the requester's own decision."""

    approvers: list[Enrollment] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    requester_allowed: bool | None = None
    #: Cedar's evaluation errors in the requester's decision (a refusal's text), if any.
    requester_errors: str = ""


def count_approvals(
    request: AccessRequest,
    request_digest: str,
    approval_envs: Sequence[str],
    directory: Directory,
    engine: PolicyEngine,
    resource: Resource,
    *,
    at: float,
    now: float,
    cache: VerifyCache | None = None,
    requester: Enrollment | None = None,
) -> Counted:
    """Verify each approval and keep those that count at time ``at`` (vetting checked at ``now``).

    With ``requester``, its own Cedar decision for the requested action is made
    in the same Cedar call (``Counted.requester_allowed``).
    """
    found = approval_candidates(request, request_digest, approval_envs, directory, resource,
                                at=at, cache=cache)
    return decide_approvals(found, request, engine, resource, now=now, requester=requester)


@dataclass(frozen=True)
class Candidates:
    """Approvals whose signature, request, signer and validity at ``at`` hold (Cedar not asked).

    Nothing here depends on the current time, so a caller may keep it while the
    directory it was computed from is unchanged and re-run only
    :func:`decide_approvals` (Cedar at ``now``) per use.
    """

    found: tuple[tuple[Enrollment, Approval], ...]
    refused: tuple[str, ...]


def approval_candidates(
    request: AccessRequest,
    request_digest: str,
    approval_envs: Sequence[str],
    directory: Directory,
    resource: Resource,
    *,
    at: float,
    cache: VerifyCache | None = None,
) -> Candidates:
    """The approvals that count at ``at`` before the policy is asked, and why the others do not."""
    cache = cache or VerifyCache()
    refused: list[str] = []
    candidates: list[tuple[Enrollment, Approval]] = []
    people: set[str] = set()
    label = directory.label(resource.name)
    key_only = label is not None and request.action in label.security_key_actions
    for env in approval_envs:
        try:
            claimed = Approval.from_statement(statements.unverified_payload(env))
        except (IntegrityError, InvalidInput) as exc:
            refused.append(f"malformed approval ({exc.message})")
            continue
        who = directory.principal(claimed.approver_key)
        if who is None:
            refused.append(f"approval by key {claimed.approver_key}: not an enrolled, "
                           "unrevoked principal")
            continue
        try:
            if fido.is_webauthn(env):  # signed in the console with an enrolled security key
                st = fido.verify_envelope(env, "approval", {who.key_id: who},
                                          obj=f"approval by {who.name}").statement
            elif key_only:
                refused.append(f"approval by {who.name}: {request.action} on "
                               f"{resource.name} needs approvals signed with a security key")
                continue
            else:
                st = cache.verify(env, "approval", {who.key_id: who.public_key},
                                  obj=f"approval by {who.name}", pq=who.pq_pins())
            a = Approval.from_statement(st)
        except IntegrityError as exc:
            refused.append(f"approval by {who.name}: {exc.message}")
            continue
        if a.approver_key != who.key_id or a.decision != "approve":
            refused.append(f"approval by {who.name}: not an approval by its signer")
        elif a.request != request_digest:
            refused.append(f"approval by {who.name} is for another request")
        elif who.key_id == request.requester_key or who.name == request.requester:
            refused.append(f"{who.name} requested this: the requester never counts")
        elif not a.issued <= at < a.expires or a.expires - a.issued > MAX_APPROVAL_TTL_S:
            refused.append(f"approval by {who.name} was not valid at the grant's issue time")
        elif who.name in people or who.key_id in people:
            refused.append(f"{who.name} already counted: a person counts once")
        else:
            people.update((who.name, who.key_id))
            candidates.append((who, a))
    return Candidates(tuple(candidates), tuple(refused))


def decide_approvals(
    found: Candidates,
    request: AccessRequest,
    engine: PolicyEngine,
    resource: Resource,
    *,
    now: float,
    requester: Enrollment | None = None,
    prepared: PreparedAsks | None = None,
) -> Counted:
    """Ask Cedar at ``now`` (one batched call) which candidates count, and about the requester.

    ``prepared``: :func:`approval_asks` of the same ``found``, ``request`` and
    ``requester`` prepared by :meth:`PolicyEngine.prepare` for ``resource`` (kept
    by a caller that keeps ``found``): Cedar is asked the same, without
    rebuilding its inputs.
    """
    if prepared is not None:
        decisions = engine.decide_prepared(prepared, now)
    else:
        decisions = engine.decide_many(approval_asks(found, request, requester), resource, now)
    return counted_from(found, decisions, resource, requester=requester is not None)


def counted_from(found: Candidates, decisions: Sequence[Decision], resource: Resource, *,
                 requester: bool) -> Counted:
    """What Cedar's ``decisions`` on :func:`approval_asks` of ``found`` count.

    ``requester``: the asks ended with the requester's own (its decision is last).
    """
    out = Counted(refused=list(found.refused))
    if requester:
        mine = decisions[-1]
        decisions = decisions[:-1]
        out.requester_allowed, out.requester_errors = mine.allowed, _cedar_errors(mine)
    for (who, a), decision in zip(found.found, decisions, strict=True):
        if decision.allowed:
            out.approvers.append(who)
            out.approvals.append(a)
        else:
            out.refused.append(f"{who.name} is not vetted and cleared to approve {resource.name}"
                               + _cedar_errors(decision))
    return out


def _cedar_errors(decision: Decision) -> str:
    """Cedar's evaluation errors of a denial, for the refusal's text (empty if none)."""
    return f" (Cedar: {'; '.join(decision.errors)[:200]})" if decision.errors else ""


def approval_asks(found: Candidates, request: AccessRequest,
                  requester: Enrollment | None) -> list[tuple[Enrollment, str]]:
    """What :func:`decide_approvals` asks Cedar: each candidate approves, then the requester."""
    asks = [(who, "approve") for who, _ in found.found]
    if requester is not None:
        asks.append((requester, request.action))
    return asks


#: :func:`assignment`'s answers by everything they depend on (the rule, and each approver's
#: name and roles in order): a pure function's memo of read-only values, so never stale.
#: Bounded.
_SATISFIED: dict[tuple[Rule, tuple[tuple[str, tuple[str, ...]], ...]],
                 Mapping[str, tuple[str, ...]] | None] = {}
_SATISFIED_SIZE = 4096


def satisfy(rule: Rule, approvers: Sequence[Enrollment]) -> dict[str, list[str]] | None:
    """Assign each approver to at most one term so every ``k of group`` is met, or None.

    A bipartite matching (approvers to term slots): someone with two roles
    still fills one slot only. The rule is applied on every call; the matching
    for the same rule and approvers (names and roles) is computed once.
    """
    hit = assignment(rule, approvers)
    return None if hit is None else {term: list(names) for term, names in hit.items()}


def assignment(rule: Rule, approvers: Sequence[Enrollment]) -> Mapping[str, tuple[str, ...]] | None:
    """:func:`satisfy`'s answer, read-only and shared between callers (not copied)."""
    key = (rule, tuple((a.name, a.roles) for a in approvers))
    try:
        return _SATISFIED[key]
    except KeyError:
        pass
    matched = _match(rule, approvers)
    hit = None if matched is None else MappingProxyType(
        {term: tuple(names) for term, names in matched.items()})
    if len(_SATISFIED) >= _SATISFIED_SIZE:
        _SATISFIED.clear()
    _SATISFIED[key] = hit
    return hit


def _match(rule: Rule, approvers: Sequence[Enrollment]) -> dict[str, list[str]] | None:
    slots = [t for t in rule.terms for _ in range(t.k)]
    match: dict[int, int] = {}  # slot -> approver index

    def augment(i: int, seen: set[int]) -> bool:
        for s, term in enumerate(slots):
            if term.group not in approvers[i].roles or s in seen:
                continue
            seen.add(s)
            if s not in match or augment(match[s], seen):
                match[s] = i
                return True
        return False

    for i in range(len(approvers)):
        augment(i, set())
    if len(match) < len(slots):
        return None
    out: dict[str, list[str]] = {}
    for s, i in sorted(match.items()):
        out.setdefault(str(slots[s]), []).append(approvers[i].name)
    return out

"""Break-glass: one listed person takes emergency access alone, loudly, and is reviewed afterwards.

A resource's officer-signed label lists who may break glass on it and for how
long (``break_glass``, ``break_glass_window_s``, default 30 minutes). The
person signs a break-glass statement with a reason; the gate accepts it in
place of a grant while the window lasts, provided the person is enrolled,
vetted and cleared (lapsed vetting still forbids everything). Taking it
appends a ``critical`` audit entry at once (:data:`ALERT_ACTION`), and it stays
*pending review* until a quorum (:data:`REVIEW_RULE`, the taker excluded)
has signed a review::

    env = take(alice_key, "alice", "minilm", "load", "prod incident 4411", now=now)
    bg = verify_break_glass(env, directory, engine, resource, now=now)
    submit_review(store, review(carol_key, "carol", env, "justified", now=now))
    review_status(bg, reviews, directory)      # (done, reviewers)

Do not list many people for break-glass: it bypasses approvals by design.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.access import statements
from strongroom.access.approvals import satisfy
from strongroom.access.directory import (
    Directory,
    Enrollment,
    Resource,
    ResourceLabel,
    Rule,
    base_name,
)
from strongroom.access.grants import CLOCK_SKEW_S
from strongroom.access.policy import PolicyEngine
from strongroom.access.statements import VerifyCache
from strongroom.crypto.dsse import key_id
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput
from strongroom.store.db import Store

__all__ = [
    "ALERT_ACTION",
    "REVIEW_RULE",
    "VERDICTS",
    "BreakGlass",
    "Review",
    "require_listed",
    "review",
    "review_statement",
    "review_status",
    "submit_break_glass",
    "submit_review",
    "take",
    "verified_reviews",
    "verify_break_glass",
]

#: Audit action of taking break-glass access; its details carry ``severity: critical``.
ALERT_ACTION = "access.break-glass"
#: Who must review a break-glass access afterwards (the taker never counts).
REVIEW_RULE = Rule.parse("2 of security-officers")
#: Default bytes a break-glass access may release.
DEFAULT_BREAK_GLASS_BYTES = 1 << 40


@dataclass(frozen=True)
class BreakGlass:
    """A verified break-glass statement."""

    id: str
    principal: str
    principal_key: str
    resource: str
    action: str
    reason: str
    issued: int
    expires: int
    byte_budget: int

    @classmethod
    def from_statement(cls, st: dict[str, Any], bg_id: str) -> BreakGlass:
        """Parse a verified break-glass statement."""
        try:
            return cls(bg_id, str(st["principal"]), str(st["principal_key"]),
                       str(st["resource"]), str(st["action"]), str(st["reason"]),
                       int(st["issued"]), int(st["expires"]), int(st["byte_budget"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"break-glass statement has an unexpected shape ({exc})",
                                 obj="break-glass") from None


def take(key: Ed25519PrivateKey, name: str, resource: str, action: str, reason: str, *,
         now: float, window_s: int = 1800, byte_budget: int = DEFAULT_BREAK_GLASS_BYTES) -> str:
    """A break-glass statement signed by the person taking it."""
    if not reason.strip():
        raise InvalidInput("break-glass needs a reason", obj=resource,
                           remedy="say what the emergency is (--reason)")
    if action not in ("infer", "load", "read", "export"):
        raise InvalidInput(f"cannot break glass for {action!r}", obj=resource)
    return statements.sign("break-glass", {
        "principal": name, "principal_key": key_id(key.public_key()), "resource": resource,
        "action": action, "reason": reason, "issued": int(now),
        "expires": int(now) + int(window_s), "byte_budget": int(byte_budget),
        "nonce": secrets.token_hex(8)}, key)


def require_listed(directory: Directory, resource: str, name: str, key_id: str
                   ) -> ResourceLabel:
    """The label of ``resource`` if it lists ``name`` (or ``key_id``) for break-glass.

    AccessDenied otherwise: the one check the gate, the embedded service and the
    API's break-glass route share, so a break-glass that cannot hold is refused alike.
    """
    label = directory.label(resource)
    if label is None or not ({name, key_id} & set(label.break_glass)):
        raise AccessDenied(f"{name} is not listed for break-glass on {base_name(resource)}",
                           obj=resource, remedy="request access and collect approvals")
    return label


def verify_break_glass(env: str, directory: Directory, engine: PolicyEngine, resource: Resource,
                       *, now: float, cache: VerifyCache | None = None) -> BreakGlass:
    """Check a break-glass statement for ``resource`` at ``now`` (AccessDenied if it does not hold)."""
    cache = cache or VerifyCache()
    obj = resource.name
    try:
        kid = str(statements.unverified_payload(env).get("principal_key", ""))
    except InvalidInput:
        raise AccessDenied("the break-glass statement is malformed", obj=obj) from None
    who = directory.principal(kid)
    if who is None:
        raise AccessDenied("break-glass by a key that is not enrolled", obj=obj)
    try:
        bg = BreakGlass.from_statement(
            cache.verify(env, "break-glass", {kid: who.public_key}, obj="break-glass"),
            statements.payload_digest(env))
    except IntegrityError as exc:
        raise AccessDenied(f"the break-glass statement does not verify: {exc.message}",
                           obj=obj) from None
    label = require_listed(directory, obj, who.name, who.key_id)
    if bg.principal != who.name or bg.principal_key != kid:
        raise AccessDenied("the break-glass statement names another person", obj=obj)
    if bg.resource not in (resource.name, base_name(resource.name)):
        raise AccessDenied(f"the break-glass is for {bg.resource}", obj=obj)
    if bg.expires - bg.issued > label.break_glass_window_s or bg.issued > now + CLOCK_SKEW_S:
        raise AccessDenied("the break-glass window is longer than the label allows", obj=obj)
    if now >= bg.expires:
        raise AccessDenied("the break-glass window has closed", obj=obj,
                           remedy="request access and collect approvals")
    if not engine.decide(who, bg.action, resource, now).allowed:
        raise AccessDenied(f"policy denies {who.name} {bg.action} on {obj} even in an emergency "
                           "(clearance, compartments or vetting)", obj=obj)
    return bg


def submit_break_glass(store: Store, env: str) -> str:
    """Store a break-glass statement where the gate looks for it (the taker's key, the resource)."""
    st = statements.unverified_payload(env)
    return statements.put(store, "break-glass", env, subject=str(st.get("principal_key", "")),
                          resource=base_name(str(st.get("resource", ""))),
                          expires=int(st.get("expires", 0)))


#: A review's verdicts (the console shows ``unjustified`` as "not justified").
VERDICTS = ("justified", "unjustified")


def review_statement(bg_id: str, name: str, reviewer_key: str, verdict: str, *, now: float,
                     note: str = "") -> dict[str, Any]:
    """The unsigned review of break-glass ``bg_id`` (signed by an identity or a security key)."""
    if verdict not in VERDICTS:
        raise InvalidInput("a review's verdict is justified or unjustified", obj="review")
    return {"break_glass": bg_id, "reviewer": name, "reviewer_key": reviewer_key,
            "verdict": verdict, "note": note, "issued": int(now)}


def review(key: Ed25519PrivateKey, name: str, bg_env: str, verdict: str, *, now: float,
           note: str = "") -> str:
    """A signed review of a break-glass access (``justified`` or ``unjustified``)."""
    return statements.sign("review", review_statement(
        statements.payload_digest(bg_env), name, key_id(key.public_key()), verdict, now=now,
        note=note), key)


def submit_review(store: Store, env: str) -> str:
    """Store a review under the break-glass id it reviews."""
    st = statements.unverified_payload(env)
    return statements.put(store, "review", env, subject=str(st.get("break_glass", "")))


@dataclass(frozen=True)
class Review:
    """A review whose signature verified under its reviewer's enrollment."""

    digest: str
    reviewer: Enrollment
    verdict: str
    note: str
    issued: int
    #: signed with an enrolled security key in the console (else the identity key)
    security_key: bool


def verified_reviews(bg: BreakGlass, review_envs: Sequence[str], directory: Directory,
                     cache: VerifyCache | None = None) -> list[Review]:
    """The reviews of ``bg`` that verify: one per person, never the taker's.

    A review signed with an identity key (CLI, API) and one signed with an enrolled
    security key (the console: :func:`strongroom.access.fido.verify_envelope`) count alike.
    """
    from strongroom.access import fido

    cache = cache or VerifyCache()
    out: list[Review] = []
    seen: set[str] = set()
    for env in review_envs:
        try:
            kid = str(statements.unverified_payload(env).get("reviewer_key", ""))
        except InvalidInput:
            continue
        who = directory.principal(kid)
        if who is None or who.name in seen or kid == bg.principal_key or who.name == bg.principal:
            continue
        keyed = fido.is_webauthn(env)
        try:
            st = fido.verify_envelope(env, "review", {kid: who}, obj="review").statement \
                if keyed else cache.verify(env, "review", {kid: who.public_key}, obj="review")
        except IntegrityError:
            continue
        if st.get("break_glass") != bg.id or st.get("verdict") not in VERDICTS:
            continue
        seen.add(who.name)
        out.append(Review(statements.payload_digest(env), who, str(st["verdict"]),
                          str(st.get("note", "")), int(st.get("issued", 0) or 0), keyed))
    return out


def review_status(bg: BreakGlass, review_envs: Sequence[str], directory: Directory,
                  cache: VerifyCache | None = None) -> tuple[bool, list[str]]:
    """Whether a quorum reviewed ``bg``, and who (verified, distinct, not the taker)."""
    reviewers = [r.reviewer for r in verified_reviews(bg, review_envs, directory, cache)]
    return satisfy(REVIEW_RULE, reviewers) is not None, [r.name for r in reviewers]

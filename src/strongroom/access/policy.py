"""Cedar policy: who may infer, load, read, export, approve, write or administer what.

The schema and the shipped policy are package data (``policies/*.cedar*``).
Parse once, evaluate many: :class:`PolicyEngine` holds the parsed policy set;
:meth:`PolicyEngine.decide` builds a tiny entity set for one decision (the
gate's path), and :meth:`PolicyEngine.snapshot` parses a whole directory once
for bulk decisions (caps reports, benchmarks)::

    engine = PolicyEngine()                                  # the shipped policy
    engine.decide(alice, "load", resource, now).allowed
    snap = engine.snapshot(principals, resources)
    snap.allowed(alice.key_id, "load", "minilm@1", now)

The default is deny; a permit needs clearance >= classification and the
resource's compartments within the principal's; lapsed or flagged vetting (or
employment that is not active) forbids everything. A replacement policy is a
``policy`` statement signed by k officers (:func:`sign_policy`); one that does
not parse or validate against the schema is refused and the old one stays.
Cedar has no set-size operator, so approval counts are computed in Python
(:mod:`strongroom.access.approvals`), never in a policy.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources as package_data
from typing import Any

import cedarpy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from strongroom.access import statements
from strongroom.access.directory import DirectoryReader, Enrollment, Resource
from strongroom.crypto.dsse import ExternalKey
from strongroom.errors import IntegrityError, InvalidInput

__all__ = [
    "ACTIONS",
    "Decision",
    "PolicyEngine",
    "PolicySnapshot",
    "action_for_purpose",
    "current_policy",
    "schema_text",
    "shipped_policy",
    "sign_policy",
    "validate_policy",
]

#: Cedar actions; release purposes map onto the first five.
ACTIONS = ("infer", "load", "read", "export", "approve", "write", "administer")
_NS = "Strongroom"
#: Parsed entity sets kept for reuse (per engine).
ENTITY_CACHE_SIZE = 4096


def action_for_purpose(purpose: str) -> str:
    """The Cedar action of a release purpose, ``<purpose>`` or ``<purpose>: <reason>``.

    ``verify`` reads plaintext hashes and counts as a load; ``transfer`` (an
    airgap bundle re-wrapping keys for another enclave) is a copy leaving, an
    export.
    """
    head = purpose.split(":", 1)[0].strip()
    if head in ("load", "load (lazy)", "verify"):
        return "load"
    if head == "read":
        return "read"
    if head in ("export", "transfer"):
        return "export"
    raise InvalidInput(f"release purpose {purpose!r} maps to no access action", obj="release",
                       remedy="use load, load (lazy), verify, read, export or transfer, "
                       "optionally followed by ': <reason>'; inference goes through the "
                       "gateway, which never releases keys to callers")


def _data(name: str) -> str:
    return (package_data.files("strongroom.access") / "policies" / name).read_text("utf-8")


def schema_text() -> str:
    """The Cedar schema shipped with strongroom."""
    return _data("strongroom.cedarschema")


def shipped_policy() -> str:
    """The Cedar policy shipped with strongroom."""
    return _data("base.cedar")


def validate_policy(text: str) -> cedarpy.PolicySet:
    """Parse ``text`` and validate it against the schema, or raise InvalidInput naming the error."""
    try:
        parsed = cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        raise InvalidInput(f"policy does not parse: {str(exc)[:300]}", obj="policy",
                           remedy="fix the policy; the current one stays in force") from None
    result = cedarpy.validate_policies(text, schema_text())
    if not result.validation_passed:
        first = "; ".join(str(e) for e in result.errors[:3])
        raise InvalidInput(f"policy does not validate against the schema: {first[:300]}",
                           obj="policy", remedy="fix the policy; the current one stays in force")
    return parsed


def sign_policy(text: str, serial: int, issued: int,
                *officers: Ed25519PrivateKey | ExternalKey,
                pq: MLDSA65PrivateKey | None = None) -> str:
    """A policy statement (validated first) signed by each officer key given (``pq``: a hybrid
    officer's ML-DSA-65 key)."""
    validate_policy(text)
    return statements.sign("policy", {"cedar": text, "serial": serial, "issued": issued},
                           *officers, pq=pq)


def current_policy(reader: DirectoryReader) -> tuple[str, int]:
    """The newest officer-signed policy that validates, and its serial (shipped policy: 0)."""
    best: tuple[str, int] = (shipped_policy(), 0)
    for env in statements.envelopes(reader.store, "policy", subject="policy"):
        try:
            st = reader.verify_officer_statement(env, "policy", "policy")
            text, serial = str(st["cedar"]), int(st["serial"])
        except (IntegrityError, InvalidInput, KeyError, TypeError, ValueError):
            continue
        if serial > best[1]:
            try:
                validate_policy(text)
            except InvalidInput:
                continue  # a policy that does not validate is refused: the old one stays
            best = (text, serial)
    return best


@dataclass(frozen=True)
class Decision:
    """Allowed or not, and the ids of the policies that decided it."""

    allowed: bool
    reasons: tuple[str, ...] = ()


def _principal_entity(p: Enrollment) -> dict[str, Any]:
    return {"uid": {"type": f"{_NS}::Principal", "id": p.key_id},
            "attrs": {"kind": p.kind, "clearance": p.clearance,
                      "compartments": list(p.compartments),
                      "vetting_status": p.vetting.status,
                      "vetting_expires": p.vetting.expires,
                      "vetting_flags": list(p.vetting.flags),
                      "employment": p.employment},
            "parents": [{"type": f"{_NS}::Role", "id": r} for r in p.roles]}


def _resource_entity(r: Resource) -> dict[str, Any]:
    return {"uid": {"type": f"{_NS}::Resource", "id": r.name},
            "attrs": {"kind": r.kind, "classification": r.classification,
                      "compartments": list(r.compartments)},
            "parents": []}


def _request(kid: str, action: str, resource: str, now: int) -> dict[str, Any]:
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}", obj="policy",
                           remedy="use one of " + ", ".join(ACTIONS))
    return {"principal": {"type": f"{_NS}::Principal", "id": kid},
            "action": {"type": f"{_NS}::Action", "id": action},
            "resource": {"type": f"{_NS}::Resource", "id": resource},
            "context": json.dumps({"now": now})}


def _decision(result: cedarpy.AuthzResult) -> Decision:
    reasons = tuple(result.diagnostics.reasons)
    annotations = result.diagnostics.id_annotations_by_reason
    named = tuple(str(annotations.get(r, r)) if isinstance(annotations, Mapping) else r
                  for r in reasons)
    return Decision(result.allowed, named)


class PolicyEngine:
    """A parsed policy set, evaluated against principals and resources."""

    def __init__(self, policy: str | None = None) -> None:
        self.text = policy if policy is not None else shipped_policy()
        self._policies = validate_policy(self.text)
        self._schema = cedarpy.Schema.from_str(schema_text())
        self._lock = threading.Lock()
        self._parsed: OrderedDict[tuple[tuple[Enrollment, ...], Resource], Any] = OrderedDict()
        self._decided: dict[tuple[Any, ...], tuple[Decision, ...]] = {}
        self._decided_second = 0

    def decide(self, principal: Enrollment, action: str, resource: Resource, now: float) -> Decision:
        """One decision; builds an entity set of just this principal, its roles and the resource."""
        return self.decide_many([(principal, action)], resource, now)[0]

    def decide_many(self, asks: Sequence[tuple[Enrollment, str]], resource: Resource,
                    now: float) -> list[Decision]:
        """Decisions for several (principal, action) on one resource, in one Cedar call."""
        if not asks:
            return []
        principals = tuple(sorted({p.key_id: p for p, _ in asks}.values(),
                                  key=lambda p: p.key_id))
        second = int(now)
        # Cedar sees only int(now): decisions for the same entities, requests and second are
        # exactly what evaluating again would give. Never reused for another second.
        key = (principals, resource, tuple((p.key_id, a) for p, a in asks), second)
        with self._lock:
            hit = self._decided.get(key)
        if hit is not None:
            return list(hit)
        entities = self._entities(principals, resource)
        results = cedarpy.is_authorized_batch(
            [_request(p.key_id, action, resource.name, second) for p, action in asks],
            self._policies, entities)
        out = [_decision(r) for r in results]
        with self._lock:
            if self._decided_second != second:
                self._decided.clear()  # entries of past seconds can never be hit again
                self._decided_second = second
            if len(self._decided) < ENTITY_CACHE_SIZE:
                self._decided[key] = tuple(out)
        return out

    def _entities(self, principals: tuple[Enrollment, ...], resource: Resource) -> Any:
        """Parsed entities of these principals and the resource, reused while they are unchanged.

        The key is the principals' and resource's full (frozen) values, so a
        changed enrollment or label is parsed afresh, never served stale.
        """
        key = (principals, resource)
        with self._lock:
            hit = self._parsed.get(key)
            if hit is not None:
                self._parsed.move_to_end(key)
                return hit
        ents = [_resource_entity(resource)]
        roles: set[str] = set()
        for p in principals:
            ents.append(_principal_entity(p))
            roles.update(p.roles)
        ents += [{"uid": {"type": f"{_NS}::Role", "id": r}, "attrs": {}, "parents": []}
                 for r in sorted(roles)]
        try:
            entities = cedarpy.Entities.from_json_str(json.dumps(ents), self._schema)
        except ValueError as exc:
            raise InvalidInput(f"directory entries do not fit the schema: {str(exc)[:200]}",
                               obj=resource.name) from None
        with self._lock:
            self._parsed[key] = entities
            if len(self._parsed) > ENTITY_CACHE_SIZE:
                self._parsed.popitem(last=False)
        return entities

    def snapshot(self, principals: Iterable[Enrollment],
                 resources: Iterable[Resource]) -> PolicySnapshot:
        """Parse a whole directory once for many decisions."""
        return PolicySnapshot(self, principals, resources)


class PolicySnapshot:
    """A directory parsed once into Cedar entities (10,000 principals parse in ~0.4 s)."""

    def __init__(self, engine: PolicyEngine, principals: Iterable[Enrollment],
                 resources: Iterable[Resource]) -> None:
        self._policies = engine._policies
        ents: list[dict[str, Any]] = []
        roles: set[str] = set()
        for p in principals:
            ents.append(_principal_entity(p))
            roles.update(p.roles)
        ents += [_resource_entity(r) for r in resources]
        ents += [{"uid": {"type": f"{_NS}::Role", "id": r}, "attrs": {}, "parents": []}
                 for r in sorted(roles)]
        try:
            self._entities = cedarpy.Entities.from_json_str(json.dumps(ents), engine._schema)
        except ValueError as exc:
            raise InvalidInput(f"directory does not fit the schema: {str(exc)[:200]}",
                               obj="directory") from None

    def decide(self, kid: str, action: str, resource: str, now: float) -> Decision:
        """The decision for principal key ``kid`` doing ``action`` on ``resource``."""
        result = cedarpy.is_authorized(_request(kid, action, resource, int(now)),
                                       self._policies, self._entities)
        return _decision(result)

    def allowed(self, kid: str, action: str, resource: str, now: float) -> bool:
        """Just the verdict."""
        return self.decide(kid, action, resource, now).allowed

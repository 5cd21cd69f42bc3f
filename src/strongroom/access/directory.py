"""The directory: people and services, their clearances, compartments, roles and vetting; resource labels.

Nothing here is believed because a row says so. A principal exists only
through an **enrollment statement** signed by ``k`` of the security officers
pinned in the sealed keyring; a resource's classification, compartments,
approval rules and break-glass list come from a **label statement** signed the
same way; a **revocation statement** (same quorum) kills a key. Use it like
this::

    env = Enrollment(name="alice", key=pub.public_bytes, roles=("approvers",),
                     clearance=level("secret"), compartments=("atlas",),
                     vetting=Vetting("active", granted, expires)).sign(officer1, officer2)
    publish(store, "enrollment", env)                   # or cosign later: same payload merges
    reader = DirectoryReader(store, officers, threshold)
    view = reader.view(key_ids=[kid], resources=["minilm"])   # verified Directory
    view.principal(kid)                                  # None unless enrolled, current, not revoked

Do not build a :class:`Directory` from database rows yourself; build it with
:class:`DirectoryReader`, which verifies every statement. An enrollment with a
higher ``serial`` supersedes a lower one, and once this process has seen a
serial it never accepts a lower one for that key (a deleted newer enrollment
does not resurrect an older, broader one while the service runs).

An enrollment may pin the person's ML-DSA-65 public key beside Ed25519
(``mldsa_key``, from a hybrid ``.pub``); from then on the statements that
person signs (requests, approvals, denials, Grants, Grant revocations) count
only with both signatures verifying (:meth:`Enrollment.pq_pins`).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.access import statements
from strongroom.access.fido import SecurityKey
from strongroom.access.statements import VerifyCache
from strongroom.artifacts import base_name as base_name  # re-exported: labels and Grants key on it
from strongroom.crypto.dsse import ExternalKey, key_id
from strongroom.crypto.ed25519 import check_public_key
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.keys.officers import Officers
from strongroom.store.db import Store

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_WEIGHTS_CLASSIFICATION",
    "LEVELS",
    "Directory",
    "DirectoryReader",
    "Enrollment",
    "KeyRevocation",
    "Resource",
    "ResourceLabel",
    "Rule",
    "Term",
    "Vetting",
    "level",
    "level_name",
    "publish",
]

#: Clearance and classification levels, lowest first.
LEVELS = ("public", "internal", "confidential", "secret", "top-secret")
#: Weights carry no classification of their own: unlabeled weights count as this.
DEFAULT_WEIGHTS_CLASSIFICATION = 3
VETTING_STATUSES = ("active", "lapsed", "suspended", "revoked")
EMPLOYMENT_STATES = ("active", "leave", "terminated")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_TERM = re.compile(r"^\s*(\d+)\s+of\s+([A-Za-z0-9][A-Za-z0-9._-]{0,63})\s*$")
#: Hybrid officers' ML-DSA-65 keys signing beside their Ed25519 keys (None: classical ones).
OfficerPQSigners = Sequence[MLDSA65PrivateKey | None] | MLDSA65PrivateKey | None


def level(value: str | int) -> int:
    """The level number of a name (``secret``) or number (``3``)."""
    if isinstance(value, int) and 0 <= value < len(LEVELS):
        return value
    if isinstance(value, str):
        if value in LEVELS:
            return LEVELS.index(value)
        if value.isdigit() and int(value) < len(LEVELS):
            return int(value)
    raise InvalidInput(f"unknown level {value!r}", obj="clearance/classification",
                       remedy="use one of " + ", ".join(LEVELS))


def level_name(value: int) -> str:
    """The name of a level number."""
    return LEVELS[value] if 0 <= value < len(LEVELS) else str(value)


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"invalid {what} {name!r}",
                           remedy="use 1-64 letters, digits, '.', '_', '@', '+' or '-'")
    return name


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a list of strings")
    return tuple(sorted(set(value)))


def _security_keys(value: Any) -> tuple[SecurityKey, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("security_keys is not a list of objects")
    keys = tuple(SecurityKey.from_statement(v) for v in value)
    if len({k.credential_id for k in keys}) != len(keys):
        raise ValueError("a security key is listed twice")
    return keys


@dataclass(frozen=True)
class Vetting:
    """A vetting record: status, when granted and until when, continuous-evaluation flags."""

    status: str
    granted: int
    expires: int
    flags: tuple[str, ...] = ()

    def current(self, now: float) -> bool:
        """Active, unexpired and unflagged at ``now``."""
        return self.status == "active" and self.expires > now and not self.flags


@dataclass(frozen=True)
class Enrollment:
    """A principal as k officers vouched for it: key, roles, clearance, compartments, vetting."""

    name: str
    key: bytes
    roles: tuple[str, ...] = ()
    clearance: int = 0
    compartments: tuple[str, ...] = ()
    vetting: Vetting = field(default_factory=lambda: Vetting("lapsed", 0, 0))
    employment: str = "active"
    kind: str = "person"
    serial: int = 1
    issued: int = 0
    #: Security keys (WebAuthn credentials) the officers enrolled for approving in the console.
    security_keys: tuple[SecurityKey, ...] = ()
    #: The principal's ML-DSA-65 public key (raw); empty for a classical principal.
    mldsa_key: bytes = b""

    def __post_init__(self) -> None:
        _check_name(self.name, "principal name")
        if len(self.key) != 32:
            raise InvalidInput("an Ed25519 public key is 32 bytes", obj=self.name)
        # a small-order key "signs" any approval: refused here, on enrolling and on reading
        check_public_key(self.key, obj=f"enrollment of {self.name}")
        if self.mldsa_key:
            try:
                MLDSA65PublicKey.from_public_bytes(self.mldsa_key)
            except ValueError:
                raise InvalidInput("not an ML-DSA-65 public key (1952 bytes)",
                                   obj=self.name) from None
        if self.kind not in ("person", "service"):
            raise InvalidInput(f"principal kind {self.kind!r} is not person or service",
                               obj=self.name)
        if self.vetting.status not in VETTING_STATUSES:
            raise InvalidInput(f"vetting status {self.vetting.status!r} is not one of "
                               + ", ".join(VETTING_STATUSES), obj=self.name)
        if self.employment not in EMPLOYMENT_STATES:
            raise InvalidInput(f"employment {self.employment!r} is not one of "
                               + ", ".join(EMPLOYMENT_STATES), obj=self.name)
        level(self.clearance)
        for r in self.roles:
            _check_name(r, "role")
        for c in self.compartments:
            _check_name(c, "compartment")

    @functools.cached_property
    def key_id(self) -> str:
        """DSSE key id of the principal's key."""
        return key_id(self.public_key)

    @functools.cached_property
    def public_key(self) -> Ed25519PublicKey:
        """The principal's Ed25519 public key."""
        return Ed25519PublicKey.from_public_bytes(self.key)

    @functools.cached_property
    def mldsa_public_key(self) -> MLDSA65PublicKey | None:
        """The principal's pinned ML-DSA-65 public key, or None."""
        return MLDSA65PublicKey.from_public_bytes(self.mldsa_key) if self.mldsa_key else None

    def pq_pins(self) -> dict[str, MLDSA65PublicKey]:
        """``{key id: ML-DSA key}`` when one is pinned (for ``VerifyCache.verify(pq=)``)."""
        pq = self.mldsa_public_key
        return {self.key_id: pq} if pq is not None else {}

    def eligible(self, now: float) -> bool:
        """Vetting current and employment active (the policy forbids everything otherwise)."""
        return self.vetting.current(now) and self.employment == "active"

    def to_statement(self) -> dict[str, Any]:
        """The signed form."""
        return {"name": self.name, "key": self.key.hex(), "kind": self.kind,
                "roles": sorted(self.roles), "clearance": self.clearance,
                "compartments": sorted(self.compartments),
                "vetting": {"status": self.vetting.status, "granted": self.vetting.granted,
                            "expires": self.vetting.expires, "flags": sorted(self.vetting.flags)},
                "employment": self.employment, "serial": self.serial, "issued": self.issued,
                # absent when empty, so enrollments without security keys sign as before
                **({"security_keys": [k.to_statement() for k in self.security_keys]}
                   if self.security_keys else {}),
                **({"mldsa_key": self.mldsa_key.hex()} if self.mldsa_key else {})}

    @classmethod
    def from_statement(cls, st: Mapping[str, Any]) -> Enrollment:
        """Parse a verified enrollment statement."""
        try:
            v = st["vetting"]
            return cls(name=str(st["name"]), key=bytes.fromhex(st["key"]), kind=str(st["kind"]),
                       roles=_strs(st["roles"], "roles"), clearance=int(st["clearance"]),
                       compartments=_strs(st["compartments"], "compartments"),
                       vetting=Vetting(str(v["status"]), int(v["granted"]), int(v["expires"]),
                                       _strs(v["flags"], "flags")),
                       employment=str(st["employment"]), serial=int(st["serial"]),
                       issued=int(st["issued"]),
                       security_keys=_security_keys(st.get("security_keys", [])),
                       mldsa_key=bytes.fromhex(str(st.get("mldsa_key", ""))))
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise IntegrityError(f"enrollment statement has an unexpected shape ({exc})",
                                 obj="enrollment") from None

    def sign(self, *officers: Ed25519PrivateKey | ExternalKey, pq: OfficerPQSigners = None) -> str:
        """The enrollment statement signed by each officer key given (``pq``: hybrid officers' ML-DSA-65)."""
        return statements.sign("enrollment", self.to_statement(), *officers, pq=pq)


@dataclass(frozen=True)
class Term:
    """``k of group``: k distinct approvers holding role ``group``."""

    k: int
    group: str

    def __str__(self) -> str:
        return f"{self.k} of {self.group}"


@dataclass(frozen=True)
class Rule:
    """An AND of ``k of group`` terms; each approver counts towards one term at most."""

    terms: tuple[Term, ...]

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Parse ``"2 of security-officers AND 1 of model-owners"``."""
        terms = []
        for part in re.split(r"\s+AND\s+", text.strip(), flags=re.I):
            m = _TERM.match(part)
            if not m or int(m.group(1)) < 1:
                raise InvalidInput(f"cannot read approval rule term {part!r}", obj=text,
                                   remedy="write terms like '2 of security-officers AND 1 of "
                                   "model-owners' (k >= 1)")
            terms.append(Term(int(m.group(1)), m.group(2)))
        return cls(tuple(terms))

    @property
    def required(self) -> int:
        """Approvals needed in all."""
        return sum(t.k for t in self.terms)

    def __str__(self) -> str:
        return " AND ".join(map(str, self.terms))


#: Approval rules where a resource's label sets none (per Cedar action).
DEFAULT_RULES: Mapping[str, Rule] = {
    "infer": Rule.parse("1 of approvers"),
    "load": Rule.parse("2 of approvers"),
    "read": Rule.parse("1 of approvers"),
    "export": Rule.parse("2 of approvers AND 1 of security-officers"),
}


@dataclass(frozen=True)
class ResourceLabel:
    """What k officers say about a resource: classification, compartments, rules, break-glass."""

    resource: str
    classification: int
    compartments: tuple[str, ...] = ()
    rules: Mapping[str, Rule] = field(default_factory=dict)
    break_glass: tuple[str, ...] = ()
    break_glass_window_s: int = 1800
    serial: int = 1
    issued: int = 0
    #: Actions whose approvals count only when signed with an enrolled security key.
    security_key_actions: tuple[str, ...] = ()
    #: An attestation policy's name: keys are released only into enclaves it admits.
    attested: str = ""

    def to_statement(self) -> dict[str, Any]:
        """The signed form."""
        return {"resource": self.resource, "classification": self.classification,
                "compartments": sorted(self.compartments),
                "rules": {a: str(r) for a, r in sorted(self.rules.items())},
                "break_glass": sorted(self.break_glass),
                "break_glass_window_s": self.break_glass_window_s,
                "serial": self.serial, "issued": self.issued,
                # absent when empty, so labels without it sign as before
                **({"security_key_actions": sorted(self.security_key_actions)}
                   if self.security_key_actions else {}),
                **({"attested": self.attested} if self.attested else {})}

    @classmethod
    def from_statement(cls, st: Mapping[str, Any]) -> ResourceLabel:
        """Parse a verified label statement."""
        try:
            rules = st["rules"]
            if not isinstance(rules, dict):
                raise ValueError("rules is not an object")
            return cls(resource=str(st["resource"]), classification=level(st["classification"]),
                       compartments=_strs(st["compartments"], "compartments"),
                       rules={str(a): Rule.parse(str(r)) for a, r in rules.items()},
                       break_glass=_strs(st["break_glass"], "break_glass"),
                       break_glass_window_s=int(st["break_glass_window_s"]),
                       serial=int(st["serial"]), issued=int(st["issued"]),
                       security_key_actions=_strs(st.get("security_key_actions", []),
                                                  "security_key_actions"),
                       attested=str(st.get("attested", "")))
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise IntegrityError(f"label statement has an unexpected shape ({exc})",
                                 obj="label") from None

    def sign(self, *officers: Ed25519PrivateKey | ExternalKey, pq: OfficerPQSigners = None) -> str:
        """The label statement signed by each officer key given (``pq``: hybrid officers' ML-DSA-65)."""
        return statements.sign("label", self.to_statement(), *officers, pq=pq)


@dataclass(frozen=True)
class KeyRevocation:
    """k officers revoke a principal's key: its enrollment and approvals stop counting."""

    key_id: str
    reason: str
    issued: int

    def sign(self, *officers: Ed25519PrivateKey | ExternalKey, pq: OfficerPQSigners = None) -> str:
        """The revocation statement signed by each officer key given (``pq``: hybrid officers')."""
        return statements.sign("revocation", {"key_id": self.key_id, "reason": self.reason,
                                              "issued": self.issued}, *officers, pq=pq)


@dataclass(frozen=True)
class Resource:
    """A resource as decisions see it: name, kind, classification, compartments."""

    name: str
    kind: str
    classification: int
    compartments: tuple[str, ...] = ()

    def labelled(self, label: ResourceLabel | None) -> Resource:
        """Most restrictive of this and the label: higher classification, union of compartments."""
        if label is None:
            return self
        return Resource(self.name, self.kind, max(self.classification, label.classification),
                        tuple(sorted(set(self.compartments) | set(label.compartments))))


@dataclass
class Directory:
    """A verified view: principals by key id, labels by resource name, revoked keys."""

    principals: dict[str, Enrollment] = field(default_factory=dict)
    labels: dict[str, ResourceLabel] = field(default_factory=dict)
    revoked_keys: set[str] = field(default_factory=set)

    def principal(self, kid: str) -> Enrollment | None:
        """The enrollment of key ``kid`` unless absent or revoked."""
        if kid in self.revoked_keys:
            return None
        return self.principals.get(kid)

    def by_name(self, name: str) -> Enrollment | None:
        """The (unrevoked) principal named ``name``."""
        for kid, p in self.principals.items():
            if p.name == name and kid not in self.revoked_keys:
                return p
        return None

    def label(self, resource: str) -> ResourceLabel | None:
        """The label of ``resource`` (its name without version)."""
        return self.labels.get(base_name(resource))

    def rule(self, resource: str, action: str) -> Rule:
        """The approval rule for ``action`` on ``resource`` (label, else the default)."""
        label = self.label(resource)
        if label is not None and action in label.rules:
            return label.rules[action]
        if action not in DEFAULT_RULES:
            raise InvalidInput(f"no approval rule for action {action!r}", obj=resource)
        return DEFAULT_RULES[action]


def revocation_subject(who: str, people: Iterable[tuple[str, str]],
                       revoked: Iterable[tuple[str, str]] = ()) -> str:
    """The key id ``people revoke WHO`` revokes: a listed name's key, or a key id.

    ``people`` are the (name, key id) pairs of the principals in force; ``revoked``
    those whose keys are revoked already. A name nobody holds is refused rather than signed
    as if it were a key id (a typo must not publish a revocation of nothing), and so
    is a key already revoked. A key id (16 hex characters) of someone not listed is
    accepted: an officer may revoke a key whose enrollment is still collecting
    signatures, or one leaked before it was ever enrolled.
    """
    for name, kid in people:
        if who in (name, kid):
            return kid
    if any(who in pair for pair in revoked):
        raise InvalidInput(f"key {who} is already revoked", obj=who,
                           remedy="nothing to do: `strongroom people ls` lists whose keys count")
    if re.fullmatch(r"[0-9a-f]{16}", who) is None:
        raise InvalidInput("no enrolled person by this name, and it is not a key id", obj=who,
                           remedy="give a name or a 16-hex-digit key id that `strongroom "
                           "people ls` lists")
    return who


OfficerKeys = Callable[[], Mapping[str, Ed25519PublicKey]]
OfficerPQKeys = Callable[[], Mapping[str, MLDSA65PublicKey]]


class DirectoryReader:
    """Builds verified :class:`Directory` views from the store's statements."""

    def __init__(self, store: Store, officers: OfficerKeys, threshold: int,
                 cache: VerifyCache | None = None, *,
                 mldsa: OfficerPQKeys | None = None) -> None:
        if threshold < 1:
            raise InvalidInput("the officer threshold must be at least 1", obj="officers")
        self.store = store
        self.officers = officers
        #: Hybrid officers' ML-DSA-65 keys: such an officer counts only when both signatures verify.
        self.mldsa: OfficerPQKeys = mldsa or dict
        self.threshold = threshold
        self.cache = cache or VerifyCache()
        self._lock = threading.Lock()
        self._high: dict[str, int] = {}
        self._label_high: dict[str, int] = {}
        self._revoked: set[str] = set()

    def verify_officer_statement(self, env: str, kind: str, obj: str) -> dict[str, Any]:
        """A statement only if ``threshold`` pinned officers signed it (hybrid ones with both keys)."""
        return self.cache.verify(env, kind, self.officers(), threshold=self.threshold, obj=obj,
                                 pq=self.mldsa())

    @classmethod
    def for_officers(cls, store: Store, officers: Officers, threshold: int) -> DirectoryReader:
        """A reader trusting ``officers`` (their ML-DSA-65 keys pinned too)."""
        return cls(store, lambda: officers.ed25519, threshold, mldsa=lambda: officers.mldsa)

    def _enrollments(self, envs: Iterable[str]) -> dict[str, Enrollment]:
        best: dict[str, Enrollment] = {}
        for env in envs:
            try:
                e = Enrollment.from_statement(
                    self.verify_officer_statement(env, "enrollment", "enrollment"))
            except (IntegrityError, InvalidInput):
                continue  # unsigned, under-signed or malformed rows grant nothing
            cur = best.get(e.key_id)
            if cur is None or e.serial > cur.serial:
                best[e.key_id] = e
        with self._lock:
            out = {}
            for kid, e in best.items():
                if e.serial >= self._high.get(kid, 0):
                    self._high[kid] = e.serial
                    out[kid] = e
        return out

    def _labels(self, envs: Iterable[str]) -> dict[str, ResourceLabel]:
        best: dict[str, ResourceLabel] = {}
        for env in envs:
            try:
                lab = ResourceLabel.from_statement(
                    self.verify_officer_statement(env, "label", "label"))
            except (IntegrityError, InvalidInput):
                continue
            cur = best.get(lab.resource)
            if cur is None or lab.serial > cur.serial:
                best[lab.resource] = lab
        with self._lock:
            out = {}
            for name, lab in best.items():
                if lab.serial >= self._label_high.get(name, 0):
                    self._label_high[name] = lab.serial
                    out[name] = lab
        return out

    def _revocations(self, envs: Iterable[str]) -> set[str]:
        found = set()
        for env in envs:
            try:
                st = self.verify_officer_statement(env, "revocation", "revocation")
            except (IntegrityError, InvalidInput):
                continue
            if isinstance(st.get("key_id"), str):
                found.add(st["key_id"])
        with self._lock:
            self._revoked |= found  # once seen, a revocation holds while this process runs
            return set(self._revoked)

    def view(self, *, key_ids: Sequence[str] | None = None,
             resources: Sequence[str] | None = None) -> Directory:
        """A verified directory of the given keys and resources (``None``: all of them)."""
        store = self.store
        if key_ids is None:
            enr = statements.envelopes(store, "enrollment")
            rev = statements.envelopes(store, "revocation")
        else:
            ids = sorted(set(key_ids))
            enr = statements.envelopes(store, "enrollment", subjects=ids) if ids else []
            rev = statements.envelopes(store, "revocation", subjects=ids) if ids else []
        if resources is None:
            lab = statements.envelopes(store, "label")
        else:
            names = sorted({base_name(r) for r in resources})
            lab = statements.envelopes(store, "label", subjects=names) if names else []
        return Directory(self._enrollments(enr), self._labels(lab), self._revocations(rev))


def publish(store: Store, kind: str, env: str) -> str:
    """Store an officer statement (enrollment, revocation, label) under its lookup keys; its digest."""
    st = statements.unverified_payload(env)
    if kind == "enrollment":
        try:
            raw = bytes.fromhex(str(st["key"]))
            subject = key_id(Ed25519PublicKey.from_public_bytes(raw))
        except (KeyError, ValueError):
            raise InvalidInput("enrollment statement has no valid key", obj="enrollment") from None
        check_public_key(raw, obj="enrollment statement")  # before anything is stored
        return statements.put(store, kind, env, subject=subject)
    if kind == "revocation":
        return statements.put(store, kind, env, subject=str(st.get("key_id", "")))
    if kind == "label":
        name = str(st.get("resource", ""))
        return statements.put(store, kind, env, subject=name, resource=name)
    raise InvalidInput(f"{kind} is not a directory statement", obj="publish",
                       remedy="publish enrollment, revocation or label statements")

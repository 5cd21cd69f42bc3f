"""Property tests over 10,000+ random directory/policy/grant states (pure decision functions).

* Cedar never lets a principal read above their clearance or outside their
  compartments, and agrees with a plain-Python model of the shipped policy;
* ``verify_grant`` accepts a grant exactly when an independent brute-force
  model of the rule says the approvals suffice (no release without a valid Grant);
* any edit of a valid grant's signed content is refused.

Each example checks a batch of seeded states: 6,000 + 4,000 + 1,500 = 11,500 in all.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.access import statements
from strongroom.access.approvals import AccessRequest, Approval
from strongroom.access.directory import (
    Directory,
    Enrollment,
    Resource,
    ResourceLabel,
    Rule,
    Term,
    Vetting,
)
from strongroom.access.grants import PartsMemo, VerifiedGrant, build_grant, verify_grant
from strongroom.access.policy import PolicyEngine, shipped_policy
from strongroom.access.statements import VerifyCache
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity

NOW = int(time.time())
ENGINE = PolicyEngine()
CACHE = VerifyCache()
COMPARTMENTS = ("atlas", "borealis", "cirrus", "delta")
ROLES = ("approvers", "security-officers", "model-owners")
READS = ("infer", "load", "read", "export")

def _principal(rng: random.Random, name: str = "p", key: bytes | None = None, *,
               vetted: float = 0.0, cleared: float = 0.0) -> Enrollment:
    """A random principal; with probability ``vetted`` its vetting is current, and with
    ``cleared`` it is cleared for RESOURCE (so that both outcomes are common)."""
    good = rng.random() < vetted
    compartments = set(rng.sample(COMPARTMENTS, rng.randint(0, 4)))
    clearance = rng.randint(0, 4)
    if rng.random() < cleared:
        compartments.add("atlas")
        clearance = rng.randint(2, 4)
    return Enrollment(
        name=name, key=key or KEYS[rng.randrange(len(KEYS))],
        kind=rng.choice(("person", "person", "person", "service")),
        roles=tuple(sorted(rng.sample(ROLES, rng.randint(0, len(ROLES))))),
        clearance=clearance, compartments=tuple(sorted(compartments)),
        vetting=Vetting("active" if good else rng.choice(
                            ("active", "active", "lapsed", "suspended", "revoked")),
                        NOW - 100, NOW + (10_000 if good else rng.randint(-50, 10_000)),
                        () if good else tuple(rng.sample(("travel", "debt"),
                                                         rng.choice((0, 0, 1))))),
        employment="active" if good else rng.choice(("active", "active", "leave",
                                                     "terminated")))


def _resource(rng: random.Random) -> Resource:
    return Resource("r@1", rng.choice(("weights", "document")), rng.randint(0, 4),
                    tuple(sorted(rng.sample(COMPARTMENTS, rng.randint(0, 4)))))


#: Real Ed25519 public keys for generated principals.
KEYS = [Identity.generate().public.public_bytes for _ in range(8)]
#: Each example checks a batch of states drawn from seeds: hypothesis's own per-draw
#: overhead would otherwise dominate the run time.
BATCH = 10
seeds = st.lists(st.integers(0, 2**63), min_size=BATCH, max_size=BATCH)


def _vetted(p: Enrollment, now: int) -> bool:
    return (p.vetting.status == "active" and p.vetting.expires > now and not p.vetting.flags
            and p.employment == "active")


def _cleared(p: Enrollment, r: Resource) -> bool:
    return p.clearance >= r.classification and set(r.compartments) <= set(p.compartments)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=seeds)
def test_cedar_never_reads_above_clearance_or_outside_compartments(batch: list[int]) -> None:
    for seed in batch:  # 600 x 10 = 6,000 directory/policy states
        rng = random.Random(seed)
        p, r = _principal(rng, vetted=0.6), _resource(rng)
        action = rng.choice((*READS, "approve"))
        allowed = ENGINE.decide(p, action, r, NOW).allowed
        if allowed:
            assert p.clearance >= r.classification
            assert set(r.compartments) <= set(p.compartments)
            assert _vetted(p, NOW)
        model = _vetted(p, NOW) and _cleared(p, r)
        if action == "export" and p.kind == "service":
            model = False
        if action == "approve" and p.kind != "person":
            model = False
        assert allowed == model, (p, r, action)


# -- grants ---------------------------------------------------------------------------

PEOPLE = [Identity.generate(n) for n in ("req", "a1", "a2", "a3", "a4", "outsider")]
RESOURCE = Resource("r@1", "weights", 2, ("atlas",))


def _request(i: int) -> str:
    req = AccessRequest("req", PEOPLE[0].public.key_id, "r", "load", "p", 3600, 1000,
                        NOW - 500, f"{i:032x}")
    return req.sign(PEOPLE[0].private_key)


REQUESTS = [_request(i) for i in range(2)]


def _approval(signer: int, request: int, expired: bool) -> str:
    ident = PEOPLE[signer]
    issued = NOW - 400
    a = Approval(statements.payload_digest(REQUESTS[request]), ident.name or "",
                 ident.public.key_id,
                 "approve", f"{signer}{request}{expired}".ljust(16, "0"), issued,
                 issued + (50 if expired else 3000))
    return statements.sign("approval", a.to_statement(), ident.private_key)


# (signer index, request index, expired) -> envelope, signed once
APPROVALS = {(s, r, e): _approval(s, r, e) for s in range(6) for r in range(2)
             for e in (False, True)}


def _grant_state(rng: random.Random) -> tuple[Directory, list[tuple[int, int, bool]], Rule, int]:
    enrolled: dict[str, Enrollment] = {}
    for i, ident in enumerate(PEOPLE[:5]):
        if i == 0 or rng.random() < 0.85:
            enrolled[ident.public.key_id] = _principal(rng, ident.name or "", ident.public.public_bytes,
                                                       vetted=0.85, cleared=0.85)
    revoked = {PEOPLE[rng.randint(1, 4)].public.key_id} if rng.random() < 0.3 else set()
    groups = rng.sample(ROLES, rng.randint(1, 2))
    rule = Rule(tuple(Term(rng.choice((1, 1, 2)), g) for g in groups))
    label = ResourceLabel("r", 2, ("atlas",), {"load": rule})
    picked = [(rng.choice((1, 2, 3, 4, 1, 2, 3, 4, 0, 5)), int(rng.random() < 0.1),
               rng.random() < 0.1) for _ in range(rng.randint(0, 7))]
    now_offset = rng.choice((0, 0, 0, 4000))
    return Directory(enrolled, {"r": label}, revoked), picked, rule, now_offset


def _model(directory: Directory, picked: list[tuple[int, int, bool]], rule: Rule,
           now: int) -> bool:
    """Independent model: brute-force assignment of valid approvers to rule slots."""
    req = directory.principal(PEOPLE[0].public.key_id)
    if req is None or not (_vetted(req, now) and _cleared(req, RESOURCE)):
        return False
    if now >= NOW + 3600:  # grant issued at NOW lasts the request's 3600 s
        return False
    people: list[Enrollment] = []
    for signer, request, expired in picked:
        who = directory.principal(PEOPLE[signer].public.key_id)
        if (who is None or signer == 0 or request != 0 or expired or who.kind != "person"
                or not _vetted(who, now) or not _cleared(who, RESOURCE)):
            continue
        if who.name not in [p.name for p in people]:
            people.append(who)
    slots = [t.group for t in rule.terms for _ in range(t.k)]
    if len(people) < len(slots):
        return False
    for chosen in itertools.permutations(people, len(slots)):
        if all(g in p.roles for g, p in zip(slots, chosen, strict=True)):
            return True
    return False


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=seeds)
def test_grant_accepted_exactly_when_the_rule_is_met(batch: list[int]) -> None:
    for seed in batch:  # 400 x 10 = 4,000 grant states
        directory, picked, rule, offset = _grant_state(random.Random(seed))
        envs = [APPROVALS[p] for p in picked]
        grant = build_grant(PEOPLE[0].private_key, REQUESTS[0], envs, now=NOW)
        now = NOW + offset
        try:
            verify_grant(grant, directory, ENGINE, RESOURCE, now=now, cache=CACHE)
            accepted = True
        except AccessDenied:
            accepted = False
        assert accepted == _model(directory, picked, rule, now), (seed, picked, str(rule))


_VALID_DIR = Directory(
    {p.public.key_id: Enrollment(name=p.name or "", key=p.public.public_bytes,
                                 roles=("approvers",), clearance=3, compartments=("atlas",),
                                 vetting=Vetting("active", NOW - 10, NOW + 10**6))
     for p in PEOPLE[:4]}, {}, set())
_VALID = build_grant(PEOPLE[0].private_key, REQUESTS[0],
                     [APPROVALS[(1, 0, False)], APPROVALS[(2, 0, False)]], now=NOW)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(("issued", "expires", "approvals", "request", "nonce", "extra")),
       delta=st.integers(1, 10**6), drop=st.integers(0, 1))
def test_any_edit_of_a_grant_is_refused(field: str, delta: int, drop: int) -> None:
    verify_grant(_VALID, _VALID_DIR, ENGINE, RESOURCE, now=NOW, cache=CACHE)
    env = json.loads(_VALID)
    body = json.loads(base64.b64decode(env["payload"]))
    if field in ("issued", "expires"):
        body[field] += delta
    elif field == "approvals":
        body["approvals"] = [a for i, a in enumerate(body["approvals"]) if i != drop] + (
            [APPROVALS[(3, 1, False)]] if delta % 2 else [])
    elif field == "request":
        body["request"] = REQUESTS[1]
    elif field == "nonce":
        body["nonce"] = f"{delta:016x}"
    else:
        body["byte_budget"] = delta
    env["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    try:
        verify_grant(json.dumps(env), _VALID_DIR, ENGINE, RESOURCE, now=NOW, cache=CACHE)
    except AccessDenied:
        return
    raise AssertionError(f"an edited grant ({field}) was accepted")


def _outcome(grant: str, directory: Directory, engine: PolicyEngine, now: int,
             memo: PartsMemo | None = None) -> VerifiedGrant | str:
    try:
        return verify_grant(grant, directory, engine, RESOURCE, now=now, cache=CACHE, memo=memo)
    except AccessDenied as exc:
        return f"{type(exc).__name__}: {exc.message}"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=seeds, times=st.lists(st.integers(-60, 3700), min_size=2, max_size=8))
def test_the_gate_path_decides_as_a_fresh_verification(batch: list[int],
                                                       times: list[int]) -> None:
    """The gate's path (one parts memo across calls, Cedar asked at each ``now``, the last
    outcome reused only for the same decisions) accepts, refuses and returns exactly what a
    fresh verification does, whatever the order of the times and whoever's vetting lapses
    between them."""
    for seed in batch:
        rng = random.Random(seed)
        directory, picked, rule, _ = _grant_state(rng)
        for kid, p in list(directory.principals.items()):  # lapses within the grant's life
            if rng.random() < 0.5:
                directory.principals[kid] = replace(p, vetting=replace(
                    p.vetting, expires=NOW + rng.randint(0, 3700)))
        grant = build_grant(PEOPLE[0].private_key, REQUESTS[0],
                            [APPROVALS[p] for p in picked], now=NOW)
        memo: PartsMemo = {}
        for t in times:
            fresh = _outcome(grant, directory, ENGINE, NOW + t)
            assert _outcome(grant, directory, ENGINE, NOW + t, memo) == fresh, (seed, t)
            assert isinstance(fresh, VerifiedGrant) == _model(directory, picked, rule, NOW + t)


def test_the_gate_path_asks_the_policy_in_force() -> None:
    """An outcome held from one policy is not reused under another that refuses it."""
    memo: PartsMemo = {}
    held = _outcome(_VALID, _VALID_DIR, ENGINE, NOW, memo)
    assert isinstance(held, VerifiedGrant)
    assert _outcome(_VALID, _VALID_DIR, ENGINE, NOW + 1, memo) is held
    with pytest.raises(TypeError):
        held.assignment["2 of approvers"] = ()  # type: ignore[index]  # shared: read-only
    no_approvals = PolicyEngine(shipped_policy() + "\nforbid (principal, "
                                "action == Strongroom::Action::\"approve\", resource);")
    refused = _outcome(_VALID, _VALID_DIR, no_approvals, NOW + 2, memo)
    assert isinstance(refused, str) and refused.startswith("ApprovalRequired")
    assert refused == _outcome(_VALID, _VALID_DIR, no_approvals, NOW + 2)
    assert _outcome(_VALID, _VALID_DIR, ENGINE, NOW + 3, memo) == held

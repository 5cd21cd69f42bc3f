"""Access benchmarks: Cedar decisions and Grant verification, in-process.

Targets (issue 4): policy decisions >= 20,000/s with 10,000 principals and
1,000 resources, p99 <= 1 ms; Grant verification with 3 approvals >= 5,000/s.

    .venv/bin/python bench/access.py [--decisions 50000] [--grants 5000]

* **decisions**: one pre-parsed :class:`PolicySnapshot` of 10,000 principals
  and 1,000 resources; random (principal, action, resource) per call.
* **grant verification**: :func:`verify_grant` on grants of 3 approvals each
  (request + 3 approvals + the grant's own signature, the rule, and Cedar
  for the requester and each approver), against a verified in-memory
  directory. ``cold``: every grant seen for the first time (5 Ed25519
  verifications each); ``warm``: grants already verified once (the gate's
  steady state: one grant checked at every shard release), signatures served
  by the verify cache, rule re-evaluated, Cedar decisions reused within the
  same second (Cedar sees only ``int(now)``); ``a new second each``: warm,
  but every call in a different second so Cedar is evaluated every time;
  ``the gate's path``: as the release gate runs it, the time-independent
  checks memoised per directory view (:class:`~strongroom.access.grants.GrantParts`),
  expiry and Cedar at ``now`` (a new second each) every time; the rule's count and
  the verified grant are reused while Cedar's decisions are the ones it last held.

Both print the CPU time per operation (``time.process_time``) beside the rate:
on a shared 2-core machine the rate swings with the load, the CPU much less.
The floors printed beside them are what Cedar itself costs in the same run:
cedarpy's public ``is_authorized``, and its core (``cedarpy._internal``, which
strongroom calls directly once a start-up self-check passes) on pre-built
requests with no result parsed; for grants, the core on the same four requests
(three approvers and the requester) a grant verification asks.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import cedarpy
from cedarpy import _internal as cedar_core

from strongroom.access.approvals import AccessRequest, approve
from strongroom.access.directory import (
    Directory,
    Enrollment,
    Resource,
    ResourceLabel,
    Rule,
    Vetting,
)
from strongroom.access.grants import PartsMemo, build_grant, verify_grant
from strongroom.access.policy import PolicyEngine, _Core, _request
from strongroom.access.statements import VerifyCache
from strongroom.keys.identity import Identity

COMPARTMENTS = ("atlas", "borealis", "cirrus", "delta", "eos", "fjord")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ratio(value: float, target: float, higher_is_better: bool = True) -> str:
    r = value / target if higher_is_better else target / value
    return f"{r:.2f}x target ({'ok' if r >= 1 else 'BELOW'})"


def bench_decisions(n: int, rng: random.Random) -> None:
    """Decisions/s and p99 over a 10k-principal, 1k-resource snapshot."""
    now = int(time.time())
    people = [Enrollment(
        name=f"p{i}", key=Identity.generate().public.public_bytes, roles=("approvers",),
        clearance=rng.randint(0, 4), compartments=tuple(rng.sample(COMPARTMENTS,
                                                                   rng.randint(0, 3))),
        vetting=Vetting("active" if rng.random() < 0.95 else "lapsed", now, now + 10**6))
        for i in range(10_000)]
    ids = [p.key_id for p in people]
    resources = [Resource(f"r{i}@1", "weights", rng.randint(0, 4),
                          tuple(rng.sample(COMPARTMENTS, rng.randint(0, 2))))
                 for i in range(1_000)]
    engine = PolicyEngine()
    t0 = time.perf_counter()
    snap = engine.snapshot(people, resources)
    parse = time.perf_counter() - t0
    actions = ("infer", "load", "read", "export")
    lat = []
    allowed = 0
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        allowed += snap.allowed(ids[rng.randrange(10_000)], rng.choice(actions),
                                resources[rng.randrange(1_000)].name, now)
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu
    lat.sort()
    rate = n / total
    p99 = lat[int(0.99 * n)] * 1000
    print(f"policy decisions: {rate:,.0f}/s  p50 {statistics.median(lat) * 1e3:.3f} ms  "
          f"p99 {p99:.3f} ms  CPU {cpu / n * 1e6:.1f} us/decision  ({allowed / n:.0%} allowed; "
          f"10,000 principals + 1,000 resources parsed once in {parse:.2f} s; cedarpy's core "
          f"called {'directly' if _Core.usable() else 'through its public API (self-check failed)'})")
    print(f"  throughput {_ratio(rate, 20_000)}; p99 {_ratio(p99, 1.0, False)}")
    # The floor in this run: cedarpy alone on requests built beforehand (the same
    # policy set and entities), i.e. the most any wrapper of it could reach here.
    reqs = [_request(ids[rng.randrange(10_000)], rng.choice(actions),
                     resources[rng.randrange(1_000)].name, now) for _ in range(min(n, 20_000))]
    start = time.perf_counter()
    for q in reqs:
        cedarpy.is_authorized(q, snap._policies, snap._entities)
    floor = len(reqs) / (time.perf_counter() - start)
    inner = snap._entities._inner
    start = time.perf_counter()
    for q in reqs:
        cedar_core.is_authorized(q, snap._policies, inner, None, False)
    core = len(reqs) / (time.perf_counter() - start)
    print(f"  cedarpy.is_authorized alone (pre-built requests, same snapshot): {floor:,.0f}/s; "
          f"its core alone (cedarpy._internal.is_authorized, result not parsed): {core:,.0f}/s; "
          f"strongroom's decisions reach {rate / floor:.0%} and {rate / core:.0%} of them "
          f"(load average {_load()})")


def bench_grants(n: int) -> None:
    """Grant verifications/s with 3 approvals, cold and warm."""
    now = int(time.time())
    requesters = [Identity.generate(f"req{i}") for i in range(50)]
    approvers = [Identity.generate(f"apr{i}") for i in range(6)]
    people = {}
    for ident in requesters + approvers:
        e = Enrollment(name=ident.name or "", key=ident.public.public_bytes,
                       roles=("approvers", "security-officers") if ident in approvers[:2]
                       else ("approvers",), clearance=4, compartments=("atlas",),
                       vetting=Vetting("active", now, now + 10**6))
        people[e.key_id] = e
    resource = Resource("minilm@1", "weights", 3, ("atlas",))
    label = ResourceLabel("minilm", 3, ("atlas",),
                          {"load": Rule.parse("2 of approvers AND 1 of security-officers")})
    directory = Directory(people, {"minilm": label}, set())
    engine = PolicyEngine()
    grants = []
    for i in range(n):
        req_ident = requesters[i % len(requesters)]
        req = AccessRequest.new(req_ident.name or "", req_ident.public.key_id, "minilm", "load",
                                "bench", 3600, 1 << 30, now)
        env = req.sign(req_ident.private_key)
        picks = [*random.sample(approvers[2:], 2), approvers[i % 2]]
        apps = [approve(a.private_key, a.name or "", env, now=now) for a in picks]
        grants.append(build_grant(req_ident.private_key, env, apps, now=now))
    cache = VerifyCache()
    start = time.perf_counter()
    for g in grants:
        verify_grant(g, directory, engine, resource, now=now, cache=cache)
    cold = n / (time.perf_counter() - start)
    rounds = 3
    start = time.perf_counter()
    for _ in range(rounds):
        for g in grants:
            verify_grant(g, directory, engine, resource, now=now, cache=cache)
    warm = rounds * n / (time.perf_counter() - start)
    # Every verification in a new second: Cedar's per-second decision cache never hits.
    start = time.perf_counter()
    for i, g in enumerate(grants):
        verify_grant(g, directory, engine, resource, now=now + 1 + i, cache=cache)
    uncached = n / (time.perf_counter() - start)
    # The gate's path: time-independent parts memoised per directory view, Cedar every time.
    memo: PartsMemo = {}
    for g in grants:
        verify_grant(g, directory, engine, resource, now=now, cache=cache, memo=memo)
    cpu = time.process_time()
    start = time.perf_counter()
    for i, g in enumerate(grants):
        verify_grant(g, directory, engine, resource, now=now + 1 + i, cache=cache,
                     memo=memo)
    gate = n / (time.perf_counter() - start)
    gate_cpu = (time.process_time() - cpu) / n
    # Cedar's floor for the gate's path: its core on the same four requests per grant
    # (pre-built, results not parsed), in one batch as the gate asks them.
    batches = []
    for i, g in enumerate(grants):
        parts = memo[(g, resource)]
        batches.append([_request(who.key_id, "approve", resource.name, now + 1 + i)
                        for who, _ in parts.candidates.found]
                       + [_request(parts.requester.key_id, "load", resource.name, now + 1 + i)])
    ents = [engine.prepare([(p, "approve") for p, _ in memo[(g, resource)].candidates.found]
                           + [(memo[(g, resource)].requester, "load")], resource).entities._inner
            for g in grants]
    cpu = time.process_time()
    start = time.perf_counter()
    for qs, e in zip(batches, ents, strict=True):
        cedar_core.is_authorized_batch(qs, engine._policies, e, None, False)
    cedar_floor = n / (time.perf_counter() - start)
    floor_cpu = (time.process_time() - cpu) / n
    print(f"grant verification (3 approvals): cold {cold:,.0f}/s ({_ratio(cold, 5_000)}); "
          f"warm {warm:,.0f}/s ({_ratio(warm, 5_000)})\n"
          f"  warm, a new second each (Cedar evaluated every time): {uncached:,.0f}/s; "
          f"the gate's path (parts memo, Cedar every time): {gate:,.0f}/s, CPU "
          f"{gate_cpu * 1e6:.0f} us each ({_ratio(gate, 5_000)})\n"
          f"  Cedar's core alone on the same 4 requests per grant, one batch each: "
          f"{cedar_floor:,.0f} grants/s, CPU {floor_cpu * 1e6:.0f} us each; the gate's path "
          f"reaches {gate / cedar_floor:.0%} of it, {floor_cpu / gate_cpu:.0%} in CPU "
          f"(load average {_load()})")


def main() -> None:
    """Run both benchmarks and print figures with ratios to the targets."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=50_000)
    ap.add_argument("--grants", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"load average at start {_load()}; {os.cpu_count()} CPUs")
    bench_decisions(args.decisions, rng)
    bench_grants(args.grants)


if __name__ == "__main__":
    main()

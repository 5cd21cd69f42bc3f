"""Key releases per second through the gate, in-process (evidence check + audit append + unwrap).

Target (issue 3): >= 2,000 releases/s on SQLite, with p50/p99 latency.

    .venv/bin/python bench/keys.py [--releases 20000] [--threads 32] [--url sqlite:///...]
    .venv/bin/python bench/keys.py --grants [--people 8] ...   # the deployment's rule

``--grants`` runs the gate with the deployment's evidence rule
(:class:`~strongroom.access.evidence.GrantEvidence`): officer-signed
enrollments, a signed artifact manifest, and for each of ``--people``
principals a real Grant (request + 2 approvals) found in the store; every
release re-checks them (snapshot cache of verified statements, re-validated
by one marker query; expiry, vetting and Cedar evaluated per release).

Evidence envelopes are signed before timing starts (signing is the client's
cost); each release verifies one Ed25519 DSSE signature, checks replay and
expiry, looks up the wrapped key, charges the egress ledger and appends the
``allow`` entry durably in one transaction (the audit log's group commit
across threads) and unwraps one AES-256-GCM wrapped file key. Besides the
rate and latencies it prints the process CPU time per release (all threads),
which varies less than the rate on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(_TESTS), str(_TESTS / "access")]

from strongroom.release import ReleaseRequest, sign_release_evidence  # noqa: E402
from strongroom.store.db import Store  # noqa: E402

from keyring_fixtures import unsealed_service  # noqa: E402

#: Issue 3's target, releases per second on SQLite.
TARGET = 2_000


def run(release: Callable[[ReleaseRequest], bytearray], requests: list[ReleaseRequest],
        threads: int, label: str) -> tuple[float, float, float, float]:
    """Release every request from ``threads`` threads; print and return rate, p50/p99 (ms)
    and CPU per release (us)."""
    latencies: list[float] = []
    lock = threading.Lock()
    it = iter(requests)

    def worker() -> None:
        local: list[float] = []
        while True:
            with lock:
                req = next(it, None)
            if req is None:
                break
            t0 = time.perf_counter()
            key = release(req)
            local.append(time.perf_counter() - t0)
            key[:] = bytes(len(key))
        with lock:
            latencies.extend(local)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start, cpu0 = time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rate = len(latencies) / elapsed
    print(f"{label}: {len(latencies)} releases, {threads} threads: "
          f"{rate:,.0f} releases/s ({rate / TARGET:.2f}x the {TARGET:,}/s target)  "
          f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  CPU {cpu / len(latencies) * 1e6:,.0f} us/release")
    return rate, p50, p99, cpu / len(latencies) * 1e6


def guard_ab(svc: object, requests: list[ReleaseRequest], threads: int, rounds: int) -> None:
    """Interleave rounds with and without the state guard on the deployment's gate; medians."""
    gate = svc.gate
    guard = gate.guard
    per = len(requests) // (2 * rounds)
    results: dict[str, list[tuple[float, float, float, float]]] = {"guard": [], "none": []}
    for r in range(rounds):
        for label in ("guard", "none") if r % 2 == 0 else ("none", "guard"):
            gate.guard = guard if label == "guard" else None
            if label == "guard":  # its background thread runs only in the guarded rounds
                guard.start()
            else:
                guard.stop()
            chunk, requests = requests[:per], requests[per:]
            results[label].append(run(svc.release, chunk, threads,
                                      f"round {r + 1} {label}"))
    gate.guard = guard
    guard.start()
    load = os.getloadavg()[0]
    for label, rows in results.items():
        rates = [x[0] for x in rows]
        print(f"{label}: median {statistics.median(rates):,.0f} releases/s (best "
              f"{max(rates):,.0f}), CPU median {statistics.median(x[3] for x in rows):,.0f} "
              f"us/release, load {load:.1f}")
    ratio = statistics.median(x[0] for x in results["guard"]) / statistics.median(
        x[0] for x in results["none"])
    print(f"state guard: {ratio:.3f}x the releases/s without it (target >= 0.90)")


def bench_grants(args: argparse.Namespace, tmp: Path) -> None:
    """Releases through GrantEvidence with real, stored Grants (one per principal)."""
    from access_kit import access_world

    from strongroom.access import statements
    from strongroom.access.directory import Resource
    from strongroom.access.grants import issue_grant
    from strongroom.access.policy import PolicyEngine

    from vault_fixtures import make_model

    with access_world(args.url or f"sqlite:///{tmp / 'bench.db'}", tmp) as w:
        make_model(tmp / "m.safetensors")
        w.vault.import_weights(tmp / "m.safetensors", "bench", compartments=["atlas"])
        m = w.vault.manifest("bench")
        entry = m.files[0]
        names = [f"p{i}" for i in range(max(args.people, 3))]
        for n in names:
            w.enroll(n)
        resource = Resource(m.ref, m.kind, 3, tuple(m.compartments))
        for i, n in enumerate(names[:args.people]):
            req = w.request(n, "bench", budget=1 << 60)
            w.approve(names[(i + 1) % len(names)], req)
            w.approve(names[(i + 2) % len(names)], req)
            issue_grant(w.store, w.people[n].private_key, statements.payload_digest(req),
                        w.rule.reader.view(), PolicyEngine(), resource, now=time.time())
        requests = []
        for i in range(args.releases + 200):
            n = names[i % args.people]
            ident = w.people[n]
            ev = sign_release_evidence(ident.private_key, artifact=m.ref, shard=entry.path,
                                       blob_id=entry.blob, purpose="load", ttl_s=3000)
            requests.append(ReleaseRequest(n, ident.public.public_bytes, m.ref, entry.path,
                                           entry.blob, 1, "load", ev))
        # The deployment's gate: the service's own, with its state guard and durable ledger.
        svc = w.keys.svc
        run(svc.release, requests[:200], args.threads, "warm-up")
        if args.guard_ab:
            guard_ab(svc, requests[200:], args.threads, args.guard_ab)
            return
        run(svc.release, requests[200:], args.threads,
            f"{w.store.dialect} GrantEvidence ({args.people} principals with Grants)")


def main() -> None:
    """Run the benchmark and print releases/s with p50/p99."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--blobs", type=int, default=1000)
    ap.add_argument("--url", default=None)
    ap.add_argument("--grants", action="store_true",
                    help="run the deployment's rule (GrantEvidence) with real Grants")
    ap.add_argument("--people", type=int, default=8, help="principals holding Grants")
    ap.add_argument("--guard-ab", type=int, default=0, metavar="ROUNDS",
                    help="with --grants: interleave ROUNDS with and without the state guard")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    if args.grants:
        try:
            bench_grants(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    store = Store.open(args.url or f"sqlite:///{tmp / 'bench.db'}")
    svc, _, _, officer = unsealed_service(store, tmp)
    blobs = [f"blob-{i:05d}" for i in range(args.blobs)]
    for b in blobs:
        svc.wrap_file_key(b, os.urandom(16))
    pub = officer.public
    requests = []
    for i in range(args.releases):
        b = blobs[i % len(blobs)]
        ev = sign_release_evidence(officer.private_key, artifact="bench@1", shard=f"{b}.st",
                                   blob_id=b, purpose="load", ttl_s=3000)
        requests.append(ReleaseRequest(pub.principal, pub.public_bytes, "bench@1", f"{b}.st", b,
                                       1, "load", ev))
    run(svc.release, requests, args.threads, store.dialect)
    svc.seal()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # the throw-away database, shares and identities


if __name__ == "__main__":
    main()

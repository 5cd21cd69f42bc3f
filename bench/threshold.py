"""Threshold key release: partial decryptions per key server, and releases through 2 of 3 servers.

Issue 22's aims: >= 5,000 partial decryptions/s per key server, and releases/s
through 2-of-3 key servers at >= 0.5x the single-agent release in the same run.

    .venv/bin/python bench/threshold.py [--rounds 5] [--releases 300] [--partials 3000] [--batch 16]

Part 1 times the key server's cryptographic last step alone, one thread (wall
clock, and per CPU-second, which a machine shared with other work disturbs less): the
partial ``Dᵢ = yᵢ·U`` with its DLEQ proof bound to the request
(``partial_decrypt``), for one blob per request (plain Chaum–Pedersen) and for
``--batch`` blobs per request (one RFC 9497 batched proof covers the batch), and
the requester's verification of one partial.

Part 2 interleaves, round by round (bench/machine.py), the whole release:

* **single agent** — ``LocalKeyService.release`` in process: the gate (evidence
  signature, replay, egress ledger, audit append in one durable transaction)
  and the KEK unwrap; the deployment's ``strongroom serve`` path below HTTP;
* **2-of-3 threshold** — ``ThresholdClient.release`` over three in-process key
  servers, each with its own SQLite database and audit log: each asked server
  verifies the signed manifest and header pin, runs the same gate, computes its
  partial and proof; the requester asks exactly two servers at once (its kept
  pool of asking threads), verifies each partial in the thread that received it
  and opens the file key. All three servers share this process's cores, GIL and
  disk (two durable commits per release land on one disk at once); separate
  hosts would not, so this is the pessimistic figure.

Evidence is signed before timing starts (the client's cost). No HTTP on either
side: both figures are the release machinery itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(_TESTS), str(Path(__file__).resolve().parent)]

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from machine import describe, interleave, summary  # noqa: E402
from strongroom.release import ReleaseRequest, sign_release_evidence  # noqa: E402
from strongroom.runtime.threshold_client import ThresholdClient  # noqa: E402
from strongroom.store.db import Store  # noqa: E402
from strongroom.threshold.group import base_mult, random_scalar  # noqa: E402
from strongroom.threshold.shares import combine, deal  # noqa: E402
from strongroom.threshold.wrap import Combiner, partial_decrypt  # noqa: E402
from threshold_fixtures import VAULT, inprocess_keyservers, make_blob, release_request  # noqa: E402

from keyring_fixtures import unsealed_service  # noqa: E402

#: Issue 22's aims.
PARTIALS_TARGET = 5_000
RATIO_TARGET = 0.5


def bench_partials(n: int, batch: int) -> None:
    """Part 1: partial decryptions per second, one thread."""
    dealings = [deal(random_scalar(), threshold=2, indices=[1, 2, 3], dealer=d) for d in (1, 2, 3)]
    share = combine([d.for_index(1) for d in dealings])
    us = [base_mult(random_scalar()) for _ in range(batch)]
    digests = [os.urandom(32) for _ in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    for d in digests:
        partial_decrypt(share, d, us[:1])
    single = n / (time.perf_counter() - t0)
    per_cpu = n / (time.process_time() - c0)  # what one core gives when it is not shared
    calls = max(1, n // batch)
    t0 = time.perf_counter()
    for d in digests[:calls]:
        partial_decrypt(share, d, us)
    batched = calls * batch / (time.perf_counter() - t0)
    threads = os.cpu_count() or 1
    chunks = [digests[i::threads] for i in range(threads)]

    def worker(part: list[bytes]) -> None:
        for d in part:
            partial_decrypt(share, d, us[:1])

    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:  # ctypes releases the GIL inside libsodium
        list(pool.map(worker, chunks))
    threaded = n / (time.perf_counter() - t0)
    partials = [partial_decrypt(share, d, us[:1]) for d in digests[:500]]
    t0 = time.perf_counter()
    for p in partials:
        Combiner(share.commitments, p.request_digest, us[:1]).add(p)
    verify = len(partials) / (time.perf_counter() - t0)
    print(f"partial decryptions, one key server, one thread: {single:,.0f}/s one blob per request "
          f"({per_cpu:,.0f} per CPU-second); "
          f"{threaded:,.0f}/s on {threads} threads; "
          f"{batched:,.0f} blobs/s at {batch} blobs per request (one proof, one thread); "
          f"requester verifies {verify:,.0f} partials/s   [aim >= {PARTIALS_TARGET:,}/s]", flush=True)


def main() -> None:
    """Run both parts and print the figures with the machine's reference rates."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--releases", type=int, default=300, help="releases per subject per round")
    ap.add_argument("--partials", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    print(describe(), flush=True)
    bench_partials(args.partials, args.batch)

    tmp = Path(tempfile.mkdtemp(prefix="bench-threshold-"))
    manifest_key = Ed25519PrivateKey.generate()
    principal = Ed25519PrivateKey.generate()
    try:
        servers, commitments = inprocess_keyservers(
            tmp / "threshold", 3, 2, manifest_key.public_key().public_bytes_raw(),
            [principal.public_key().public_bytes_raw()])
        blobs = [make_blob(commitments[0], manifest_key, size=4096) for _ in range(16)]
        client = ThresholdClient([(s.name, s.ask) for s in servers], commitments, vault_id=VAULT)

        (tmp / "single").mkdir()
        store = Store.open(f"sqlite:///{tmp / 'single' / 'single.db'}")
        svc, _, _, officer = unsealed_service(store, tmp / "single")
        single_blobs = [f"blob-{i:03d}" for i in range(16)]
        for b in single_blobs:
            svc.wrap_file_key(b, os.urandom(16))
        pub = officer.public

        cpu: dict[str, list[float]] = {"2-of-3 threshold": [], "single agent": []}

        def single(_: int) -> float:
            requests = [ReleaseRequest(pub.principal, pub.public_bytes, "bench@1", f"{b}.st", b, 1, "load",
                                       sign_release_evidence(officer.private_key, artifact="bench@1",
                                                             shard=f"{b}.st", blob_id=b, purpose="load"))
                        for b in (single_blobs[i % 16] for i in range(args.releases))]
            t0, c0 = time.perf_counter(), time.process_time()
            for r in requests:
                svc.release(r)[:] = bytes(16)
            cpu["single agent"].append((time.process_time() - c0) / len(requests))
            return len(requests) / (time.perf_counter() - t0)

        def threshold(_: int) -> float:
            work = [(release_request(principal, blobs[i % 16]), blobs[i % 16]) for i in range(args.releases)]
            t0, c0 = time.perf_counter(), time.process_time()
            for request, blob in work:
                client.release(request, blob.manifest, blob.header).key[:] = bytes(16)
            cpu["2-of-3 threshold"].append((time.process_time() - c0) / len(work))
            return len(work) / (time.perf_counter() - t0)

        rounds = interleave(args.rounds, {"2-of-3 threshold": threshold, "single agent": single})
        print(summary("2-of-3 threshold", rounds["2-of-3 threshold"], "releases/s"))
        print(summary("single agent", rounds["single agent"], "releases/s"))
        ratios = sorted(t / s for t, s in zip(rounds["2-of-3 threshold"], rounds["single agent"], strict=True))
        print(f"threshold / single agent, per round: median {ratios[len(ratios) // 2]:.2f}x "
              f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})   [aim >= {RATIO_TARGET}x]")
        # CPU of this process per release (all three key servers and the requester live here):
        # on one machine the CPU ratio caps the throughput ratio; on separate hosts each key
        # server spends only its own share of the threshold figure.
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in cpu.items()}
        print(f"CPU per release (process time, median of rounds): 2-of-3 threshold "
              f"{med['2-of-3 threshold']:.2f} ms, single agent {med['single agent']:.2f} ms: "
              f"one machine caps the ratio near {med['single agent'] / med['2-of-3 threshold']:.2f}x")
        svc.seal()
        store.close()
        client.close()
        for s in servers:
            s.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

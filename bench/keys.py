"""Key releases per second through the gate, in-process (evidence check + audit append + unwrap).

Target (issue 3): >= 2,000 releases/s on SQLite, with p50/p99 latency.

    .venv/bin/python bench/keys.py [--releases 20000] [--threads 32] [--url sqlite:///...]

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
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

from strongroom.release import ReleaseRequest, sign_release_evidence  # noqa: E402
from strongroom.store.db import Store  # noqa: E402

from keyring_fixtures import unsealed_service  # noqa: E402

#: Issue 3's target, releases per second on SQLite.
TARGET = 2_000


def main() -> None:
    """Run the benchmark and print releases/s with p50/p99."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--blobs", type=int, default=1000)
    ap.add_argument("--url", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-keys-"))
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
            key = svc.release(req)
            local.append(time.perf_counter() - t0)
            key[:] = bytes(len(key))
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    start, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rate = len(latencies) / elapsed
    print(f"{store.dialect}: {len(latencies)} releases, {args.threads} threads: "
          f"{rate:,.0f} releases/s ({rate / TARGET:.2f}x the {TARGET:,}/s target)  "
          f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  CPU {cpu / len(latencies) * 1e6:,.0f} us/release")
    svc.seal()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # the throw-away database, shares and identities


if __name__ == "__main__":
    main()

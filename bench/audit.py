"""Audit log benchmarks: durable appends, inclusion proofs, full verification.

    .venv/bin/python bench/audit.py                 # 1,000,000 entries (minutes)
    .venv/bin/python bench/audit.py --entries 100000

Targets (issue 5): sustained durable appends >= 20,000 events/s on SQLite with
group commit; inclusion proof at 1,000,000 entries <= 1 ms median; full
verification of 1,000,000 entries <= 10 s. Every append counted is durable
(committed, WAL fsynced with synchronous=FULL) before its caller is told.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store

APPEND_TARGET = 20_000
PROOF_TARGET_MS = 1.0
VERIFY_TARGET_S_PER_M = 10.0


def event(i: int) -> dict[str, object]:
    return dict(actor="alice", action="weights.read", obj=f"minilm@{i % 7}", decision="allow",
                reason="policy: clearance ok", details={"bytes": 4096})


def appends_threads(log: AuditLog, threads: int, per_thread: int) -> float:
    """Each thread calls append() and waits for durability before the next."""
    def work() -> None:
        for i in range(per_thread):
            log.append(**event(i))  # type: ignore[arg-type]
    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return threads * per_thread / (time.perf_counter() - t0)


def appends_pipelined(log: AuditLog, producers: int, per_producer: int, window: int) -> float:
    """Each producer keeps ``window`` appends in flight (submit / result), like Tessera's futures."""
    def work() -> None:
        pending = []
        for i in range(per_producer):
            pending.append(log.submit(**event(i)))  # type: ignore[arg-type]
            if len(pending) >= window:
                for p in pending:
                    p.result()
                pending.clear()
        for p in pending:
            p.result()
    ts = [threading.Thread(target=work) for _ in range(producers)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return producers * per_producer / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--url", help="database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = Store.open(url)
        key = Ed25519PrivateKey.generate()
        log = AuditLog(store, Ed25519Signer("bench.example/log", key))
        n_small = min(60_000, args.entries)
        print(f"database: {store.dialect}; entries: {args.entries:,}")

        r1 = appends_threads(log, 64, n_small // 64)
        print(f"append(), 64 threads:              {r1:10,.0f} events/s "
              f"({r1 / APPEND_TARGET:.2f}x target {APPEND_TARGET:,})")
        r2 = appends_pipelined(log, 8, n_small // 8, 256)
        print(f"submit(), 8 producers x 256 in flight: {r2:7,.0f} events/s "
              f"({r2 / APPEND_TARGET:.2f}x target)")
        t0 = time.perf_counter()
        batches = 0
        while log.size() < args.entries:
            k = min(5_000, args.entries - log.size())
            log.append_many([event(i) for i in range(k)])
            batches += 1
        fill_s = time.perf_counter() - t0
        print(f"append_many(5000) fill:            {(args.entries - 2 * n_small) / fill_s if args.entries > 2 * n_small else 0:10,.0f} events/s")

        log.checkpoint()
        size = log.size()
        samples = []
        rng = random.Random(1)
        for _ in range(1000):
            i = rng.randrange(size)
            t = time.perf_counter()
            log.prove(i)
            samples.append((time.perf_counter() - t) * 1000)
        med = statistics.median(samples)
        print(f"prove() at {size:,} entries:      median {med:.3f} ms, p99 "
              f"{sorted(samples)[989]:.3f} ms ({PROOF_TARGET_MS / med:.1f}x better than "
              f"{PROOF_TARGET_MS} ms target)")

        t = time.perf_counter()
        report = log.verify()
        vs = time.perf_counter() - t
        target = VERIFY_TARGET_S_PER_M * size / 1_000_000
        print(f"verify() of {report.size:,} entries:  {vs:.2f} s "
              f"({vs / size * 1e6:.2f} us/entry; target {target:.1f} s at this size, "
              f"{target / vs:.1f}x margin)")
        log.close()
        store.close()


if __name__ == "__main__":
    main()

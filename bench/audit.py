"""Audit log benchmarks: durable appends, inclusion proofs, full verification.

    .venv/bin/python bench/audit.py                 # 1,000,000 entries (minutes)
    .venv/bin/python bench/audit.py --entries 100000
    .venv/bin/python bench/audit.py --entries 13000  # the append ratio alone, ~10 s

Issue 24 item 5: ``append()`` from 64 threads is judged against the physical
limit of the store measured in the same run, interleaved round by round: a
plain SQLite database (WAL, ``synchronous=FULL``, the same pragmas) into which
one thread inserts the same rows (index, leaf hash, body as the log encodes
them) in transactions of 64 rows, the most a group commit of 64 synchronous
callers can gather. Target: >= 0.5x. Interleaved with both, the physical
reference that bounds it in CPython: the hand-off floor of 64 synchronous callers
with no database work (:func:`handoff_floor`); its CPU a call plus plain SQLite's
a row is the least an append from 64 threads can cost, and the bench prints the
ratio that bound allows beside the one measured. The proof target is measured on the log
filled to ``--entries`` (1,000,000 by default) with ``append_many`` batches.

Targets (issue 5): sustained durable appends >= 20,000 events/s on SQLite with
group commit; inclusion proof at 1,000,000 entries <= 1 ms median; full
verification of 1,000,000 entries <= 10 s. Every append counted is durable
(committed, WAL fsynced with synchronous=FULL) before its caller is told.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from _thread import allocate_lock
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from machine import describe, interleave, loadavg, summary  # noqa: E402

APPEND_TARGET = 20_000
PROOF_TARGET_MS = 1.0
VERIFY_TARGET_S_PER_M = 10.0


def event(i: int) -> dict[str, object]:
    return dict(actor="alice", action="weights.read", obj=f"minilm@{i % 7}", decision="allow",
                reason="policy: clearance ok", details={"bytes": 4096})


#: CPU seconds per append of the latest appends_threads() call (every thread of the process).
CPU_PER_APPEND: list[float] = []


def appends_threads(log: AuditLog, threads: int, per_thread: int) -> float:
    """Each thread calls append() and waits for durability before the next."""
    def work() -> None:
        for i in range(per_thread):
            log.append(**event(i))  # type: ignore[arg-type]
    return _threads(work, threads, per_thread, CPU_PER_APPEND)


def _threads(work: Callable[[], None], threads: int, per_thread: int,
             cpu: list[float]) -> float:
    """Calls/s of ``threads`` threads running ``work`` (``per_thread`` calls each); the
    process's CPU seconds a call go to ``cpu``."""
    ts = [threading.Thread(target=work) for _ in range(threads)]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    cpu.append((time.process_time() - c0) / (threads * per_thread))
    return threads * per_thread / (time.perf_counter() - t0)


#: CPU seconds per call of each handoff_floor() call.
CPU_PER_HANDOFF: list[float] = []


def handoff_floor(threads: int, per_thread: int) -> float:
    """Calls/s of ``threads`` synchronous callers handing off through a leader, no database work.

    What any group commit of synchronous callers costs in CPython before it does any
    work: each call takes a lock of its own and the shared queue's lock, queues, and
    blocks on its own lock; the first caller that finds no leader leads, releasing
    the queue's callers once a stand-in for the commit (``time.sleep(0)``: the GIL
    let go, as an fsync does) is over, and leads again while more queued. The
    thread wake-ups and GIL hand-offs of this loop are the floor under ``append()``
    from as many threads; its CPU per call plus plain SQLite's per row bounds the ratio.
    """
    mutex = threading.Lock()
    queue: list[Any] = []
    busy = [False]

    def call() -> None:
        me = allocate_lock()
        me.acquire()
        with mutex:
            queue.append(me)
            lead = not busy[0]
            busy[0] = True
        if not lead:
            me.acquire()
            return
        while True:
            with mutex:
                batch = queue[:]
                del queue[:]
                if not batch:
                    busy[0] = False
                    return
            time.sleep(0)  # the commit's fsync, with the GIL let go
            for waiter in batch:
                if waiter is not me:
                    waiter.release()

    def work() -> None:
        for _ in range(per_thread):
            call()

    return _threads(work, threads, per_thread, CPU_PER_HANDOFF)


#: CPU seconds per row of the latest plain_sqlite() call.
CPU_PER_ROW: list[float] = []


def plain_sqlite(path: Path, log: AuditLog, rows: int, batch: int = 64) -> float:
    """Rows/s of one thread inserting the log's encoded rows into plain SQLite, ``batch`` a commit."""
    items = [log._encoder.encode(actor="alice", action="weights.read", obj=f"minilm@{i % 7}",
                                 decision="allow", reason="policy: clearance ok",
                                 request_id=None, details={"bytes": 4096}, shard=None,
                                 nbytes=None) for i in range(rows)]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (idx INTEGER PRIMARY KEY, leaf_hash BLOB, body BLOB)")
    start = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM t").fetchone()[0]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for b in range(0, rows, batch):
        chunk = []
        for i, (prefix, suffix) in enumerate(items[b:b + batch], start=start + b):
            body = prefix + str(i).encode() + suffix
            chunk.append((i, hashlib.sha256(b"\x00" + body).digest(), body))
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", chunk)
        db.execute("COMMIT")
    rate = rows / (time.perf_counter() - t0)
    CPU_PER_ROW.append((time.process_time() - c0) / rows)
    db.close()
    return rate


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved append rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = Store.open(url)
        key = Ed25519PrivateKey.generate()
        log = AuditLog(store, Ed25519Signer("bench.example/log", key))
        n_small = min(60_000, args.entries)
        print(describe())
        print(f"database: {store.dialect}; entries: {args.entries:,}")
        per_round = min(n_small, 64 * 200)
        rounds = interleave(args.rounds, {
            "append(), 64 threads": lambda _: appends_threads(log, 64, per_round // 64),
            "plain SQLite, 64 rows a commit": lambda r: plain_sqlite(
                Path(tmp) / "plain.db", log, per_round),
            "hand-off floor, 64 threads": lambda _: handoff_floor(64, per_round // 64),
        })
        for name, rates in rounds.items():
            print(summary(name, rates, "events/s"))
        ours, limit = rounds["append(), 64 threads"], rounds["plain SQLite, 64 rows a commit"]
        pairs = [a / b for a, b in zip(ours, limit, strict=True)]
        r1 = statistics.median(ours)
        print(f"append() / plain SQLite: {r1 / statistics.median(limit):.2f} at the medians "
              f"({min(pairs):.2f}-{max(pairs):.2f} over {len(pairs)} pairs; target >= 0.5); "
              f"{r1 / APPEND_TARGET:.2f}x the 20,000/s target; load average {loadavg()}")
        cpu_append = statistics.median(CPU_PER_APPEND)
        cpu_row = statistics.median(CPU_PER_ROW)
        cpu_floor = statistics.median(CPU_PER_HANDOFF)
        print(f"CPU: append() {cpu_append * 1e6:.1f} us an append (every thread), plain SQLite "
              f"{cpu_row * 1e6:.1f} us a row, hand-off floor {cpu_floor * 1e6:.1f} us a call "
              "(medians; the CPU bounds all three when fsync is fast)")
        # An append from 64 threads costs at least the hand-off of a synchronous caller
        # plus the row's own work: the most any CPython group commit of such callers can do.
        least = cpu_floor + cpu_row
        plain = statistics.median(limit)
        print(f"bound in CPython: floor + plain row = {least * 1e6:.1f} us of CPU an append, "
              f"at most {1 / least:,.0f}/s on one CPU ({1 / least / plain:.2f}x plain SQLite's "
              "measured median, which fsync bounds on a loaded disk)")
        print(f"by CPU (the ratio when the CPU bounds both, as on a quiet machine): append() / "
              f"plain SQLite = {cpu_row / cpu_append:.2f}, the bound {cpu_row / least:.2f} "
              f"(target >= 0.5); append() spends {(cpu_append - least) * 1e6:.1f} us an append "
              "above the bound")
        del CPU_PER_APPEND[:]
        one = [appends_threads(log, 1, 300) for _ in range(3)]
        print(f"append() from one thread (one commit each, the fixed cost of a commit): "
              f"{statistics.median(one):,.0f}/s, {statistics.median(CPU_PER_APPEND) * 1e6:.0f} us "
              f"of CPU an append; load average {loadavg()}")
        r2 = appends_pipelined(log, 8, n_small // 8, 256)
        filled = log.size()
        print(f"submit(), 8 producers x 256 in flight: {r2:7,.0f} events/s "
              f"({r2 / APPEND_TARGET:.2f}x target)")
        t0 = time.perf_counter()
        while log.size() < args.entries:
            k = min(20_000, args.entries - log.size())
            log.append_many([event(i) for i in range(k)])
        fill_s = time.perf_counter() - t0
        if args.entries > filled:
            print(f"append_many(20000) fill to {log.size():,}: "
                  f"{(log.size() - filled) / fill_s:10,.0f} events/s")

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

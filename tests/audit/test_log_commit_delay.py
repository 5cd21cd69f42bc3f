"""The writer's bounded commit delay: announced appends share one commit."""

from __future__ import annotations

import threading
import time

from strongroom.audit import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store


def _commits(log: AuditLog) -> list[int]:
    sizes: list[int] = []
    real = log._writer._commit

    def counting(batch: object) -> int:
        sizes.append(len(batch.items))  # type: ignore[attr-defined]
        return real(batch)  # type: ignore[arg-type]

    log._writer._commit = counting  # type: ignore[method-assign]
    return sizes


def _append(log: AuditLog, i: int) -> int:
    return log.append(actor="alice", action="key.release", obj=f"m@1/{i}", decision="allow")


def test_announced_appends_join_one_commit(store: Store, signer: Ed25519Signer) -> None:
    log = AuditLog(store, signer, commit_delay=0.5)
    try:
        sizes = _commits(log)
        start = threading.Barrier(4)
        out: list[int] = []

        def release(i: int) -> None:
            with log.expecting():
                start.wait()
                time.sleep(0.01 * i)  # arrive one after another, well inside the delay
                out.append(_append(log, i))

        threads = [threading.Thread(target=release, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(out) == [0, 1, 2, 3]
        assert sizes == [4]  # without the delay the first would have committed alone
    finally:
        log.close()


def test_an_announcement_that_never_appends_delays_at_most_once(
        store: Store, signer: Ed25519Signer) -> None:
    log = AuditLog(store, signer, commit_delay=0.2)
    try:
        sizes = _commits(log)
        gone = threading.Event()
        left = threading.Event()

        def refused_early() -> None:
            with log.expecting():
                gone.wait(5)
            left.set()  # leaving the block withdraws the announcement

        t = threading.Thread(target=refused_early)
        t.start()
        t0 = time.monotonic()
        with log.expecting():
            threading.Timer(0.05, gone.set).start()
            assert _append(log, 0) == 0
        waited = time.monotonic() - t0
        t.join()
        assert left.is_set() and sizes == [1]
        assert waited < 0.2 + 0.15  # released when the other withdrew, bounded by the delay
    finally:
        log.close()


def test_unannounced_appends_never_wait(store: Store, signer: Ed25519Signer) -> None:
    log = AuditLog(store, signer, commit_delay=5.0)
    try:
        t0 = time.monotonic()
        with log.expecting():
            pass  # announced and withdrawn without appending
        for i in range(3):
            _append(log, i)
        assert time.monotonic() - t0 < 2.0
        assert log._writer._expected == 0
    finally:
        log.close()


def test_a_stuck_announcement_costs_one_bounded_delay(store: Store, signer: Ed25519Signer
                                                      ) -> None:
    log = AuditLog(store, signer, commit_delay=0.1)
    try:
        release = threading.Event()
        holder = threading.Thread(target=lambda: _hold(log, release))
        holder.start()
        time.sleep(0.02)
        t0 = time.monotonic()
        _append(log, 0)  # another thread's announcement is pending: at most 0.1 s more
        assert time.monotonic() - t0 < 1.0
        release.set()
        holder.join()
    finally:
        log.close()


def _hold(log: AuditLog, release: threading.Event) -> None:
    with log.expecting():
        release.wait(5)

"""The workers' shared nonce table (``<home>/server-nonces.map``): replay across processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.synchronize
import sqlite3
from pathlib import Path

import pytest

from strongroom.errors import InvalidInput
from strongroom.server.errors import Unauthenticated
from strongroom.server.nonce_table import SLOTS, SharedNonceTable

N = "n" * 24


def test_spent_once_until_the_window_closes(tmp_path: Path) -> None:
    worker1 = SharedNonceTable(tmp_path / "n.map")
    worker2 = SharedNonceTable(tmp_path / "n.map")
    assert worker1.spend("k1", N, expires=100.0, now=50.0)
    assert not worker2.spend("k1", N, expires=100.0, now=60.0)  # replayed to another worker
    assert not worker1.spend("k1", N, expires=100.0, now=99.0)
    assert worker2.spend("k2", N, expires=100.0, now=60.0)  # another signer's nonce
    assert worker2.spend("k1", N + "x", expires=100.0, now=60.0)
    assert worker1.spend("k1", N, expires=300.0, now=200.0)  # the old window closed
    assert not worker2.spend("k1", N, expires=300.0, now=201.0)
    assert (tmp_path / "n.map").stat().st_mode & 0o077 == 0


def test_a_restarted_worker_still_refuses(tmp_path: Path) -> None:
    first = SharedNonceTable(tmp_path / "n.map")
    assert first.spend("k", N, expires=100.0, now=50.0)
    first.close()
    again = SharedNonceTable(tmp_path / "n.map")
    assert not again.spend("k", N, expires=100.0, now=51.0)
    assert again.spend("k", N + "y", expires=100.0, now=51.0)


def _spend_all(path: str, start: multiprocessing.synchronize.Event,
               won: multiprocessing.Queue[int], n: int) -> None:
    try:
        table = SharedNonceTable(Path(path))
        start.wait(30)
        won.put(sum(table.spend("k", f"{N}{i}", expires=1e12, now=1.0) for i in range(n)))
    except BaseException:
        won.put(-1)
        raise


def test_two_processes_racing_spend_each_nonce_once(tmp_path: Path) -> None:
    path = tmp_path / "n.map"
    SharedNonceTable(path, buckets=256).close()  # small: the racers meet in every bucket
    ctx = multiprocessing.get_context("fork")
    start, won = ctx.Event(), ctx.Queue()
    racers = [ctx.Process(target=_spend_all, args=(str(path), start, won, 1500))
              for _ in range(2)]
    for p in racers:
        p.start()
    start.set()
    counts = [won.get(timeout=120) for _ in racers]
    for p in racers:
        p.join(30)
    assert sum(counts) == 1500 and all(p.exitcode == 0 for p in racers)


def test_a_full_bucket_refuses_until_slots_expire(tmp_path: Path) -> None:
    table = SharedNonceTable(tmp_path / "n.map", buckets=1)
    for i in range(SLOTS):
        assert table.spend("k", f"{N}{i}", expires=100.0, now=50.0)
    with pytest.raises(Unauthenticated, match="too many requests"):
        table.spend("k", N + "late", expires=100.0, now=50.0)
    assert not table.spend("k", f"{N}0", expires=100.0, now=50.0)  # still a replay
    assert table.spend("k", N + "late", expires=300.0, now=100.0)  # expired slots reused


def test_the_first_table_adopts_the_sqlite_file_of_earlier_releases(tmp_path: Path) -> None:
    import time

    legacy = tmp_path / "server-nonces.db"
    now = time.time()
    with contextlib.closing(sqlite3.connect(legacy)) as old:  # as earlier releases kept it
        old.execute("CREATE TABLE nonces (key TEXT NOT NULL, nonce TEXT NOT NULL, "
                    "expires REAL NOT NULL, PRIMARY KEY (key, nonce))")
        old.executemany("INSERT INTO nonces VALUES (?, ?, ?)",
                        [("k", N, now + 60), ("k", N + "old", now - 1)])
        old.commit()
    table = SharedNonceTable(tmp_path / "server-nonces.map", legacy=legacy)
    assert not table.spend("k", N, expires=now + 60, now=now)  # spent before the upgrade
    assert table.spend("k", N + "old", expires=now + 60, now=now)  # its window had closed
    assert not legacy.exists()
    assert not table.spend("k", N, expires=now + 60, now=now)


def test_a_file_of_another_layout_is_refused(tmp_path: Path) -> None:
    SharedNonceTable(tmp_path / "n.map", buckets=8).close()
    with (tmp_path / "n.map").open("ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(InvalidInput, match="another layout"):
        SharedNonceTable(tmp_path / "n.map")
    zero = bytearray((tmp_path / "n.map").read_bytes()[:4096])
    zero[8:12] = bytes(4)  # a header claiming no buckets
    (tmp_path / "z.map").write_bytes(bytes(zero))
    with pytest.raises(InvalidInput, match="another layout"):
        SharedNonceTable(tmp_path / "z.map")
    with pytest.raises(InvalidInput, match="power of two"):
        SharedNonceTable(tmp_path / "m.map", buckets=3)
    (tmp_path / "x.db").write_bytes(b"not a database" * 100)
    with pytest.raises(InvalidInput, match=r"x\.db"):
        SharedNonceTable(tmp_path / "x.map", legacy=tmp_path / "x.db")
    assert not (tmp_path / "x.map").read_bytes().startswith(b"SRNONCE1")  # not laid out

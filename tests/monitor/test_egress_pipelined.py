"""PostgreSQL: the egress ledger's statements ride on the audit batch's own round trips.

The ledger lock and the replay check are sent in the pipeline that begins the audit
transaction (after the head's lock), and the charged rows with the generation's bump
run inside the statement that writes the entries (``PipelinedGuard``); every check,
lock and outcome stays as when the ledger ran its own statements.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text

from strongroom.errors import AccessDenied, BudgetExceeded
from strongroom.monitor.egress import DAY, Budget, EgressMeter
from strongroom.store.db import Store

from monitor_helpers import audit_log

T0 = 1_800_000_000.0
_EVENT = {"actor": "alice", "action": "key.release", "obj": "m@1/s", "decision": "allow",
          "shard": "s"}


def _charge(cid: str, nbytes: int, at: float) -> dict[str, Any]:
    return {"principal": "alice", "nbytes": nbytes, "now": at, "artifact": "m@1",
            "charge_id": cid, "budget": ("grant-1", 10_000),
            "event": {**_EVENT, "nbytes": nbytes, "details": {"nonce": cid}}}


@contextlib.contextmanager
def _round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each round trip to the server: a statement outside a pipeline, a pipeline, a commit."""
    seen: list[str] = []
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    pipeline, commit = psycopg.Connection.pipeline, psycopg.Connection.commit

    def counted(real: Any) -> Any:
        def run(self: psycopg.Cursor[Any], query: Any, *a: Any, **k: Any) -> Any:
            if self.connection._pipeline is None:
                seen.append(str(query)[:40])
            return real(self, query, *a, **k)
        return run

    @contextlib.contextmanager
    def piped(self: psycopg.Connection[Any]) -> Iterator[Any]:
        if self._pipeline is None:
            seen.append("<pipeline>")
        with pipeline(self) as p:
            yield p

    def committed(self: psycopg.Connection[Any]) -> None:
        seen.append("COMMIT")
        commit(self)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted(execute))
    monkeypatch.setattr(psycopg.Cursor, "executemany", counted(executemany))
    monkeypatch.setattr(psycopg.Connection, "pipeline", piped)
    monkeypatch.setattr(psycopg.Connection, "commit", committed)
    yield seen


def _generation(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.execute(text("SELECT generation FROM egress_ledger")).scalar_one())


def test_a_charged_batch_takes_three_round_trips(pg_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's and the ledger's locks with the replay check, then the entries with the
    ledger's rows, then the commit: 3 round trips (the ledger's own statements took 7)."""
    store = Store.open(pg_url)
    log = audit_log(store)
    try:
        meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 5000)])
        # The first batch loads the totals and the frontier (reads of their own).
        assert meter.charge_many_with_event(log, [_charge("w", 100, T0)]) == [0]
        with _round_trips(monkeypatch) as seen:
            out = meter.charge_many_with_event(
                log, [_charge(f"n{i}", 100, T0 + i) for i in range(1, 4)]
                + [_charge("w", 100, T0 + 5)])  # a replay, refused in the same batch
        assert seen == ["<pipeline>", seen[1], "COMMIT"] and seen[1].startswith("WITH g0 AS")
        assert out[:3] == [1, 2, 3] and isinstance(out[3], AccessDenied)
        # The ledger's generation moved once, and the cache knows it without reading it.
        assert meter._ledger is not None and meter._ledger.generation == _generation(store)
        assert meter.spent(["grant-1"]) == {"grant-1": 400}
        with pytest.raises(BudgetExceeded, match=r"\(400 of 5000 bytes used\)"):
            meter.charge_with_event(log, "alice", 4601, T0 + 6, artifact="m@1",
                                    charge_id="big", event={**_EVENT, "nbytes": 4601})
    finally:
        log.close()
        store.close()


def test_the_replay_check_reads_the_ledger_once_its_lock_is_held(pg_url: str) -> None:
    """Another host holds the ledger lock and charges nonce ``x``: the batch's check, sent
    before that commits, waits for the lock and then sees ``x`` (a replay: refused)."""
    store, other = Store.open(pg_url), Store.open(pg_url)
    log = audit_log(store)
    try:
        meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 5000)])
        meter.charge_many_with_event(log, [_charge("w", 100, T0)])
        holder = other.engine.connect()
        tx = holder.begin()
        holder.exec_driver_sql("SELECT generation FROM egress_ledger WHERE id = 1 FOR UPDATE")
        holder.exec_driver_sql(
            "INSERT INTO egress_charges (charge_id, principal, artifact, nbytes, at) "
            "VALUES ('x', 'alice', 'm@1', 100, %s)", (T0 + 1,))
        holder.exec_driver_sql("UPDATE egress_ledger SET generation = generation + 1")
        out: list[Any] = []
        batch = threading.Thread(target=lambda: out.extend(meter.charge_many_with_event(
            log, [_charge("x", 100, T0 + 2), _charge("y", 100, T0 + 3)])))
        batch.start()
        time.sleep(0.5)  # the batch is waiting for the ledger lock
        assert batch.is_alive()
        tx.commit()
        holder.close()
        batch.join(10)
        assert isinstance(out[0], AccessDenied) and "replay" in str(out[0])
        assert out[1] == 1  # "y" charged: the entry after "w"'s (none was written for "x")
        assert meter.spent(["grant-1"]) == {"grant-1": 200}  # w and y; x has no budget id
    finally:
        log.close()
        store.close()
        other.close()


def test_a_repair_inside_an_audited_batch_checks_replays_again(store: Store) -> None:
    """Rows deleted by hand, put back by the repair in the batch's transaction: a charge id
    among them is refused as a replay, and the totals count them (each dialect)."""
    log = audit_log(store)
    try:
        meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 1000)])
        meter.charge_many_with_event(log, [_charge("n1", 100, T0)])
        with store.session() as s:
            s.execute(text("DELETE FROM egress_charges WHERE charge_id = 'n1'"))
            s.execute(text("UPDATE egress_ledger SET generation = generation + 1"))
        def repair(conn: Connection) -> int:
            meter.insert(conn, [("n1", "alice", "m@1", 100, T0, "grant-1")])
            return 1

        meter.repair = repair
        out = meter.charge_many_with_event(log, [_charge("n1", 100, T0 + 1),
                                                 _charge("n2", 850, T0 + 2),
                                                 _charge("n3", 51, T0 + 3)])
        assert isinstance(out[0], AccessDenied) and "replay" in str(out[0])
        assert out[1] == 1 and isinstance(out[2], BudgetExceeded)  # 100 + 850 + 51 > 1000
        assert meter._ledger is not None and meter._ledger.generation == _generation(store)
        with store.session(readonly=True) as s:
            assert s.execute(text("SELECT count(*) FROM egress_charges")).scalar() == 2
    finally:
        log.close()


def test_held_ids_are_read_whatever_their_number(store: Store) -> None:
    """``LedgerStore.held``: one ``ANY`` read on PostgreSQL, ``IN`` lists of ``ID_CHUNK`` ids
    elsewhere; the same answer either way, past one chunk's size."""
    from strongroom.monitor.ledger import ID_CHUNK, LedgerStore

    ledger = LedgerStore(store)
    n = ID_CHUNK * 2 + 7
    rows = [(f"charge-{i}", "alice", "m@1", 10, 1_000.0 + i, None) for i in range(0, n, 3)]
    with ledger.begin() as conn:
        ledger.lock(conn)
        ledger.insert(conn, rows)
    asked = [f"charge-{i}" for i in range(n)] + ["charge-elsewhere"]
    with ledger.begin() as conn:
        assert ledger.held(conn, asked) == {r[0] for r in rows}
        assert ledger.held(conn, []) == set()

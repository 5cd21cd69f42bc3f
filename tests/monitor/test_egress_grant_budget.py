"""Grant byte budgets in the egress ledger: shared by every meter on the database, decided with
the audit entry, never consumed by a refused release, and ignoring rows from before 0009."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from strongroom.errors import AccessDenied, AuditUnavailable, BudgetExceeded, InvalidInput
from strongroom.monitor.egress import DAY, Budget, EgressMeter, GrantBudgetSpent
from strongroom.store.db import Store, _alembic_config, is_sqlite

from monitor_helpers import audit_log

T0 = 1_800_000_000.0
_EVENT = {"actor": "alice", "action": "key.release", "obj": "m@1/s", "decision": "allow",
          "shard": "s"}


def _meter(store: Store, cap: int = 10_000) -> EgressMeter:
    return EgressMeter(store, budgets=[Budget("principal", "*", DAY, cap)])


def _event(cid: str, nbytes: int, budget_id: str = "req-1") -> dict[str, object]:
    return {**_EVENT, "nbytes": nbytes,
            "details": {"nonce": cid, "request_digest": budget_id}}


def _budget_rows(store: Store, budget_id: str) -> int:
    with store.session(readonly=True) as s:
        return int(s.execute(text("SELECT coalesce(sum(nbytes), 0) FROM egress_charges "
                                  "WHERE budget_id = :b"), {"b": budget_id}).scalar() or 0)


def test_budget_is_a_hard_stop_and_refusals_record_nothing(store: Store) -> None:
    log = audit_log(store)
    try:
        meter = _meter(store)
        meter.charge_with_event(log, "alice", 600, T0, artifact="m@1", charge_id="a",
                                event=_event("a", 600), budget=("req-1", 1000))
        with pytest.raises(AccessDenied, match=r"grant's byte budget is spent \(600 of 1000 "
                                               r"bytes used\)") as info:
            meter.charge_with_event(log, "alice", 401, T0 + 1, artifact="m@1", charge_id="b",
                                    event=_event("b", 401), budget=("req-1", 1000))
        assert isinstance(info.value, GrantBudgetSpent) and info.value.used == 600
        assert log.size() == 1 and _budget_rows(store, "req-1") == 600
        # The exact remainder passes; another budget id is independent.
        meter.charge_with_event(log, "alice", 400, T0 + 2, artifact="m@1", charge_id="c",
                                event=_event("c", 400), budget=("req-1", 1000))
        meter.charge_with_event(log, "alice", 1000, T0 + 3, artifact="m@1", charge_id="d",
                                event=_event("d", 1000, "req-2"), budget=("req-2", 1000))
        # A plain charge (no event) counts against the budget too.
        with pytest.raises(GrantBudgetSpent):
            meter.charge("alice", 1, T0 + 4, artifact="m@1", charge_id="e",
                         budget=("req-2", 1000))
        meter.charge("alice", 0, T0 + 4, artifact="m@1", charge_id="f", budget=("req-2", 1000))
        assert _budget_rows(store, "req-1") == 1000 and _budget_rows(store, "req-2") == 1000
        with pytest.raises(InvalidInput):
            meter.charge("alice", 1, T0, budget=("", 10))
    finally:
        log.close()


def test_window_cap_refusal_and_failed_audit_consume_no_budget(store: Store) -> None:
    log = audit_log(store)
    try:
        meter = _meter(store, cap=500)  # the principal's 24 h window cap
        with pytest.raises(BudgetExceeded):
            meter.charge_with_event(log, "alice", 600, T0, artifact="m@1", charge_id="a",
                                    event=_event("a", 600), budget=("req-1", 1000))
        real = log._writer._insert_entry
        log._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
        try:
            with pytest.raises(AuditUnavailable):
                meter.charge_with_event(log, "alice", 400, T0 + 1, artifact="m@1",
                                        charge_id="b", event=_event("b", 400),
                                        budget=("req-1", 1000))
        finally:
            log._writer._insert_entry = real
        assert _budget_rows(store, "req-1") == 0
        meter.charge_with_event(log, "alice", 500, T0 + 2, artifact="m@1", charge_id="c",
                                event=_event("c", 500), budget=("req-1", 1000))
        meter.charge_with_event(log, "alice", 500, T0 + DAY + 3, artifact="m@1",
                                charge_id="d", event=_event("d", 500), budget=("req-1", 1000))
        with pytest.raises(GrantBudgetSpent):  # lifetime: the window moving on does not help
            meter.charge_with_event(log, "alice", 1, 2 * DAY + T0, artifact="m@1",
                                    charge_id="e", event=_event("e", 1),
                                    budget=("req-1", 1000))
    finally:
        log.close()


def test_cached_totals_follow_refunds_and_other_meters(db_url: str) -> None:
    stores = [Store.open(db_url), Store.open(db_url)]
    a, b = (_meter(s) for s in stores)
    try:
        a.charge("alice", 600, T0, artifact="m@1", charge_id="x", budget=("req-1", 1000))
        b.charge("alice", 300, T0, artifact="m@1", charge_id="y", budget=("req-1", 1000))
        with pytest.raises(GrantBudgetSpent, match="900 of 1000"):  # a's total was reloaded
            a.charge("alice", 101, T0, artifact="m@1", charge_id="z", budget=("req-1", 1000))
        b.refund("alice", 600, T0, charge_id="x")
        a.charge("alice", 700, T0, artifact="m@1", charge_id="z", budget=("req-1", 1000))
        with pytest.raises(GrantBudgetSpent, match="1000 of 1000"):
            b.charge("alice", 1, T0, artifact="m@1", charge_id="w", budget=("req-1", 1000))
    finally:
        for s in stores:
            s.close()


def test_two_meters_with_many_threads_never_pass_the_budget(db_url: str) -> None:
    stores = [Store.open(db_url), Store.open(db_url)]
    logs = [audit_log(s) for s in stores]
    meters = [_meter(s, cap=1 << 40) for s in stores]
    passed: list[str] = []
    spent: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        p = w % 2
        for i in range(12):
            cid = f"w{w}-{i}"
            try:
                meters[p].charge_with_event(logs[p], "alice", 10, T0 + i, artifact="m@1",
                                            charge_id=cid, event=_event(cid, 10),
                                            budget=("req-1", 375))
            except GrantBudgetSpent:
                with lock:
                    spent.append(cid)
                continue
            with lock:
                passed.append(cid)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(passed) == 37 and len(spent) == 120 - 37
        assert _budget_rows(stores[0], "req-1") == 370
        allowed = {e.details["nonce"] for e in logs[0].events() if e.action == "key.release"}
        assert allowed == set(passed)
    finally:
        for log in logs:
            log.close()
        for s in stores:
            s.close()


def test_replayed_events_count_against_their_budget(store: Store) -> None:
    log = audit_log(store)
    try:
        # Written before the ledger knew of budgets: the replay fills in the budget id.
        log.append(**_event("old-1", 700))  # type: ignore[arg-type]
        log.append(**{**_EVENT, "nbytes": 50,  # type: ignore[arg-type]
                      "details": {"nonce": "old-2", "break_glass": "bg-1"}})
        meter = _meter(store)
        assert meter.record_events(log.events()) == 2
        assert _budget_rows(store, "req-1") == 700 and _budget_rows(store, "bg-1") == 50
        with pytest.raises(GrantBudgetSpent, match="700 of 1000"):
            meter.charge("alice", 301, T0, artifact="m@1", budget=("req-1", 1000))
    finally:
        log.close()


def test_migration_keeps_old_rows_outside_every_budget(db_url: str) -> None:
    from alembic import command

    kwargs = {"connect_args": {"isolation_level": None}} if is_sqlite(db_url) else {}
    engine = create_engine(db_url, **kwargs)
    try:
        command.upgrade(_alembic_config(engine), "0008_nonces")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO egress_charges (charge_id, principal, artifact, "
                              "nbytes, at) VALUES ('old', 'alice', 'm@1', 900, :at)"),
                         {"at": T0})
    finally:
        engine.dispose()
    store = Store.open(db_url, schema="upgrade")  # as `strongroom db upgrade`: 0009 and later
    try:
        assert store.schema_versions() and "0008_nonces" not in store.schema_versions()
        with store.session(readonly=True) as s:
            assert s.execute(text("SELECT budget_id FROM egress_charges")).all() == [(None,)]
        meter = _meter(store)
        meter.charge("alice", 1000, T0 + 1, artifact="m@1", charge_id="new",
                     budget=("req-1", 1000))
        assert _budget_rows(store, "req-1") == 1000
        assert meter.usage("alice", "m@1", T0 + 2)[0].used == 1900  # windows still see both
    finally:
        store.close()


def test_budget_id_is_bounded(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        with pytest.raises(InvalidInput, match="byte budget"):
            _meter(store).charge("alice", 1, T0, budget=("x" * 129, 10))
    finally:
        store.close()

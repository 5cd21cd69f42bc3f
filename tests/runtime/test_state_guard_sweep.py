"""The ledger check's cost is bounded as the ledger grows; a deleted row of any age comes back.

Each interval looks up only the charge ids of the release entries logged since
the last one, plus one slice of a sweep that covers the budgets' whole horizon
within ``sweep_max_s``; the first call (unseal) and a ``suspect`` meter compare
the whole horizon at once. The clock is driven by hand: no sleeps.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select

from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import StorageError
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.egress import EgressMeter
from strongroom.monitor.ledger import LedgerStore, charge_row
from strongroom.runtime.state_guard import SWEEP_MAX_S, TAMPER_RULE, EgressLedgerCheck, StateGuard
from strongroom.store.db import Store
from strongroom.store.tables.monitor import EgressCharge

#: Release entries logged (and charged) before each test's first check.
ROWS = 600
#: The guard's interval, as the tests drive the clock.
STEP = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Counted:
    """Counts the charge ids the check sends to the ledger and reads back from it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, meter: EgressMeter) -> None:
        self.ids = 0
        missing, since = meter.missing, LedgerStore.ids_since

        def counted_missing(ids: Any) -> set[str]:
            self.ids += len(ids)
            return missing(ids)

        def counted_since(db: LedgerStore, floor: float, conn: Any = None) -> set[str]:
            found = since(db, floor, conn)
            self.ids += len(found)
            return found

        monkeypatch.setattr(meter, "missing", counted_missing)
        monkeypatch.setattr(LedgerStore, "ids_since", counted_since)  # the meter's reads too

    def take(self) -> int:
        n, self.ids = self.ids, 0
        return n


class Setup:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = Clock()
        self.audit = AuditLog(store, Ed25519Signer("sweep.test/log", Ed25519PrivateKey.generate()),
                              clock=lambda: datetime.fromtimestamp(self.clock.now, UTC))
        self.meter = EgressMeter(store)

    def release(self, n: int) -> list[str]:
        """Log ``n`` key.release allow entries and charge them as the gate does; their ids."""
        idx = self.audit.append_many(
            {"actor": f"p{i % 5}", "action": "key.release", "obj": "minilm@1/model.safetensors",
             "decision": "allow", "details": {"nonce": uuid.uuid4().hex}, "nbytes": 1000}
            for i in range(n))
        rows = [r for r in map(charge_row, self.audit.events(idx[0], idx[-1] + 1)) if r]
        self.meter.record_rows(rows)
        return [r[0] for r in rows]

    def check(self, **kw: Any) -> EgressLedgerCheck:
        return EgressLedgerCheck(self.meter, self.audit, clock=self.clock, sweep_share=0.0, **kw)

    def delete(self, *ids: str) -> None:
        with self.store.session() as s:
            s.execute(delete(EgressCharge).where(EgressCharge.charge_id.in_(ids)))

    def held(self, cid: str) -> bool:
        with self.store.session(readonly=True) as s:
            return s.scalar(select(EgressCharge.charge_id)
                            .where(EgressCharge.charge_id == cid)) is not None


@pytest.fixture
def env(store: Store) -> Setup:
    return Setup(store)


def test_the_first_check_compares_the_whole_horizon(env: Setup) -> None:
    ids = env.release(ROWS)
    env.delete(ids[0], ids[ROWS // 2])
    found = env.check().check()  # at unseal
    assert sorted(t.digest for t in found) == sorted([ids[0], ids[ROWS // 2]])
    assert env.held(ids[0]) and env.held(ids[ROWS // 2])


def test_an_interval_looks_up_only_the_new_ids_and_its_sweep_slice(
        env: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    env.release(ROWS)
    check = env.check()
    assert check.check() == []
    counted = Counted(monkeypatch, env.meter)
    slice_ = math.ceil((ROWS + 5 * 3) * STEP / SWEEP_MAX_S)  # a cycle covers what it finds
    for _ in range(5):
        new = env.release(3)
        env.delete(new[1])
        env.clock.now += STEP
        found = check.check()
        assert [t.digest for t in found] == [new[1]]  # a deleted new row: back at once
        assert env.held(new[1])
        # The new ids and one slice of the sweep, not the horizon's ROWS ids (the old
        # check read every id stamped in the horizon on every interval).
        assert counted.take() <= 3 + slice_
        assert check.looked_up <= 3 + slice_


def test_a_deleted_old_row_is_back_within_the_sweep_bound(env: Setup) -> None:
    ids = env.release(ROWS)
    check = env.check()
    assert check.check() == []
    env.delete(ids[-1], ids[ROWS // 2])
    deleted_at, found = env.clock.now, []
    while len(found) < 2:
        env.clock.now += STEP
        assert env.clock.now - deleted_at <= SWEEP_MAX_S + STEP, "not found within the bound"
        found += check.check()
        # A slice at a time, not a full pass each interval.
        assert check.looked_up <= math.ceil(ROWS * STEP / SWEEP_MAX_S)
    assert sorted(t.digest for t in found) == sorted([ids[-1], ids[ROWS // 2]])
    assert env.held(ids[-1]) and env.held(ids[ROWS // 2])
    # Found by the sweep, after more than one interval: this is the bound at work.
    assert env.clock.now - deleted_at > STEP


def test_the_sweep_keeps_its_bound_as_the_log_grows(env: Setup) -> None:
    ids = env.release(ROWS)
    check = env.check()
    check.check()
    env.clock.now += STEP
    check.check()  # a cycle over the first ROWS rows began
    env.delete(ids[1])  # already swept in this cycle: found in the next one
    deleted_at, found = env.clock.now, []
    while not found:
        env.release(40)  # the horizon grows while the sweep goes round
        env.clock.now += STEP
        assert env.clock.now - deleted_at <= 2 * SWEEP_MAX_S, "not found within the bound"
        found = [t for t in check.check() if t.digest == ids[1]]
    assert env.clock.now - deleted_at <= SWEEP_MAX_S + 2 * STEP


def test_a_suspect_meter_makes_the_guard_compare_the_whole_horizon(env: Setup) -> None:
    ids = env.release(ROWS)
    guard = StateGuard(env.store, env.audit, env.meter, AlertManager(env.store))
    assert guard.egress is not None
    guard.egress.clock, guard.egress.sweep_share = env.clock, 0.0
    assert guard.reconcile() == []
    env.clock.now += STEP
    env.delete(ids[ROWS // 2])
    env.meter.suspect.set()  # a reloaded total fell: which row went is unknown
    guard.check()  # before a release
    assert env.held(ids[ROWS // 2])
    assert not env.meter.suspect.is_set()
    alerts = [a for a in AlertManager(env.store).recent() if a.rule == TAMPER_RULE]
    assert any(a.details.get("digest") == ids[ROWS // 2] for a in alerts)


def test_rows_out_of_the_horizon_are_forgotten(env: Setup) -> None:
    ids = env.release(ROWS)
    check = env.check()
    check.check()
    env.clock.now += 8 * 24 * 3600  # past the longest Grant and every window
    env.delete(ids[0])
    assert check.check(full=True) == []  # no longer counts: not put back
    assert not env.held(ids[0])
    assert check.looked_up == 0
    new = env.release(2)
    env.delete(new[0])
    env.clock.now += STEP
    assert [t.digest for t in check.check()] == [new[0]]


def test_new_rows_a_failed_check_did_not_look_up_are_looked_up_next(
        env: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    env.release(ROWS)
    check = env.check(sweep_max_s=1e9)  # no sweep to fall back on: only the new ids
    check.check()
    new = env.release(3)
    env.delete(new[2])
    missing = env.meter.missing

    def down(ids: Any) -> set[str]:
        raise StorageError("cannot read the egress ledger", obj="test")

    monkeypatch.setattr(env.meter, "missing", down)
    env.clock.now += STEP
    with pytest.raises(StorageError):
        check.check()
    monkeypatch.setattr(env.meter, "missing", missing)
    env.clock.now += STEP
    assert [t.digest for t in check.check()] == [new[2]]


def test_rows_leaving_the_horizon_are_dropped_from_memory(env: Setup) -> None:
    env.release(2500)  # more than one log page: the list is compacted, not just skipped
    check = env.check()
    check.check()
    env.clock.now += 8 * 24 * 3600
    check.check()
    assert len(check._rows) == 0
    new = env.release(2)
    env.delete(new[1])
    env.clock.now += STEP
    assert [t.digest for t in check.check()] == [new[1]]  # positions still line up
    assert len(check._rows) == 2

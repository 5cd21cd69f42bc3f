"""Egress budgets: hard stop, warning, durability, replay, clock steps, budgets changed in flight."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import BudgetExceeded, InvalidInput
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.egress import DAY, Budget, EgressMeter
from strongroom.release import ReleaseGate, ReleaseRequest, sign_release_evidence
from strongroom.store.db import Store

from keyring_fixtures import unsealed_service
from monitor_helpers import audit_log

T0 = 1_800_000_000.0


def _meter(store: Store, cap: int = 1000, **kw: object) -> EgressMeter:
    return EgressMeter(store, budgets=[Budget("principal", "*", DAY, cap)], **kw)  # type: ignore[arg-type]


def _rules(alerts: AlertManager) -> list[str]:
    return sorted(a.rule for a in alerts.recent())


def test_cap_is_a_hard_stop_with_a_warning_before_it(store: Store) -> None:
    alerts = AlertManager(store)
    meter = _meter(store, alerts=alerts)
    meter.charge("alice", 700, T0, artifact="m@1")
    assert _rules(alerts) == []
    meter.charge("alice", 200, T0 + 1, artifact="m@1")  # 90 %: warning
    assert _rules(alerts) == ["SR-EGRESS-WARN"]
    with pytest.raises(BudgetExceeded, match="principal alice / 24 h"):
        meter.charge("alice", 200, T0 + 2, artifact="m@1")
    assert _rules(alerts) == ["SR-EGRESS-CAP", "SR-EGRESS-WARN"]
    assert meter.usage("alice", "m@1", T0 + 3)[0].used == 900  # the refused bytes were not recorded
    meter.charge("bob", 1000, T0 + 3, artifact="m@1")  # budgets are per principal
    meter.charge("alice", 1000, T0 + DAY + 2, artifact="m@1")  # the window moved on


def test_artifact_and_lab_budgets_and_named_overrides(store: Store) -> None:
    meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 100),
                                        Budget("artifact", "*", DAY, 150),
                                        Budget("lab", "*", DAY, 250)])
    meter.set_budget(Budget("principal", "svc-eval", DAY, 10_000))
    meter.charge("a", 100, T0, artifact="m@1")
    meter.charge("b", 50, T0, artifact="m@2")  # same artifact name, another version
    with pytest.raises(BudgetExceeded, match="artifact m"):
        meter.charge("c", 1, T0, artifact="m@1")
    meter.charge("svc-eval", 100, T0, artifact="other@1")  # its own budget replaces the default
    with pytest.raises(BudgetExceeded, match="lab-wide"):
        meter.charge("svc-eval", 1, T0, artifact="third@1")


def test_charges_survive_a_restart(store: Store) -> None:
    _meter(store).charge("alice", 600, T0, artifact="m@1")
    with pytest.raises(BudgetExceeded):
        _meter(store).charge("alice", 600, T0 + 10, artifact="m@1")


def test_replayed_events_and_retried_charges_are_charged_once(store: Store) -> None:
    log = audit_log(store)
    try:
        for i in range(3):
            log.append(actor="alice", action="key.release", obj=f"m@1/s{i}", decision="allow",
                       shard=f"s{i}", nbytes=100, details={"nonce": f"nonce-{i:016d}"})
        log.append(actor="alice", action="key.release", obj="m@1/s9", decision="deny", nbytes=5)
        meter = _meter(store)
        assert meter.backfill(log) == 3
        assert meter.backfill(log) == 0
        assert meter.record_events(log.events()) == 0
        assert meter.usage("alice", "m@1")[0].used == 300
        meter.charge("alice", 100, T0, artifact="m@1", charge_id="nonce-0000000000000000")
        assert meter.usage("alice", "m@1")[0].used == 300
    finally:
        log.close()


def test_refund_by_charge_id_and_by_size(store: Store) -> None:
    meter = _meter(store)
    meter.charge("alice", 400, T0, artifact="m@1", charge_id="n1")
    meter.charge("alice", 300, T0, artifact="m@1")
    meter.refund("alice", 400, T0, charge_id="n1")
    meter.refund("alice", 300, T0)
    assert meter.usage("alice", "m@1", T0)[0].used == 0


def test_clock_stepping_back_does_not_reopen_the_window(store: Store) -> None:
    alerts = AlertManager(store)
    meter = _meter(store, alerts=alerts)
    meter.charge("alice", 900, T0, artifact="m@1")
    with pytest.raises(BudgetExceeded):  # clock stepped back two days: old charges still count
        meter.charge("alice", 200, T0 - 2 * DAY, artifact="m@1")
    meter.charge("alice", 50, T0 - 2 * DAY, artifact="m@1")  # stamped at the ledger's time
    assert "SR-EGRESS-CLOCK" in _rules(alerts)
    # When the clock is right again, the charge made while it was wrong is still in the window.
    assert meter.usage("alice", "m@1", T0 + DAY - 10)[0].used == 950


def test_budget_change_while_releases_are_in_flight(store: Store) -> None:
    meter = _meter(store, cap=10_000)
    accepted: list[int] = []
    lock = threading.Lock()
    lowered = threading.Event()
    after: list[bool] = []

    def worker(n: int) -> None:
        for i in range(40):
            was_lowered = lowered.is_set()
            try:
                meter.charge("alice", 10, T0 + i, artifact="m@1", charge_id=f"{n}-{i}")
            except BudgetExceeded:
                continue
            with lock:
                accepted.append(10)
                after.append(was_lowered)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while sum(accepted) < 300:
        pass
    meter.set_budget(Budget("principal", "*", DAY, 500))
    at_change = meter.usage("alice", "m@1", T0 + 100)[0].used
    lowered.set()
    for t in threads:
        t.join()
    used = meter.usage("alice", "m@1", T0 + 100)[0].used
    assert used == sum(accepted)  # no lost or doubled charge
    # Every charge decided after set_budget returned obeyed the new cap.
    assert used <= max(500, at_change)
    if at_change >= 500:
        assert not any(after)
    with pytest.raises(BudgetExceeded):
        meter.charge("alice", 10, T0 + 200, artifact="m@1")


def test_time_to_exfiltrate(store: Store) -> None:
    gib = 2**30
    meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 100 * gib),
                                        Budget("artifact", "big", DAY, 50 * gib)])
    big, small = meter.time_to_exfiltrate([("big@1", 500 * gib), ("small@1", 250 * gib)],
                                          compression=1.25)
    assert big.binding is not None and big.binding.subject == "big"
    assert big.seconds == pytest.approx(400 / 50 * DAY)
    assert big.min_seconds == 7 * DAY
    assert small.seconds == pytest.approx(2 * DAY) and small.min_seconds == DAY
    with pytest.raises(InvalidInput):
        meter.time_to_exfiltrate([("x@1", 1)], compression=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3 * DAY)), max_size=25))
def test_no_window_ever_holds_more_than_the_cap(tmp_path: Path,
                                                charges: list[tuple[int, int]]) -> None:
    store = Store.open(f"sqlite:///{tmp_path / os.urandom(4).hex()}.db")
    try:
        meter = _meter(store, cap=1000)
        done: list[tuple[float, int]] = []
        t = T0
        for nbytes, step in charges:
            t += step % (DAY // 2)
            try:
                meter.charge("p", nbytes, t, artifact="m@1")
                done.append((t, nbytes))
            except BudgetExceeded:
                pass
        for end, _ in done:
            assert sum(n for at, n in done if end - DAY < at <= end) <= 1000
    finally:
        store.close()


def test_the_gate_stops_a_shard_loop_at_the_cap(store: Store, tmp_path: Path) -> None:
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        assert svc._audit is not None
        alerts = AlertManager(store, audit=svc._audit)
        meter = _meter(store, cap=2500, alerts=alerts)
        gate = ReleaseGate(svc.keyring, svc._audit, egress=meter)
        released = 0
        with pytest.raises(BudgetExceeded):
            for i in range(10):
                blob = f"blob-{i}"
                svc.wrap_file_key(blob, os.urandom(16))
                ev = sign_release_evidence(officer.private_key, artifact="m@1",
                                           shard=f"s{i}", blob_id=blob, purpose="load")
                gate.release(ReleaseRequest(officer.public.principal, officer.public.public_bytes,
                                            "m@1", f"s{i}", blob, 1000, "load", ev))
                released += 1
        assert released == 2
        decisions = [e.decision for e in svc._audit.events() if e.action == "key.release"]
        assert decisions == ["allow", "allow", "deny"]
        assert "SR-EGRESS-CAP" in _rules(alerts)
        # The refused shard was not charged.
        assert meter.usage(officer.public.principal, "m@1")[0].used == 2000
    finally:
        svc.seal()


def test_group_committed_charges_stop_exactly_at_the_cap(store: Store) -> None:
    # 16 threads race 160 charges of 100 bytes against a 5,000-byte cap: batches are
    # decided in one transaction each, and exactly 50 may pass, whatever the batching.
    meter = _meter(store, cap=5000)
    passed: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(10):
            cid = f"w{w}-{i}"
            try:
                meter.charge("mallory", 100, T0 + i, artifact="m@1", charge_id=cid)
                outcome = passed
            except BudgetExceeded:
                outcome = refused
            with lock:
                outcome.append(cid)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 50 and len(refused) == 110
    used = {u.budget.scope: u.used for u in meter.usage("mallory", "m@1", now=T0 + 20)}
    assert used["principal"] == 5000
    meter.charge("mallory", 0, T0 + 20, artifact="m@1", charge_id=passed[0])  # a replay: no-op
    assert {u.budget.scope: u.used for u in meter.usage("mallory", "m@1", now=T0 + 20)} == used

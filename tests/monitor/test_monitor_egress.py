"""Egress budgets: hard stop, warning, durability, replay, clock steps, budgets changed in flight."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text

from strongroom.errors import AccessDenied, AuditUnavailable, BudgetExceeded, InvalidInput
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.egress import DAY, Budget, EgressMeter
from strongroom.monitor.ledger import ChargeRow
from strongroom.release import ReleaseGate, ReleaseRequest, sign_release_evidence
from strongroom.store.db import Store

from keyring_fixtures import ClaimedSizes, officer_evidence, unsealed_service
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
        # The shards have no signed manifest here (bare wrapped keys): sizes as claimed.
        gate = ReleaseGate(svc.keyring, svc._audit,
                           evidence=officer_evidence(svc.keyring, store, svc._audit),
                           egress=meter, sizes=ClaimedSizes())
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


_EVENT = {"actor": "alice", "action": "key.release", "obj": "m@1/s", "decision": "allow",
          "shard": "s"}


def _release_event(charge_id: str, nbytes: int, actor: str = "alice") -> dict[str, object]:
    return {**_EVENT, "actor": actor, "nbytes": nbytes, "details": {"nonce": charge_id}}


def _charged_ids(store: Store) -> set[str]:
    with store.session(readonly=True) as s:
        return {str(r[0]) for r in s.execute(text("SELECT charge_id FROM egress_charges"))}


def test_charge_and_audit_event_commit_together(store: Store) -> None:
    log = audit_log(store)
    try:
        meter = _meter(store, cap=1000)
        assert meter.joins(log)
        idx = meter.charge_with_event(log, "alice", 600, T0, artifact="m@1", charge_id="n-1",
                                      event=_release_event("n-1", 600))
        assert log.event(idx).details["nonce"] == "n-1"
        with pytest.raises(BudgetExceeded):  # refused: neither entry nor charge
            meter.charge_with_event(log, "alice", 600, T0 + 1, artifact="m@1",
                                    charge_id="n-2", event=_release_event("n-2", 600))
        with pytest.raises(AccessDenied, match="replay"):  # a nonce already charged
            meter.charge_with_event(log, "alice", 1, T0 + 2, artifact="m@1", charge_id="n-1",
                                    event=_release_event("n-1", 1))
        assert log.size() == 1 and _charged_ids(store) == {"n-1"}
        assert meter.usage("alice", "m@1", T0 + 3)[0].used == 600
        assert meter.backfill(log, now=T0 + 3) == 0  # the ledger already holds every release
    finally:
        log.close()


def test_a_failed_audit_batch_charges_nothing(store: Store) -> None:
    log = audit_log(store)
    try:
        meter = _meter(store, cap=1000)
        meter.charge_with_event(log, "alice", 300, T0, artifact="m@1", charge_id="a",
                                event=_release_event("a", 300))
        real = log._writer._insert_entry
        log._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
        try:
            with pytest.raises(AuditUnavailable):
                meter.charge_with_event(log, "alice", 600, T0 + 1, artifact="m@1",
                                        charge_id="b", event=_release_event("b", 600))
        finally:
            log._writer._insert_entry = real
        assert _charged_ids(store) == {"a"}
        # The totals the failed batch counted in memory were dropped with it: exactly
        # 700 bytes are left, not 100.
        meter.charge_with_event(log, "alice", 700, T0 + 2, artifact="m@1", charge_id="c",
                                event=_release_event("c", 700))
        with pytest.raises(BudgetExceeded):
            meter.charge_with_event(log, "alice", 1, T0 + 3, artifact="m@1", charge_id="d",
                                    event=_release_event("d", 1))
    finally:
        log.close()


def test_two_processes_share_the_cap(db_url: str) -> None:
    # Two meters with their own stores and audit logs stand for two gates (processes) on
    # one database: each sees the other's charges, budget changes and refunds.
    stores = [Store.open(db_url), Store.open(db_url)]
    logs = [audit_log(s) for s in stores]
    meters = [_meter(s, cap=1000) for s in stores]
    try:
        for i in range(4):
            meters[i % 2].charge_with_event(logs[i % 2], "alice", 200, T0 + i, artifact="m@1",
                                            charge_id=f"p{i}", event=_release_event(f"p{i}", 200))
        with pytest.raises(BudgetExceeded):
            meters[1].charge_with_event(logs[1], "alice", 201, T0 + 5, artifact="m@1",
                                        charge_id="p5", event=_release_event("p5", 201))
        meters[0].refund("alice", 200, T0 + 5, charge_id="p0")
        meters[1].charge_with_event(logs[1], "alice", 400, T0 + 6, artifact="m@1",
                                    charge_id="p6", event=_release_event("p6", 400))
        meters[1].set_budget(Budget("principal", "*", DAY, 2000))
        meters[0].charge("alice", 1000, T0 + 7, artifact="m@1", charge_id="p7")
        with pytest.raises(BudgetExceeded):
            meters[0].charge_with_event(logs[0], "alice", 1, T0 + 8, artifact="m@1",
                                        charge_id="p8", event=_release_event("p8", 1))

        # Both processes at once, with many threads each: the cap holds exactly.
        meters[0].set_budget(Budget("principal", "*", DAY, 2000 + 50 * 10))
        passed: list[str] = []
        lock = threading.Lock()

        def worker(w: int) -> None:
            p = w % 2
            for i in range(10):
                cid = f"w{w}-{i}"
                try:
                    meters[p].charge_with_event(logs[p], "alice", 10, T0 + 10 + i,
                                                artifact="m@1", charge_id=cid,
                                                event=_release_event(cid, 10))
                except BudgetExceeded:
                    continue
                with lock:
                    passed.append(cid)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(passed) == 50
        used = meters[1].usage("alice", "m@1", T0 + 30)[0].used
        assert used == 2500
        # Every release entry is charged, and only those (p0 was refunded, p7 had no event).
        allowed = {e.details["nonce"] for e in logs[0].events() if e.action == "key.release"}
        assert allowed - {"p0"} == _charged_ids(stores[0]) - {"p7"}
    finally:
        for log in logs:
            log.close()
        for s in stores:
            s.close()


def test_audited_and_plain_charges_race_to_an_exact_cap(store: Store) -> None:
    log = audit_log(store)
    meter = _meter(store, cap=5000)
    passed: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(10):
            cid = f"w{w}-{i}"
            try:
                if w % 2:
                    meter.charge("mallory", 100, T0 + i, artifact="m@1", charge_id=cid)
                else:
                    meter.charge_with_event(log, "mallory", 100, T0 + i, artifact="m@1",
                                            charge_id=cid, event=_release_event(cid, 100))
            except BudgetExceeded:
                continue
            with lock:
                passed.append(cid)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(passed) == 50
        assert meter.usage("mallory", "m@1", T0 + 20)[0].used == 5000
        assert _charged_ids(store) == set(passed)
        logged = {e.details["nonce"] for e in log.events() if e.action == "key.release"}
        assert logged == {c for c in passed if int(c[1:].split("-")[0]) % 2 == 0}
    finally:
        log.close()


def test_named_budget_totals_stay_exact_across_versions(store: Store) -> None:
    # "m@1" has its own artifact budget, counted over every version of m; charges for m@2
    # (under the "*" budget) must still count against m@1's total.
    meter = EgressMeter(store, budgets=[Budget("artifact", "*", DAY, 10_000),
                                        Budget("artifact", "m@1", DAY, 500)])
    meter.charge("a", 300, T0, artifact="m@1")
    meter.charge("b", 300, T0 + 1, artifact="m@2")
    with pytest.raises(BudgetExceeded, match="artifact m"):
        meter.charge("c", 300, T0 + 2, artifact="m@1")
    meter.charge("c", 200, T0 + 3, artifact="m@2")
    with pytest.raises(BudgetExceeded):
        meter.charge("c", 1, T0 + 4, artifact="m@1")


_MIXED = [Budget("principal", "*", DAY, 900), Budget("principal", "bob", 3600, 300),
          Budget("artifact", "*", DAY, 1200), Budget("artifact", "m@1", 7200, 500),
          Budget("lab", "*", DAY, 2000)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.sampled_from(["m@1", "m@2", "n@1"]),
                          st.integers(0, 400), st.integers(-2 * 3600, 6 * 3600)), max_size=30))
def test_running_totals_match_summing_the_ledger(tmp_path: Path,
                                                 charges: list[tuple[str, str, int, int]]) -> None:
    # The meter keeps window totals in memory; a model that sums every accepted charge
    # must take exactly the same decisions (several budgets, named overrides, clock steps).
    from strongroom.artifacts import base_name
    from strongroom.monitor.egress import applicable

    store = Store.open(f"sqlite:///{tmp_path / os.urandom(4).hex()}.db")
    try:
        meter = EgressMeter(store, budgets=_MIXED)
        log = audit_log(store)
        done: list[tuple[str, str, int, float]] = []
        high, now = float("-inf"), T0
        for i, (who, ref, nbytes, step) in enumerate(charges):
            now += step
            t = max(now, high)

            def counts(b: Budget, p: str, a: str, who: str = who, ref: str = ref) -> bool:
                if b.scope == "principal":
                    return p == who
                return b.scope == "lab" or base_name(a) == base_name(ref)

            expect = all(sum(n for p, a, n, at in done if at > t - b.window_s and counts(b, p, a))
                         + nbytes <= b.cap_bytes for b in applicable(_MIXED, who, ref))
            cid = f"c{i}"
            try:
                if i % 2:
                    meter.charge(who, nbytes, now, artifact=ref, charge_id=cid)
                else:
                    meter.charge_with_event(log, who, nbytes, now, artifact=ref, charge_id=cid,
                                            event=_release_event(cid, nbytes, who))
                got = True
            except BudgetExceeded:
                got = False
            assert got == expect, (i, who, ref, nbytes, now)
            if got:
                done.append((who, ref, nbytes, t))
                high = max(high, t)
        log.close()
    finally:
        store.close()


def test_a_refused_charge_from_a_fast_clock_does_not_age_out_totals(store: Store) -> None:
    # A charge refused at a time far ahead moves no high-water mark; when the clock comes
    # back, charges it would have aged out still count.
    meter = _meter(store, cap=1000)
    meter.charge("alice", 600, T0, artifact="m@1")
    with pytest.raises(BudgetExceeded):
        meter.charge("alice", 1001, T0 + DAY + 10, artifact="m@1")
    with pytest.raises(BudgetExceeded):
        meter.charge("alice", 500, T0 + 5, artifact="m@1")
    meter.charge("alice", 400, T0 + 6, artifact="m@1")


def test_hosts_catch_up_on_each_others_charges_without_reloading(db_url: str) -> None:
    """Another host's charges are appends: a meter reads only those rows, never whole windows.

    Two meters on one database stand for two hosts. Between ``a``'s batches ``b``
    charges (one with its clock behind, stamped at the ledger's high water: a tie
    that must count once); ``a`` keeps its cache object and counts exactly what
    ``b`` added. A change that is not an append (a budget set, a refund) bumps the
    epoch, and ``a`` then rebuilds from the rows.
    """
    stores = [Store.open(db_url), Store.open(db_url)]
    a, b = (EgressMeter(s, budgets=[Budget("principal", "*", DAY, 1000),
                                    Budget("lab", "*", DAY, 5000)]) for s in stores)
    try:
        a.charge("alice", 100, T0, artifact="m@1", charge_id="a1")
        cache = a._ledger
        assert cache is not None
        b.charge("alice", 200, T0 + 1, artifact="m@1", charge_id="b1")
        b.charge("alice", 50, T0 - 30, artifact="m@1", charge_id="b2")  # stamped at T0 + 1
        read: list[int] = []
        since = a._db.since

        def counted(conn: Connection, high: float) -> list[ChargeRow]:
            rows = since(conn, high)
            read.append(len(rows))
            return rows

        a._db.since = counted  # type: ignore[method-assign]
        a.charge("alice", 300, T0 + 2, artifact="m@1", charge_id="a2")
        assert a._ledger is cache and read == [3]  # a1's tie, b1, b2: caught up, not rebuilt
        with pytest.raises(BudgetExceeded, match=r"\(650 of 1000 bytes used\)"):
            a.charge("alice", 351, T0 + 3, artifact="m@1", charge_id="a3")
        b.charge("bob", 900, T0 + 3, artifact="m@1", charge_id="b3")
        with pytest.raises(BudgetExceeded, match=r"\(1550 of 5000 bytes used\)"):
            a.charge("carol", 3500, T0 + 4, artifact="m@1", charge_id="a4")
        b.set_budget(Budget("principal", "*", DAY, 700))  # not an append: a rebuilds
        with pytest.raises(BudgetExceeded, match=r"\(650 of 700 bytes used\)"):
            a.charge("alice", 51, T0 + 5, artifact="m@1", charge_id="a5")
        assert a._ledger is not cache
        cache = a._ledger
        b.refund("alice", 200, T0 + 5, charge_id="b1")
        a.charge("alice", 51, T0 + 6, artifact="m@1", charge_id="a6")
        assert a._ledger is not cache
        with pytest.raises(BudgetExceeded, match=r"\(501 of 700 bytes used\)"):
            a.charge("alice", 200, T0 + 7, artifact="m@1", charge_id="a7")
    finally:
        for s in stores:
            s.close()


def test_rows_deleted_by_hand_stay_counted_when_the_log_restores_only_some(store: Store) -> None:
    """A generation moved with no row appended: suspect, repaired, and nothing forgotten.

    A DBA deletes two charges and bumps the generation. The repair (the state guard's,
    from the audit log) can put back only the one the log holds; the other still counts,
    because the meter's totals never count less than they knew.
    """
    meter = _meter(store, cap=1000)
    meter.charge("alice", 300, T0, artifact="m@1", charge_id="logged")
    meter.charge("alice", 300, T0 + 1, artifact="m@1", charge_id="unlogged")
    cache = meter._ledger
    with store.session() as s:
        s.execute(text("DELETE FROM egress_charges WHERE principal = 'alice'"))
        s.execute(text("UPDATE egress_ledger SET generation = generation + 1"))

    def repair(conn: Connection) -> int:
        meter.insert(conn, [("logged", "alice", "m@1", 300, T0, None)])
        return 1

    meter.repair = repair
    with pytest.raises(BudgetExceeded, match=r"\(600 of 1000 bytes used\)"):
        meter.charge("alice", 401, T0 + 2, artifact="m@1", charge_id="third")
    assert meter.suspect.is_set() and meter._ledger is cache  # kept, not rebuilt
    meter.charge("alice", 400, T0 + 3, artifact="m@1", charge_id="fourth")  # 1000: exact
    with pytest.raises(BudgetExceeded, match=r"\(1000 of 1000 bytes used\)"):
        meter.charge("alice", 1, T0 + 4, artifact="m@1", charge_id="fifth")


def test_a_replay_of_a_charge_the_repair_puts_back_is_refused_as_a_replay(store: Store) -> None:
    """The repair runs after the batch's replay check: the check runs again after it."""
    meter = _meter(store, cap=1000)
    meter.charge("alice", 100, T0, artifact="m@1", charge_id="n1")
    with store.session() as s:
        s.execute(text("DELETE FROM egress_charges WHERE charge_id = 'n1'"))
        s.execute(text("UPDATE egress_ledger SET generation = generation + 1"))
    meter.repair = lambda conn: meter.insert(conn, [("n1", "alice", "m@1", 100, T0, None)]) or 1
    meter.charge("alice", 100, T0 + 1, artifact="m@1", charge_id="n1")  # a replay: a no-op
    with store.session(readonly=True) as s:
        assert s.execute(text("SELECT count(*) FROM egress_charges")).scalar() == 1
    with pytest.raises(BudgetExceeded, match=r"\(100 of 1000 bytes used\)"):
        meter.charge("alice", 901, T0 + 2, artifact="m@1", charge_id="n2")

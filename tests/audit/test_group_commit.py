"""Group commit under many concurrent appenders: durable, ordered, one verifiable tree."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from strongroom.audit import AuditLog, InclusionProof
from strongroom.audit.entry import EntryEncoder, format_time
from strongroom.audit.redaction import Redactor
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import AuditUnavailable, InvalidInput
from strongroom.store.db import Store

from audit_helpers import ORIGIN

THREADS = 64
PER_THREAD = 12


def test_64_appenders_share_commits_and_every_entry_is_durable_in_order(
    store: Store, db_url: str, signer: Ed25519Signer
) -> None:
    """64 threads append() in a loop: each index names the caller's own entry, each caller's
    entries are in its own order, commits grouped them, and a fresh store sees one tree."""
    log = AuditLog(store, signer, ORIGIN)
    commits: list[int] = []
    log.observe_commits(lambda entries, _seconds: commits.append(entries))
    got: dict[int, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def appender(t: int) -> None:
        mine = got.setdefault(t, [])
        try:
            start.wait()
            for i in range(PER_THREAD):
                mine.append(
                    log.append(
                        actor=f"t{t}",
                        action="weights.read",
                        obj=f"{t}:{i}",
                        decision="allow",
                        details={"i": i},
                    )
                )
        except BaseException as exc:  # reported below, not swallowed
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures
    total = THREADS * PER_THREAD
    assert sorted(i for mine in got.values() for i in mine) == list(range(total))
    for mine in got.values():
        assert mine == sorted(mine)  # a caller's later append never lands before its earlier one
    assert sum(commits) == total
    assert len(commits) < total  # concurrent appends shared transactions
    log.checkpoint()
    log.close()

    # Durable: another store on the same database reads every entry where its caller was told.
    again = Store.open(db_url)
    reopened = AuditLog(again, signer, ORIGIN)
    try:
        assert reopened.size() == total
        for t, mine in got.items():
            for i, index in enumerate(mine):
                ev = reopened.event(index)
                assert (ev.index, ev.actor, ev.object, ev.details) == (
                    index,
                    f"t{t}",
                    f"{t}:{i}",
                    {"i": i},
                )
        report = reopened.verify()
        assert report.size == total
        for index in (0, total // 2, total - 1):
            proof = InclusionProof.parse(reopened.prove(index).to_text())
            assert proof.verify(signer.vkey).index == index
    finally:
        reopened.close()
        again.close()


def test_concurrent_append_many_batches_stay_contiguous(
    store: Store, signer: Ed25519Signer
) -> None:
    """append_many from several threads: each call's entries get consecutive indices."""
    log = AuditLog(store, signer, ORIGIN)
    try:
        results: dict[int, list[int]] = {}

        def batcher(t: int) -> None:
            results[t] = log.append_many(
                [
                    dict(actor=f"b{t}", action="key.release", obj=f"{t}:{i}", decision="allow")
                    for i in range(10)
                ]
            )

        threads = [threading.Thread(target=batcher, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for t, indices in results.items():
            assert indices == list(range(indices[0], indices[0] + 10))
            assert [log.event(i).object for i in indices] == [f"{t}:{i}" for i in range(10)]
        assert log.verify().size == 160
    finally:
        log.close()


class _ThreadSeen:
    """An append guard that admits every claim and records the thread deciding it."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.held = threading.Event()
        self.go = threading.Event()
        self.go.set()

    def admit(self, conn: object, claims: list[object]) -> list[bool]:
        self.threads.append(threading.current_thread())
        self.held.set()
        assert self.go.wait(10)
        return [True] * len(claims)

    def settle(self, claims: list[object], committed: bool) -> None:
        pass


def test_an_append_on_an_idle_log_commits_on_the_callers_own_thread(
    store: Store, signer: Ed25519Signer
) -> None:
    """Leader/follower: no hand-off to another thread when nothing else is committing."""
    log = AuditLog(store, signer, ORIGIN)
    try:
        guard = _ThreadSeen()
        assert log.append_if(guard, "c", actor="a", action="x", obj="o", decision="allow") == 0
        assert guard.threads == [threading.current_thread()]
    finally:
        log.close()


def test_appends_queued_behind_a_commit_are_led_by_one_of_their_callers(
    store: Store, signer: Ed25519Signer
) -> None:
    """While a leader commits, later appends queue; one of their callers then commits them
    all in one batch, and every caller gets its own index."""
    log = AuditLog(store, signer, ORIGIN)
    commits: list[int] = []
    log.observe_commits(lambda entries, _seconds: commits.append(entries))
    try:
        guard = _ThreadSeen()
        guard.go.clear()
        got: dict[str, int | None] = {}

        def call(name: str) -> None:
            got[name] = log.append_if(guard, name, actor=name, action="x", obj=name,
                                      decision="allow")

        first = threading.Thread(target=call, args=("first",))
        first.start()
        assert guard.held.wait(10)  # the first caller leads and is inside its transaction
        later = [threading.Thread(target=call, args=(f"t{i}",)) for i in range(8)]
        for th in later:
            th.start()
        while len(log._writer._batch.items) < 8:
            threading.Event().wait(0.001)
        guard.go.set()
        for th in [first, *later]:
            th.join()
        assert commits == [1, 8]
        assert guard.threads[0] is first and guard.threads[1] in later
        assert sorted(i for i in got.values() if i is not None) == list(range(9))
        assert all(log.event(i).actor == name for name, i in got.items() if i is not None)
    finally:
        log.close()


def test_an_append_queued_past_its_timeout_is_refused_and_the_log_goes_on(
    store: Store, signer: Ed25519Signer
) -> None:
    """A follower whose batch has not committed within ``append_timeout`` gets
    AuditUnavailable (it must refuse its decision); its entry stays queued and commits
    with the next batch, and later appends get their indices as usual."""
    log = AuditLog(store, signer, ORIGIN, append_timeout=0.2)
    try:
        guard = _ThreadSeen()
        guard.go.clear()
        got: list[int | None] = []
        first = threading.Thread(target=lambda: got.append(log.append_if(
            guard, "c", actor="first", action="x", obj="o", decision="allow")))
        first.start()
        assert guard.held.wait(10)  # the leader is inside its transaction
        with pytest.raises(AuditUnavailable, match="not durable after"):
            log.append(actor="late", action="x", obj="o", decision="allow")
        assert log._writer._batch.done.waiters == []  # no longer waiting
        guard.go.set()
        first.join()
        assert got == [0]
        assert log.append(actor="next", action="x", obj="o", decision="allow") == 2
        assert [e.actor for e in log.events(0, 3)] == ["first", "late", "next"]
    finally:
        log.close()


def test_one_leader_at_a_time(store: Store, signer: Ed25519Signer) -> None:
    """Callers racing to lead (append, submit().result(), append_many) never commit
    two batches at once on the writer's one connection."""
    log = AuditLog(store, signer, ORIGIN)
    inside = [0]
    most = [0]
    guard = threading.Lock()
    real = log._writer._commit

    def counted(batch: object) -> int:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            threading.Event().wait(0.0005)  # callers pile up and race to lead the next
            return real(batch)  # type: ignore[arg-type]
        finally:
            with guard:
                inside[0] -= 1

    log._writer._commit = counted  # type: ignore[method-assign]
    failures: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            for i in range(8):
                if t % 3 == 0:
                    log.submit(actor="s", action="x", obj=f"{t}:{i}", decision="allow").result()
                elif t % 3 == 1:
                    log.append(actor="a", action="x", obj=f"{t}:{i}", decision="allow")
                else:
                    log.append_many([dict(actor="m", action="x", obj=f"{t}:{i}",
                                          decision="allow")])
        except BaseException as exc:  # reported below
            failures.append(exc)

    try:
        threads = [threading.Thread(target=caller, args=(t,)) for t in range(24)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not failures
        assert most[0] == 1
        assert log.verify().size == 24 * 8
    finally:
        log.close()


def test_submitted_appends_commit_with_the_next_caller_or_at_close(
    store: Store, db_url: str, signer: Ed25519Signer
) -> None:
    """submit() only queues: the next caller that waits commits it, and so does close()."""
    log = AuditLog(store, signer, ORIGIN)
    pending = [log.submit(actor="p", action="x", obj=f"o{i}", decision="allow")
               for i in range(3)]
    assert log.append(actor="a", action="x", obj="o", decision="allow") == 3
    assert [p.result() for p in pending] == [0, 1, 2]
    log.submit(actor="p", action="x", obj="last", decision="allow")
    log.close()
    again = Store.open(db_url)
    reopened = AuditLog(again, signer, ORIGIN)
    try:
        assert reopened.size() == 5 and reopened.event(4).object == "last"
        reopened.verify()
    finally:
        reopened.close()
        again.close()


def test_entry_time_is_utc_with_z_whatever_the_clock_zone() -> None:
    utc = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    assert format_time(utc) == "2026-03-04T05:06:07.000089Z"
    assert format_time(utc.astimezone(timezone(timedelta(hours=-7)))) == format_time(utc)
    assert format_time(datetime(2026, 3, 4, 5, 6, 7, tzinfo=ZoneInfo("UTC"))) == (
        "2026-03-04T05:06:07.000000Z"
    )
    with pytest.raises(InvalidInput, match="timezone-aware"):
        format_time(datetime(2026, 3, 4, 5, 6, 7))


@pytest.mark.parametrize("field", ["actor", "action", "obj", "decision"])
@pytest.mark.parametrize("bad", ["", 7, None])
def test_each_required_field_is_checked(field: str, bad: object) -> None:
    encoder = EntryEncoder(Redactor(bytes(16)), lambda: datetime(2026, 1, 1, tzinfo=UTC))
    fields: dict[str, object] = dict(actor="a", action="b", obj="c", decision="allow")
    fields[field] = bad
    name = "object" if field == "obj" else field
    with pytest.raises(InvalidInput, match=f"non-empty {name}"):
        encoder.encode(*fields.values(), "", None, None, None, None)  # type: ignore[arg-type]

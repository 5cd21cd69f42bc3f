"""PostgreSQL: a PipelinedGuard's statements ride on the audit batch's own statements.

Its first statements go out in the pipeline that locks the head and come back to its
``admit``; its writes run inside the statement that writes the entries, or on their
own when it refused every claim; a write that fails fails the batch (nothing written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, text

from strongroom.audit import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import AuditUnavailable
from strongroom.store.db import Store

from audit_helpers import ORIGIN

_EVENT = {"actor": "alice", "action": "weights.read", "obj": "m@1", "decision": "allow"}


class _Guard:
    """Admits (or refuses) every claim; adds its claims' count to the ledger's epoch."""

    def __init__(self, admit: bool = True, write: str | None = None) -> None:
        self.verdict = admit
        self.write = write or "UPDATE egress_ledger SET epoch = epoch + %s WHERE id = 1"
        self.first: list[int] = []
        self.settled: list[bool] = []

    def queue_first(self, conn: Connection, claims: Sequence[Any]) -> Any:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        cur.execute("SELECT 40 + %s", (len(claims),))
        return cur

    def admit(self, conn: Connection, claims: Sequence[Any], queued: Any = None) -> list[bool]:
        assert queued is not None  # PostgreSQL: the writer sent the first statements
        self.first.append(int(queued.fetchone()[0]))
        queued.close()
        return [self.verdict] * len(claims)

    def writes(self, queued: Any) -> list[tuple[str, list[Any]]]:
        return [(self.write, [2])]

    def settle(self, claims: Sequence[Any], committed: bool) -> None:
        self.settled.append(committed)


def _epoch(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.execute(text("SELECT epoch FROM egress_ledger")).scalar_one())


@pytest.fixture
def pg_store(pg_url: str) -> Any:
    store = Store.open(pg_url)
    yield store
    store.close()


@pytest.mark.parametrize("admit", [True, False])
def test_the_guards_statements_ride_on_the_batch(pg_store: Store, signer: Ed25519Signer,
                                                 admit: bool) -> None:
    log = AuditLog(pg_store, signer, ORIGIN)
    try:
        guard = _Guard(admit)
        out = log.append_many_if(guard, [(i, _EVENT) for i in range(2)])
        assert out == ([0, 1] if admit else [None, None])
        assert guard.first == [42] and guard.settled == [True]
        assert _epoch(pg_store) == 2  # written with the entries, or alone when none is
        assert log.size() == (2 if admit else 0)
    finally:
        log.close()


def test_a_failed_write_of_the_guard_fails_the_batch(pg_store: Store,
                                                     signer: Ed25519Signer) -> None:
    log = AuditLog(pg_store, signer, ORIGIN)
    try:
        guard = _Guard(write="UPDATE no_such_table SET x = %s")
        with pytest.raises(AuditUnavailable):
            log.append_many_if(guard, [(0, _EVENT)])
        assert guard.settled == [False] and _epoch(pg_store) == 0 and log.size() == 0
        assert log.append(actor="alice", action="weights.read", obj="m@1",
                          decision="allow") == 0  # the log goes on
    finally:
        log.close()

"""The access statements' head: the marker but its count, read through indexes.

A release batch reads only the head (:meth:`strongroom.access.evidence.GrantEvidence.batch`),
so it must move whenever the full marker's generation or highest id moves, and its query
must never scan the table (the full marker's count(*) does: O(rows) on every batch).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select

from strongroom.access import statements
from strongroom.store.db import Store
from strongroom.store.tables.access import AccessStatement


def _env(i: int) -> str:
    return statements.sign("review", {"n": i}, Ed25519PrivateKey.generate())


def _insert_by_sql(store: Store, env: str, **fixed: int) -> None:
    with store.session() as s:  # not through put: the generation stays as it was
        s.add(AccessStatement(kind="review", subject="s", resource="", signer="",
                              digest=statements.payload_digest(env), envelope=env, expires=0,
                              created_at=datetime.now(UTC), **fixed))


def _head_of(store: Store) -> tuple[int, int]:
    full = statements.marker(store)
    assert statements.head(store) == (full[0], full[2])  # always the marker but its count
    return statements.head(store)


def test_the_head_moves_with_puts_inserts_and_the_top_row_only(store: Store) -> None:
    for i in range(3):
        statements.put(store, "review", _env(i), subject="s")
    before = _head_of(store)
    statements.put(store, "review", _env(9), subject="s")
    assert _head_of(store)[0] == before[0] + 1  # a put bumps the generation
    before = _head_of(store)
    _insert_by_sql(store, _env(10))
    assert _head_of(store) == (before[0], before[1] + 1)  # an INSERT numbered by the table
    with store.session() as s:
        top = s.scalar(select(func.max(AccessStatement.id)))
        low = s.scalar(select(func.min(AccessStatement.id)))
    before, count = _head_of(store), statements.marker(store)[1]
    with store.session() as s:
        s.execute(delete(AccessStatement).where(AccessStatement.id == low))
    assert _head_of(store) == before  # below the top: only the full marker's count sees it
    assert statements.marker(store)[1] == count - 1
    _insert_by_sql(store, _env(11), id=low)  # an INSERT picking a free lower id itself
    assert _head_of(store) == before and statements.marker(store)[1] == count
    with store.session() as s:
        s.execute(delete(AccessStatement).where(AccessStatement.id == top))
    assert _head_of(store)[1] < before[1]  # the top row: the head moves


def test_the_head_reads_no_row_but_the_last(store: Store) -> None:
    explain = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    with store.engine.connect() as conn:
        head = " ".join(str(r[-1]) for r in conn.exec_driver_sql(explain + statements._HEAD_SQL))
        full = " ".join(str(r[-1]) for r in conn.exec_driver_sql(explain + statements._MARKER_SQL))
    if store.dialect == "sqlite":
        assert "SEARCH access_statements" in head and "SCAN access_statements" not in head
        assert "SCAN access_statements" in full  # what the head saves a batch
    else:
        assert "Index Only Scan Backward using pk_access_statements" in head, head
        assert "Seq Scan on access_statements" not in head
        assert "Seq Scan on access_statements" in full or "Index Only Scan" in full, full

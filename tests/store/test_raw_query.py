"""raw_query keeps DB-API connections between calls: never a stale read, never a leaked one.

Every key release reads the access statements' marker and the blob's wrapped
keys with :func:`raw_query`; the marker is what makes a revocation refuse the
very next release. Keeping connections between calls must not keep a read
snapshot open (a later query must see every commit made before it), nor keep
a connection that failed, nor outlive the engine's disposal.
"""

from __future__ import annotations

import pytest

from strongroom.access import statements
from strongroom.store.db import Store, _raw_readers, raw_query


def _mark(store: Store) -> str:
    return "?" if store.dialect == "sqlite" else "%s"


def test_each_query_sees_every_commit_before_it(store: Store) -> None:
    before = statements.marker(store)
    for i in range(3):  # a commit on another connection between two reads on kept ones
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE access_generation SET generation = generation + 1 WHERE id = 1"
            )
        after = statements.marker(store)
        assert after[0] == before[0] + i + 1
    assert _raw_readers[store.engine]._idle  # the connection was kept between the reads


def test_a_connection_that_failed_is_not_kept(store: Store) -> None:
    raw_query(store.engine, "SELECT 1")
    readers = _raw_readers[store.engine]
    kept = list(readers._idle)
    assert kept
    with pytest.raises(Exception, match=r"no_such_table|does not exist|no such table"):
        raw_query(store.engine, "SELECT * FROM no_such_table")
    assert not any(c in readers._idle for c in kept[-1:])  # the one that failed is gone
    assert raw_query(store.engine, f"SELECT {_mark(store)}", (7,)) == [(7,)]  # a fresh one


def test_dispose_closes_kept_connections(store: Store) -> None:
    raw_query(store.engine, "SELECT 1")
    readers = _raw_readers[store.engine]
    kept = list(readers._idle)
    assert kept
    store.engine.dispose()
    assert readers._idle == []
    for conn in kept:  # closed: a closed DB-API connection refuses a cursor
        with pytest.raises(Exception):  # noqa: B017 - sqlite3 and psycopg raise their own
            conn.cursor().execute("SELECT 1")
    assert raw_query(store.engine, "SELECT 1") == [(1,)]  # and the engine still works


def test_postgresql_reads_are_one_statement_each_and_stay_prepared(store: Store) -> None:
    """In autocommit a read is one round trip (no BEGIN before it, no ROLLBACK after it),
    and psycopg keeps its prepared statements (a ROLLBACK would forget them)."""
    if store.dialect != "postgresql":
        pytest.skip("psycopg's transactions")
    for _ in range(8):  # psycopg prepares a statement from its fifth run on
        raw_query(store.engine, "SELECT generation FROM access_generation WHERE id = 1")
    readers = _raw_readers[store.engine]
    assert len(readers._idle) == 1 and readers._idle[0].autocommit
    prepared = raw_query(store.engine, "SELECT count(*) FROM pg_prepared_statements")
    assert prepared[0][0] >= 1
    # still no stale read: the kept connection holds no snapshot between reads
    test_each_query_sees_every_commit_before_it(store)

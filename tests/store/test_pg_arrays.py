"""Typed array parameters: the literal PostgreSQL reads is exactly the list sent."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.store.db import Store
from strongroom.store.pg_arrays import (
    ByteaArray,
    Float8Array,
    Int2Array,
    Int8Array,
    VarcharArray,
    _byteas,
    _floats,
    _ints,
    _texts,
)


def test_literals() -> None:
    assert _ints([1, -2, 2**62]) == b"{1,-2,4611686018427387904}"
    assert _ints([]) == b"{}"
    assert _floats([1.5, 1e16, 0.1, 1733275200]) == b"{1.5,1e+16,0.1,1733275200.0}"
    assert _byteas([b"\x00\xff", b""]) == b'{"\\\\x00ff","\\\\x"}'
    assert _texts(["a", None, 'q"b\\s', "NULL", ""], "utf-8") == \
        b'{"a",NULL,"q\\"b\\\\s","NULL",""}'


@pytest.mark.parametrize(("make", "bad"), [
    (_ints, [True]), (_ints, [1.0]), (_floats, [math.nan]), (_floats, [math.inf]),
    (_floats, [True]), (_floats, ["1.0"]),
])
def test_values_of_another_type_are_refused(make: Callable[[Any], bytes], bad: list[Any]) -> None:
    with pytest.raises(TypeError):
        make(bad)


def test_text_with_a_nul_is_refused_as_psycopg_refuses_it() -> None:
    with pytest.raises(psycopg.DataError):
        _texts(["a\x00b"], "utf-8")


@pytest.fixture
def raw(pg_url: str) -> Iterator[Any]:
    """A DB-API connection of a store opened on PostgreSQL (which registers the dumpers)."""
    store = Store.open(pg_url)
    try:
        with store.engine.connect() as conn:
            yield conn.connection.dbapi_connection
    finally:
        store.close()


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


@pytest.mark.postgres
def test_each_array_reads_back_as_sent(raw: Any) -> None:
    cur = raw.cursor()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(-2**63, 2**63 - 1), max_size=8),
           st.lists(st.integers(-2**15, 2**15 - 1), max_size=8),
           st.lists(_FLOATS, max_size=8),
           st.lists(st.binary(max_size=64), max_size=8),
           st.lists(st.none() | _TEXT, max_size=8))
    def check(i8: list[int], i2: list[int], f8: list[float], ba: list[bytes],
              vc: list[str | None]) -> None:
        cur.execute("SELECT %s::bigint[], %s::smallint[], %s::float8[], %s::bytea[], "
                    "%s::varchar[]",
                    (Int8Array(i8), Int2Array(i2), Float8Array(f8), ByteaArray(ba),
                     VarcharArray(vc)))
        got = cur.fetchone()
        assert got[0] == i8
        assert got[1] == i2
        assert got[2] == f8  # exact: repr reads back as the same double
        assert [bytes(b) for b in got[3]] == ba
        assert got[4] == vc
        # And the same arrays as psycopg's own adaptation of the plain lists.
        cur.execute("SELECT %s::bigint[] IS NOT DISTINCT FROM %s::bigint[], "
                    "%s::smallint[] IS NOT DISTINCT FROM %s::smallint[], "
                    "%s::float8[] IS NOT DISTINCT FROM %s::float8[], "
                    "%s::bytea[] IS NOT DISTINCT FROM %s::bytea[], "
                    "%s::varchar[] IS NOT DISTINCT FROM %s::varchar[]",
                    (Int8Array(i8), i8, Int2Array(i2), i2, Float8Array(f8), f8,
                     ByteaArray(ba), ba, VarcharArray(vc), vc))
        assert cur.fetchone() == (True, True, True, True, True)

    check()


@pytest.mark.postgres
def test_the_wrappers_are_sent_by_their_dumpers(raw: Any) -> None:
    """Not psycopg's list path: the parameter carries the array's own type oid."""
    cur = raw.cursor()
    cur.execute("SELECT pg_typeof(%s)::text, pg_typeof(%s)::text, pg_typeof(%s)::text, "
                "pg_typeof(%s)::text, pg_typeof(%s)::text",
                (Int8Array([1]), Int2Array([1]), Float8Array([1.0]), ByteaArray([b"x"]),
                 VarcharArray(["x"])))
    assert cur.fetchone() == ("bigint[]", "smallint[]", "double precision[]", "bytea[]",
                              "character varying[]")

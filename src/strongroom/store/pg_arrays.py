"""PostgreSQL array parameters that psycopg sends without inspecting each element.

psycopg adapts a plain ``list`` by scanning its elements to pick the array's type,
then dumps each element through its own dumper, in Python. The release path sends
its audit batch as one statement per batch (entries, Merkle nodes and egress ledger
rows as arrays, unnested into their tables): adapting those lists took ~12% of the
key agent's release thread on PostgreSQL, and psycopg's glue as a whole ~46%
(py-spy, 2026-12-04; docs/operations.md). A list wrapped here says its element type
and is written as one array literal, PostgreSQL's text input for arrays, in one pass:

    register_dumpers()    # once, before the first PostgreSQL connection (Store.open)
    cur.execute("SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                (Int8Array(ids), ByteaArray(bodies)))

The literal: integers in decimal, floats as Python's shortest repr that reads back
as the same double, bytea elements in hex (``\\x..``), text elements double-quoted
with ``\\`` and ``"`` escaped, ``None`` as ``NULL``. Text holding a NUL character is
refused (:class:`psycopg.DataError`), as psycopg refuses it in a plain list. Without
:func:`register_dumpers` (or on SQLite) the wrappers are plain lists and go the usual
way. Property tests round-trip them through a real server
(tests/store/test_pg_arrays.py).
"""

from __future__ import annotations

import math
import threading
from typing import Any

__all__ = ["ByteaArray", "Float8Array", "Int2Array", "Int8Array", "VarcharArray",
           "register_dumpers"]


class Int8Array(list[int]):
    """A ``bigint[]`` parameter."""

    __slots__ = ()


class Int2Array(list[int]):
    """A ``smallint[]`` parameter."""

    __slots__ = ()


class Float8Array(list[float]):
    """A ``double precision[]`` parameter (finite values; whole ``int`` seconds too)."""

    __slots__ = ()


class ByteaArray(list[bytes]):
    """A ``bytea[]`` parameter."""

    __slots__ = ()


class VarcharArray(list[str | None]):
    """A ``varchar[]`` parameter (``None``: NULL)."""

    __slots__ = ()


#: Array type oids (pg_type.typarray of int8, int2, float8, bytea, varchar).
_OIDS = {Int8Array: 1016, Int2Array: 1005, Float8Array: 1022, ByteaArray: 1001,
         VarcharArray: 1015}

_lock = threading.Lock()
_registered = False


def _ints(obj: list[int]) -> bytes:
    for v in obj:
        if type(v) is not int:  # bool is an int subclass, and not a number here
            raise TypeError(f"an integer array holds {type(v).__name__}")
    return ("{" + ",".join(map(str, obj)) + "}").encode()


def _floats(obj: list[float]) -> bytes:
    out = []
    for v in obj:
        kind = type(v)
        if kind is int:  # a clock may give whole seconds; exact below 2**53, as psycopg's
            v = float(v)
        elif kind is not float:
            raise TypeError(f"a float array holds {kind.__name__}")
        if not math.isfinite(v):
            raise TypeError("a float array holds a value that is not finite")
        out.append(repr(v))
    return ("{" + ",".join(out) + "}").encode()


def _byteas(obj: list[bytes]) -> bytes:
    return ("{" + ",".join([f'"\\\\x{bytes(v).hex()}"' for v in obj]) + "}").encode()


def _texts(obj: list[str | None], encoding: str) -> bytes:
    parts = []
    for v in obj:
        if v is None:
            parts.append("NULL")
            continue
        if type(v) is not str:
            raise TypeError(f"a text array holds {type(v).__name__}")
        if "\x00" in v:
            import psycopg

            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ("{" + ",".join(parts) + "}").encode(encoding)


def register_dumpers() -> None:
    """Teach psycopg (its global adapters) to send the wrappers as array literals.

    Idempotent. Connections opened afterwards use them: call it before the first
    connection to PostgreSQL (``Store.open`` does).
    """
    global _registered
    with _lock:
        if _registered:
            return
        import psycopg
        from psycopg.adapt import Dumper

        class _Ints(Dumper):
            def dump(self, obj: Any) -> bytes:
                return _ints(obj)

        class _Floats(Dumper):
            oid = _OIDS[Float8Array]

            def dump(self, obj: Any) -> bytes:
                return _floats(obj)

        class _Byteas(Dumper):
            oid = _OIDS[ByteaArray]

            def dump(self, obj: Any) -> bytes:
                return _byteas(obj)

        class _Texts(Dumper):
            oid = _OIDS[VarcharArray]

            def __init__(self, cls: type, context: Any = None) -> None:
                super().__init__(cls, context)
                conn = self.connection
                self._encoding = conn.info.encoding if conn is not None else "utf-8"

            def dump(self, obj: Any) -> bytes:
                return _texts(obj, self._encoding)

        class _Int8s(_Ints):
            oid = _OIDS[Int8Array]

        class _Int2s(_Ints):
            oid = _OIDS[Int2Array]

        adapters = psycopg.adapters
        adapters.register_dumper(Int8Array, _Int8s)
        adapters.register_dumper(Int2Array, _Int2s)
        adapters.register_dumper(Float8Array, _Floats)
        adapters.register_dumper(ByteaArray, _Byteas)
        adapters.register_dumper(VarcharArray, _Texts)
        _registered = True

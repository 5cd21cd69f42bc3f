"""What a JSON request body must be before any route reads it: one decoder for the whole API.

:func:`decode_json` turns a body into a JSON value or raises
:class:`~strongroom.server.errors.BodyUndecodable` (400, the usual error
body). The signing middleware calls it for every buffered ``/v1/`` body once
the signature is verified, so no route, FastAPI's own body parser included,
ever sees a body that is not:

* UTF-8 (RFC 8259 section 8.1: no other encoding, no byte-order mark, no
  lone surrogate, raw or escaped);
* one JSON text (nothing truncated, nothing trailing);
* nested at most :data:`MAX_DEPTH` deep;
* free of NUL characters in its strings (no field of the API holds one, and
  PostgreSQL's text type refuses them);
* numbers that fit: integers within 64 bits, floats finite (``1e999`` is
  infinity, which JSON cannot carry back in an error body).

A message names the position of the fault, never the body's content.
"""

from __future__ import annotations

import math

import pydantic_core

from strongroom.server.errors import BodyUndecodable

__all__ = ["MAX_DEPTH", "decode_json"]

#: Deepest nesting of arrays and objects a body may have.
MAX_DEPTH = 32
#: Integers outside [-2**63, 2**63) are refused (no field counts that far).
_INT_BOUND = 1 << 63
#: The types a JSON value is made of, bool before int (a subclass of it).
_JSON_TYPES = (str, bool, int, float, dict, list)
_REMEDY = "send one UTF-8 JSON document (RFC 8259), as the strongroom client does"


def _refused(why: str) -> BodyUndecodable:
    return BodyUndecodable(f"the request body is not acceptable JSON: {why}",
                           obj="request body", remedy=_REMEDY)


def decode_json(body: bytes) -> object:
    """The JSON value of ``body`` (None when empty), or BodyUndecodable."""
    if not body:
        return None
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:  # jiter: invalid UTF-8, syntax, depth > 200, lone surrogates
        raise _refused(str(exc)[:200]) from None
    _check(value)
    return value


def _check(value: object) -> None:
    """Depth, NUL in strings, integer range and finite floats, without recursion."""
    # The parser makes exact builtin types only, so type() is compared first; a
    # subclass (not from the parser) is judged as its JSON type, as by isinstance().
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind: type | None = type(item)
        if kind not in _JSON_TYPES:
            kind = next((t for t in _JSON_TYPES if isinstance(item, t)), None)
        if kind is str:
            if "\x00" in item:  # type: ignore[operator]
                raise _refused("a string holds a NUL character")
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise _refused(f"arrays and objects nest deeper than {MAX_DEPTH}")
            if kind is dict:
                for k, v in item.items():  # type: ignore[attr-defined]
                    if type(k) is str and type(v) is str:  # the common case, checked here
                        if "\x00" in k or "\x00" in v:
                            raise _refused("a string holds a NUL character")
                    else:
                        stack.append((k, depth))
                        stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)  # type: ignore[attr-defined]
        elif kind is int:
            if not -_INT_BOUND <= item < _INT_BOUND:  # type: ignore[operator]
                raise _refused("an integer does not fit in 64 bits")
        elif kind is float and not math.isfinite(item):  # type: ignore[arg-type]
            raise _refused("a number is out of range (not a finite double)")
        # bool and None (and anything else) need no check

"""An audit entry's details: every value is checked and every secret redacted, at any depth.

The encoder's type check and the redactor take exact-type shortcuts for the
plain values most entries carry; these tests pin that nothing else slips
through them: a float, a non-string key or an unknown type anywhere is refused
naming where it is, and a secret is stored only as its HMAC however deep.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from strongroom.audit.entry import EntryEncoder, canonical_json, format_time, utcnow
from strongroom.audit.redaction import SECRET_FIELDS, Redactor, Secret
from strongroom.errors import InvalidInput

SALT = bytes(range(16))


def _encode(details: dict[str, Any]) -> bytes:
    enc = EntryEncoder(Redactor(SALT), lambda: datetime(2026, 12, 2, tzinfo=UTC))
    head, tail = enc.encode(
        "alice", "key.release", "m@1", "allow", "load", None, details, None, None
    )
    return head + b"7" + tail


class _Level(enum.IntEnum):
    SECRET = 3


@pytest.mark.parametrize(
    ("details", "where"),
    [
        ({"x": 1.5}, "details.x"),
        ({"a": {"b": {"c": 0.1}}}, "details.a.b.c"),
        ({"a": [1, {"b": 2.0}]}, "details.a[1].b"),
        ({"a": (1, 2, float("nan"))}, "details.a[2]"),
        ({"n": 1, "a": ["x", 2.5]}, "details.a[1]"),
    ],
)
def test_a_float_anywhere_is_refused_naming_where(details: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"{where}: floats are not allowed")):
        _encode(details)


@pytest.mark.parametrize("details", [{"a": {1: "x"}}, {"a": [{"b": {None: 1}}]}])
def test_a_non_string_key_is_refused(details: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="keys must be strings"):
        _encode(details)


@pytest.mark.parametrize("value", [b"bytes", object(), {1, 2}, bytearray(b"k")])
def test_an_unknown_type_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="cannot go into an audit entry"):
        _encode({"a": {"b": value}})


def test_subclasses_of_plain_types_still_pass() -> None:
    body = _encode({"level": _Level.SECRET, "flag": True, "none": None})
    assert b'"level":3' in body and b'"flag":true' in body


def test_secrets_are_redacted_at_every_depth() -> None:
    red = Redactor(SALT)
    body = _encode(
        {
            "token": "s3cr3t",
            "Password": "pw",
            "n": 1,
            "outer": {"api_key": "k1", "list": [Secret("deep")], "share": ["a", "b"]},
            "note": Secret("hunter2"),
            "plain": "visible",
        }
    )
    for secret in (b"s3cr3t", b'pw"', b"k1", b"deep", b"hunter2", b'"a"', b'"b"'):
        assert secret not in body
    assert b'"plain":"visible"' in body
    assert red.hmac("s3cr3t").encode() in body and red.hmac("hunter2").encode() in body
    assert red.hmac("a").encode() in body  # a list under a secret key: each item


def test_canonical_json_checks_unless_told_otherwise() -> None:
    with pytest.raises(InvalidInput, match=re.escape("entry.details.x: floats")):
        canonical_json({"details": {"x": 2.5}})


class _Name(str):
    """A str subclass: takes the encoder's general path."""


_AWKWARD = ["plain", 'q"uote\\back/slash', "tab\tnew\nline\x00\x1f\x7f", "émigré Ωμέγα 漢字 🙂",
            "\u2028\u2029", ""]


@pytest.mark.parametrize("text", _AWKWARD)
@pytest.mark.parametrize(("shard", "nbytes", "request_id"),
                         [(None, None, None), ("model-00001", 0, "r-1"),
                          ("s", 2**63 + 5, None), (None, True, "r")])
def test_encoding_is_the_canonical_json_of_the_record(text: str, shard: str | None,
                                                      nbytes: int | None,
                                                      request_id: str | None) -> None:
    """Each field written in sorted order is byte for byte what sorting the record gives."""
    when = datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=UTC)
    redactor = Redactor(SALT)
    enc = EntryEncoder(redactor, lambda: when)
    nested = {"z": text, "a": {"nested": [1, text, None]}, "token": Secret("s3cret"), text: 1}
    flat = {"z": text, "n": -(2**70), "t": True, "f": False, "none": None, "password": text,
            text + "k": 0}
    reason = text
    plain = {k: v for k, v in flat.items() if k != "password"}  # nothing to redact
    plain["approvers"] = ["alice", text, 3, None, True]
    for actor, details in (("alice" + text, nested), (_Name("alice"), flat), ("bob", {}),
                           ("carol", flat), ("dave", plain)):
        head, tail = enc.encode(actor, "key." + text, "m@1" + text, "allow", reason,
                                request_id, details, shard, nbytes)
        record: dict[str, Any] = {
            "index": 41, "time": "2026-12-02T01:02:03.456789Z", "actor": actor,
            "action": "key." + text, "object": "m@1" + text, "decision": "allow",
            "reason": reason, "request_id": request_id,
            "details": redactor.redact(details) if details else {}}
        if shard is not None:
            record["shard"] = shard
        if nbytes is not None:
            record["bytes"] = int(nbytes)
        assert head + b"41" + tail == canonical_json(record)


@pytest.mark.parametrize("key", sorted(SECRET_FIELDS))
def test_a_secret_key_in_flat_details_is_redacted(key: str) -> None:
    """Flat details of plain scalars skip the redacted copy, never a secret under its key."""
    for name in (key, key.upper()):
        body = _encode({"a": 1, "b": "visible", name: "s3cr3t-value", "z": None})
        assert b"s3cr3t-value" not in body
        listed = _encode({"a": ["x"], "b": "visible", name: ["s3cr3t-value", "x"]})
        assert b"s3cr3t-value" not in listed
        assert Redactor(SALT).hmac("s3cr3t-value").encode() in listed
        assert Redactor(SALT).hmac("s3cr3t-value").encode() in body
        assert b'"b":"visible"' in body


def test_the_default_clock_writes_the_time_as_format_time_does() -> None:
    """The default clock's text (made once a second) has format_time's form and is now."""
    enc = EntryEncoder(Redactor(SALT), utcnow)
    before = datetime.now(UTC).replace(microsecond=0)
    head, tail = enc.encode("alice", "key.release", "m@1", "allow", "", None, None, None, None)
    after = datetime.now(UTC)
    when = json.loads(head + b"0" + tail)["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", when)
    assert before <= datetime.fromisoformat(when[:-1] + "+00:00") <= after
    assert len(when) == len(format_time(after))

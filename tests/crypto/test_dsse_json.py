"""crypto/dsse.py ``loads``: json.loads' answer for every input, through the scanner when it can."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto.dsse import key_id, loads, sign_statement, verify_statement
from strongroom.errors import IntegrityError

AWKWARD: list[str | bytes | bytearray] = [
    '{"a":1}', ' {"a":1}', '{"a":1} ', '{"a":1}\n', '{"a":1}x', '{"a":1}{}', '\ufeff{"a":1}', '',
    '[', '"x"', '1', 'nan', 'NaN', '{"a":NaN}', '{"a":"\\ud800"}', '{"a":"\u00e9\\n"}',
    b'{"a":1}', b'\xef\xbb\xbf{"a":1}', '{"a":1}'.encode("utf-16"),
    '{"a":1}'.encode("utf-16-le"), '{"a":1}'.encode("utf-32-be"), b'\xed\xa0\x80',
    b'"\xed\xa0\x80"', b'\xff', b'1\x00', b'\x00', bytearray(b'{"a":[1,2]}'),
]


def outcome(data: Any) -> tuple[str, str]:
    try:
        return "value", repr(json.loads(data))
    except ValueError as exc:
        return "refused", type(exc).__name__


def ours(data: Any) -> tuple[str, str]:
    try:
        return "value", repr(loads(data))
    except ValueError as exc:
        return "refused", type(exc).__name__


@pytest.mark.parametrize("data", AWKWARD, ids=repr)
def test_loads_answers_as_json_loads(data: str | bytes) -> None:
    assert ours(data) == outcome(data)


def test_loads_answers_as_json_loads_on_random_text() -> None:
    rnd = random.Random(24)
    alphabet = '{}[]":,0123456789 \t\nabcnulltruefalse-.eE\\uNaIfiy\ufeff\x00'
    for _ in range(20000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        for data in (text, text.encode()):
            assert ours(data) == outcome(data), repr(data)


def test_envelope_refusals_are_unchanged() -> None:
    key = Ed25519PrivateKey.generate()
    trusted = {key_id(key.public_key()): key.public_key()}
    env = sign_statement({"n": 1}, "t", key)
    assert verify_statement(env, "t", trusted) == {"n": 1}
    assert verify_statement(f" {env}\n", "t", trusted) == {"n": 1}  # as json.loads took it
    for bad in (env + "x", env[:-1], "", "[]", '{"payloadType":"t"}'):
        with pytest.raises(IntegrityError, match="malformed signed envelope"):
            verify_statement(bad, "t", trusted, obj="the thing")

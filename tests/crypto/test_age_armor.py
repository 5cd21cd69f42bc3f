"""ASCII armor: what armor() writes dearmor() reads back, and the age tool's shape."""

from __future__ import annotations

import io

import pytest

from strongroom.crypto import age, age_armor
from strongroom.errors import ArmorError


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 1000])
def test_round_trip(size: int) -> None:
    data = bytes(range(256)) * 4
    text = age_armor.armor(data[:size])
    lines = text.split(b"\n")
    assert lines[0] == age_armor.BEGIN and lines[-2] == age_armor.END and lines[-1] == b""
    assert all(len(line) <= 64 for line in lines)
    assert age_armor.is_armored(b"\n  " + text[:40])
    assert age_armor.dearmor(text) == data[:size]
    assert age_armor.dearmor(text.replace(b"\n", b"\r\n")) == data[:size]


@pytest.mark.parametrize("pieces", [[0], [1, 47, 48], [48, 48, 5], [1000, 3]])
def test_writer_writes_what_armor_writes(pieces: list[int]) -> None:
    data = bytes(range(256)) * 5
    out = io.BytesIO()
    with age_armor.ArmoredWriter(out) as writer:
        pos = 0
        for size in pieces:
            writer.write(data[pos : pos + size])
            pos += size
    assert out.getvalue() == age_armor.armor(data[:pos])


def test_armored_age_file_decrypts() -> None:
    identity = age.X25519Identity.generate()
    text = age_armor.armor(age.encrypt(b"hello", [identity.recipient]))
    assert age.decrypt(age_armor.dearmor(text), [identity]) == b"hello"


@pytest.mark.parametrize("mangle", [
    lambda t: b" " * 2000 + t,
    lambda t: t + b"\n" * 2000,
    lambda t: t.replace(b"-----\n", b"-----\nComment: x\n", 1),
    lambda t: t[:-40],
])
def test_garbage_is_an_armor_error(mangle: object) -> None:
    text = age_armor.armor(bytes(200))
    assert callable(mangle)
    with pytest.raises(ArmorError):
        age_armor.dearmor(mangle(text))

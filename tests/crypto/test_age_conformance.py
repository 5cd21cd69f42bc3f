"""The C2SP CCTV age test vectors, one test per vector, none skipped.

Each vector is decrypted with ``decrypt_stream`` into a buffer (armored ones
first through ``age_armor.dearmor``); the outcome must be the vector's
``expect`` and the plaintext written before any failure must hash to its
``payload``. Every vector runs with every key it gives: X25519 and hybrid
(ML-KEM-768 + X25519) identities and scrypt passphrases.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom.crypto import age, age_armor, age_scrypt
from strongroom.errors import (
    ArmorError,
    HeaderError,
    HmacError,
    NoIdentityMatched,
    PayloadError,
    StrongroomError,
)

from testsupport import CONFORMANCE

VECTORS = CONFORMANCE / "age"

OUTCOMES: dict[str, type[StrongroomError] | None] = {
    "success": None,
    "no match": NoIdentityMatched,
    "HMAC failure": HmacError,
    "header failure": HeaderError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
}

@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None = None
    file_key: str | None = None
    identities: list[str] = field(default_factory=list)
    passphrase: str | None = None
    armored: bool = False
    data: bytes = b""

    @classmethod
    def load(cls, path: Path) -> Vector:
        raw = path.read_bytes()
        head, sep, body = raw.partition(b"\n\n")
        assert sep, f"{path.name}: no blank line after the vector header"
        v = cls(name=path.name, expect="")
        compressed = False
        for line in head.decode("utf-8").splitlines():
            key, _, value = line.partition(": ")
            if key == "expect":
                v.expect = value
            elif key == "payload":
                v.payload = value
            elif key == "file key":
                v.file_key = value
            elif key == "identity":
                v.identities.append(value)
            elif key == "passphrase":
                v.passphrase = value
            elif key == "armored":
                v.armored = value == "yes"
            elif key == "compressed":
                assert value == "zlib", f"{path.name}: unknown compression {value}"
                compressed = True
        v.data = zlib.decompress(body) if compressed else body
        return v

    def keys(self) -> list[age.AgeIdentity]:
        keys = [age.parse_identity(i) for i in self.identities]
        if self.passphrase is not None:
            keys.append(age_scrypt.ScryptIdentity(self.passphrase))
        return keys

    def age_file(self) -> bytes:
        """The age file itself: armored vectors are dearmored (which may raise ArmorError)."""
        return age_armor.dearmor(self.data) if self.armored else self.data


def _names() -> list[str]:
    return sorted(p.name for p in VECTORS.iterdir()) if VECTORS.is_dir() else []


@pytest.fixture
def vectors_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "age"


def test_vectors_present(vectors_dir: Path) -> None:
    assert len(list(vectors_dir.iterdir())) == 143


def test_every_kind_of_key_is_exercised(vectors_dir: Path) -> None:
    """The vectors cover what they claim: hybrid keys, passphrases and armor all run."""
    loaded = [Vector.load(p) for p in vectors_dir.iterdir()]
    assert sum(any(i.startswith("AGE-SECRET-KEY-PQ-1") for i in v.identities) for v in loaded) >= 16
    assert sum(v.passphrase is not None for v in loaded) >= 25
    assert sum(v.armored for v in loaded) >= 30


def _run(v: Vector, out: io.BytesIO) -> None:
    age.decrypt_stream(io.BytesIO(v.age_file()), out, v.keys())


@pytest.mark.parametrize("name", _names())
def test_vector(vectors_dir: Path, name: str) -> None:
    v = Vector.load(vectors_dir / name)
    assert v.expect in OUTCOMES, f"unexpected expectation {v.expect!r}"
    expected = OUTCOMES[v.expect]

    out = io.BytesIO()
    if expected is None:
        _run(v, out)
    else:
        with pytest.raises(expected) as info:
            _run(v, out)
        # Only the exact class: a HeaderError must not pass for a PayloadError, etc.
        assert type(info.value) is expected
    if v.payload is not None:
        assert hashlib.sha256(out.getvalue()).hexdigest() == v.payload


@pytest.mark.parametrize("name", _names())
def test_vector_from_a_file(vectors_dir: Path, name: str, tmp_path: Path) -> None:
    """The same verdict and plaintext when the age file is a regular file on disk.

    ``decrypt_stream`` reads a regular file by offsets in its workers (not through
    the stream), so the vectors run on that path too.
    """
    v = Vector.load(vectors_dir / name)
    expected = OUTCOMES[v.expect]
    try:
        data = v.age_file()
    except ArmorError:  # refused while dearmoring, before any file is read
        assert expected is ArmorError
        return
    (tmp_path / "f.age").write_bytes(data)
    out = io.BytesIO()
    with (tmp_path / "f.age").open("rb") as src:
        if expected is None:
            age.decrypt_stream(src, out, v.keys())
        else:
            with pytest.raises(expected) as info:
                age.decrypt_stream(src, out, v.keys())
            assert type(info.value) is expected
    if v.payload is not None:
        assert hashlib.sha256(out.getvalue()).hexdigest() == v.payload


@pytest.mark.parametrize("name", _names())
def test_vector_random_access(vectors_dir: Path, name: str) -> None:
    """AgeReader reaches the same verdict; on success its plaintext matches too."""
    v = Vector.load(vectors_dir / name)
    expected = OUTCOMES[v.expect]
    if expected is None:
        plaintext = age.decrypt(v.age_file(), v.keys())
        assert v.payload is not None
        assert hashlib.sha256(plaintext).hexdigest() == v.payload
        if v.file_key is not None:
            reader = age.AgeReader.with_file_key(v.age_file(), bytes.fromhex(v.file_key))
            assert reader.read(0, reader.plaintext_size) == plaintext
    else:
        with pytest.raises(expected):
            age.decrypt(v.age_file(), v.keys())

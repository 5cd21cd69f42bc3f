"""The C2SP CCTV age test vectors, one test per vector.

Each vector is decrypted with ``decrypt_stream`` into a buffer; the outcome must
be the vector's ``expect`` and the plaintext written before any failure must
hash to its ``payload``. Vectors for features strongroom does not implement
(scrypt passphrases, ASCII armor, ML-KEM hybrid keys) are skipped by an explicit
rule, and the test below checks the rule skips exactly the named set.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom.crypto import age
from strongroom.errors import (
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
}

# fmt: off
EXPECTED_SKIPPED = {
    *(f"armor_{n}" for n in (
        "crlf", "empty", "empty_last_line", "empty_line_begin", "empty_line_end",
        "eol_between_padding", "full_last_line", "garbage_encoded", "garbage_leading",
        "garbage_trailing", "header_crlf", "headers", "hybrid", "invalid_character_header",
        "invalid_character_payload", "long_line", "lowercase", "no_end_line", "no_eol",
        "no_match", "no_padding", "not_canonical", "pgp_checksum", "scrypt", "short_line",
        "whitespace_begin", "whitespace_end", "whitespace_eol", "whitespace_last_line",
        "whitespace_line_start", "whitespace_outside", "wrong_type", "x25519",
    )),
    "hybrid", *(f"hybrid_{n}" for n in (
        "and_x25519", "bad_tag", "currupted_enc_mlkem", "currupted_enc_x25519",
        "extra_argument", "grease", "identity", "long_file_key", "long_share", "low_order",
        "multiple_recipients", "no_match", "not_canonical_body", "not_canonical_enc",
        "short_share", "uppercase",
    )),
    "scrypt", *(f"scrypt_{n}" for n in (
        "bad_tag", "double", "extra_argument", "long_file_key", "no_match",
        "not_canonical_body", "not_canonical_salt", "salt_long", "salt_missing", "salt_short",
        "uppercase", "work_factor_23", "work_factor_hex", "work_factor_leading_garbage",
        "work_factor_leading_plus", "work_factor_leading_zero_decimal",
        "work_factor_leading_zero_octal", "work_factor_missing", "work_factor_negative",
        "work_factor_overflow", "work_factor_trailing_garbage", "work_factor_wrong",
        "work_factor_zero",
    )),
}
# fmt: on


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None = None
    file_key: str | None = None
    identities: list[str] = field(default_factory=list)
    passphrase: bool = False
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
                v.passphrase = True
            elif key == "armored":
                v.armored = value == "yes"
            elif key == "compressed":
                assert value == "zlib", f"{path.name}: unknown compression {value}"
                compressed = True
        v.data = zlib.decompress(body) if compressed else body
        return v

    def x25519_identities(self) -> list[age.AgeIdentity]:
        return [
            age.X25519Identity.parse(i) for i in self.identities if i.startswith("AGE-SECRET-KEY-1")
        ]

    def unsupported(self) -> str | None:
        return next((why for why, rule in UNSUPPORTED_RULES.items() if rule(self)), None)


# Unsupported features. A vector runs unless it is armored or its only keys are
# passphrases (scrypt) or AGE-SECRET-KEY-PQ- (ML-KEM hybrid) identities; where a
# vector also gives an X25519 identity, it runs with that identity alone.
UNSUPPORTED_RULES: dict[str, Callable[[Vector], bool]] = {
    "armored: yes (ASCII armor)": lambda v: v.armored,
    "only a passphrase or an AGE-SECRET-KEY-PQ- identity": lambda v: (
        (v.passphrase or any(i.startswith("AGE-SECRET-KEY-PQ-") for i in v.identities))
        and not v.x25519_identities()
    ),
}


def _names() -> list[str]:
    return sorted(p.name for p in VECTORS.iterdir()) if VECTORS.is_dir() else []


@pytest.fixture
def vectors_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "age"


def test_vectors_present(vectors_dir: Path) -> None:
    assert len(list(vectors_dir.iterdir())) == 143


def test_skip_rule_names_exactly_the_unsupported_vectors(vectors_dir: Path) -> None:
    skipped = {p.name for p in vectors_dir.iterdir() if Vector.load(p).unsupported()}
    assert skipped == EXPECTED_SKIPPED


@pytest.mark.parametrize("name", _names())
def test_vector(vectors_dir: Path, name: str) -> None:
    v = Vector.load(vectors_dir / name)
    why = v.unsupported()
    if why is not None:
        assert name in EXPECTED_SKIPPED
        pytest.skip(f"unsupported feature: {why}")
    assert v.expect in OUTCOMES, f"unexpected expectation {v.expect!r}"
    expected = OUTCOMES[v.expect]

    out = io.BytesIO()
    identities = v.x25519_identities()
    if expected is None:
        age.decrypt_stream(io.BytesIO(v.data), out, identities)
    else:
        with pytest.raises(expected) as info:
            age.decrypt_stream(io.BytesIO(v.data), out, identities)
        # Only the exact class: a HeaderError must not pass for a PayloadError, etc.
        assert type(info.value) is expected
    if v.payload is not None:
        assert hashlib.sha256(out.getvalue()).hexdigest() == v.payload


@pytest.mark.parametrize("name", _names())
def test_vector_random_access(vectors_dir: Path, name: str) -> None:
    """AgeReader reaches the same verdict; on success its plaintext matches too."""
    v = Vector.load(vectors_dir / name)
    if v.unsupported() is not None:
        pytest.skip("unsupported feature")
    expected = OUTCOMES[v.expect]
    identities = v.x25519_identities()
    if expected is None:
        plaintext = age.decrypt(v.data, identities)
        assert v.payload is not None
        assert hashlib.sha256(plaintext).hexdigest() == v.payload
        if v.file_key is not None:
            reader = age.AgeReader.with_file_key(v.data, bytes.fromhex(v.file_key))
            assert reader.read(0, reader.plaintext_size) == plaintext
    else:
        with pytest.raises(expected):
            age.decrypt(v.data, identities)

"""Interoperability with the reference ``age`` and ``age-keygen`` tools, both ways."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from strongroom.crypto import age
from strongroom.crypto.age import CHUNK_SIZE

from testsupport import need_tool

pytestmark = pytest.mark.agecli

SIZES = [0, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024 + 12345]


@pytest.fixture(scope="module")
def age_bin() -> str:
    return need_tool("age")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, age.X25519Identity]:
    identity = age.X25519Identity.generate()
    path = tmp_path_factory.mktemp("keys") / "key.txt"
    path.write_text(f"# public key: {identity.recipient}\n{identity}\n")
    return path, identity


@pytest.mark.parametrize("size", SIZES)
def test_age_decrypts_ours(
    size: int, age_bin: str, key_file: tuple[Path, age.X25519Identity], tmp_path: Path
) -> None:
    path, identity = key_file
    plain = os.urandom(size)
    enc = tmp_path / "ours.age"
    with enc.open("wb") as dst:
        age.encrypt_stream(io.BytesIO(plain), dst, [identity.recipient])
    # `age -d -o FILE` creates no file for an empty plaintext: read stdout instead.
    out = subprocess.run(
        [age_bin, "-d", "-i", str(path), str(enc)], capture_output=True, check=True
    ).stdout
    assert out == plain
    # The whole-buffer writer too.
    enc.write_bytes(age.encrypt(plain, [identity.recipient], threads=2))
    out = subprocess.run(
        [age_bin, "-d", "-i", str(path), str(enc)], capture_output=True, check=True
    ).stdout
    assert out == plain


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_age(
    size: int, age_bin: str, key_file: tuple[Path, age.X25519Identity], tmp_path: Path
) -> None:
    _, identity = key_file
    plain = os.urandom(size)
    src = tmp_path / "plain"
    src.write_bytes(plain)
    enc = tmp_path / "theirs.age"
    subprocess.run([age_bin, "-r", str(identity.recipient), "-o", str(enc), str(src)], check=True)
    dst = io.BytesIO()
    with enc.open("rb") as f:
        assert age.decrypt_stream(f, dst, [identity]) == size
    assert dst.getvalue() == plain
    reader = age.AgeReader.open(enc.read_bytes(), [identity])
    assert reader.plaintext_size == size
    assert reader.read(size // 3, size // 2) == plain[size // 3 : size // 2]


def test_keygen_keys_interoperate(age_bin: str, tmp_path: Path) -> None:
    keygen = need_tool("age-keygen")
    key_path = tmp_path / "theirs.txt"
    subprocess.run([keygen, "-o", str(key_path)], check=True, capture_output=True)
    text = key_path.read_text()
    [identity] = age.parse_identities(text)
    public = next(
        line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("# public key:")
    )
    assert isinstance(identity, age.X25519Identity)
    assert str(identity.recipient) == public
    # their public key as our recipient, their tool decrypts
    blob = tmp_path / "x.age"
    blob.write_bytes(age.encrypt(b"to their key", [age.parse_recipient(public)]))
    out = subprocess.run(
        [age_bin, "-d", "-i", str(key_path), str(blob)], capture_output=True, check=True
    ).stdout
    assert out == b"to their key"
    # their tool derives our public key from our secret key
    ours = age.X25519Identity.generate()
    our_key = tmp_path / "ours.txt"
    our_key.write_text(f"{ours}\n")
    derived = subprocess.run(
        [keygen, "-y", str(our_key)], capture_output=True, check=True, text=True
    ).stdout.strip()
    assert derived == str(ours.recipient)


def test_age_rejects_tampered_file_of_ours(
    age_bin: str, key_file: tuple[Path, age.X25519Identity], tmp_path: Path
) -> None:
    path, identity = key_file
    blob = bytearray(age.encrypt(os.urandom(CHUNK_SIZE * 2), [identity.recipient]))
    blob[-20] ^= 1
    enc = tmp_path / "bad.age"
    enc.write_bytes(bytes(blob))
    result = subprocess.run([age_bin, "-d", "-i", str(path), str(enc)], capture_output=True)
    assert result.returncode != 0

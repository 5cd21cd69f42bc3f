"""The AES-256-GCM payload mode and ranged ``decrypt_into``, on both payload ciphers.

* the mode's checked-in test vectors (tests/crypto/vectors/aes-256-gcm, written by
  scripts/aes_gcm_vectors.py) are what the script writes today, and each one
  decrypts (or fails) as its ``expect`` line says, releasing what ``payload`` hashes;
* Wycheproof's AES-GCM vectors for the primitive at the mode's parameters
  (256-bit key, 96-bit nonce, 128-bit tag), from ``shared/conformance/wycheproof``
  (or ``STRONGROOM_TEST_WYCHEPROOF_AES_GCM``), skipped with a message where absent;
* the ``age`` tool refuses an AES-256-GCM file at its first line;
* ``AgeReader.decrypt_into(buffer, offset)`` equals the plaintext slice for any
  range, thread count and cipher, and leaves no plaintext in its edge buffer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.crypto import age, stream
from strongroom.errors import (
    HeaderError,
    HmacError,
    InvalidInput,
    PayloadError,
    StrongroomError,
)

from testsupport import CONFORMANCE, REPO_ROOT

VECTORS = Path(__file__).parent / "vectors" / "aes-256-gcm"
CHUNK = age.CHUNK_SIZE
IDENTITY = age.X25519Identity.generate()
OUTCOMES: dict[str, type[StrongroomError] | None] = {
    "success": None,
    "HMAC failure": HmacError,
    "header failure": HeaderError,
    "payload failure": PayloadError,
}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aes_gcm_vectors",
                                                  REPO_ROOT / "scripts" / "aes_gcm_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain(size: int) -> bytes:
    return bytes((i * 31 + i // CHUNK) % 256 for i in range(size))


# -- the mode's own vectors ---------------------------------------------------------


def test_checked_in_vectors_are_what_the_script_writes() -> None:
    fresh = _script().vectors()
    stored = {p.name: p.read_bytes() for p in VECTORS.iterdir()}
    assert stored == fresh
    assert {k.split("_")[0] for k in fresh} >= {"success", "payload", "hmac", "header"}


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.iterdir()))
def test_vector(name: str) -> None:
    head, _, data = (VECTORS / name).read_bytes().partition(b"\n\n")
    meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
    identity = age.X25519Identity.parse(meta["identity"])
    expected = OUTCOMES[meta["expect"]]
    out = io.BytesIO()
    if expected is None:
        age.decrypt_stream(io.BytesIO(data), out, [identity])
        reader = age.AgeReader.open(data, [identity])
        assert reader.cipher == age.AES_256_GCM
        whole = bytearray(reader.plaintext_size)
        reader.decrypt_into(whole)
        assert bytes(whole) == out.getvalue()
    else:
        with pytest.raises(expected):
            age.decrypt_stream(io.BytesIO(data), out, [identity])
        with pytest.raises(expected):
            age.decrypt(data, [identity])
    assert hashlib.sha256(out.getvalue()).hexdigest() == meta["payload"]


def test_the_age_tool_refuses_the_mode_at_its_first_line(tmp_path: Path) -> None:
    tool, keygen = shutil.which("age"), shutil.which("age-keygen")
    if not tool or not keygen:
        pytest.skip("the age tool is not installed (Debian package age)")
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    identity = age.parse_identities(key.read_text())[0]
    assert isinstance(identity, age.X25519Identity)
    blob = tmp_path / "f"
    blob.write_bytes(age.encrypt(b"weights", [identity.recipient], cipher=age.AES_256_GCM))
    done = subprocess.run([tool, "-d", "-i", str(key), str(blob)], capture_output=True)
    assert done.returncode != 0 and done.stdout == b""
    assert b"header" in done.stderr or b"intro" in done.stderr, done.stderr
    assert age.decrypt(blob.read_bytes(), [identity]) == b"weights"


# -- Wycheproof, for the primitive ------------------------------------------------------


def _wycheproof() -> Path:
    given_path = os.environ.get("STRONGROOM_TEST_WYCHEPROOF_AES_GCM")
    path = Path(given_path) if given_path else CONFORMANCE / "wycheproof" / "aes_gcm_test.json"
    if not path.is_file():
        pytest.skip(f"Wycheproof's aes_gcm_test.json is not at {path} (C2SP/wycheproof, "
                    "testvectors_v1/; set STRONGROOM_TEST_WYCHEPROOF_AES_GCM to its path)")
    return path


def test_wycheproof_aes_256_gcm_with_the_modes_parameters() -> None:
    data = json.loads(_wycheproof().read_text())
    aead = stream._AEADS[age.AES_256_GCM]
    groups = [g for g in data["testGroups"]
              if (g["keySize"], g["ivSize"], g["tagSize"]) == (256, 96, 128)]
    assert groups, "no AES-256 group with 96-bit nonces and 128-bit tags"
    ran = 0
    for group in groups:
        for case in group["tests"]:
            key, nonce = bytes.fromhex(case["key"]), bytes.fromhex(case["iv"])
            aad = bytes.fromhex(case["aad"]) or None
            msg, sealed = bytes.fromhex(case["msg"]), bytes.fromhex(case["ct"] + case["tag"])
            cipher = aead(key)
            out = bytearray(len(msg))
            if case["result"] == "invalid":
                with pytest.raises(InvalidTag):
                    cipher.decrypt_into(nonce, sealed, aad, out)
            else:
                cipher.decrypt_into(nonce, sealed, aad, out)
                assert bytes(out) == msg, case["tcId"]
                assert cipher.encrypt(nonce, msg, aad) == sealed, case["tcId"]
            ran += 1
    assert ran >= 50


# -- both ciphers through the reader ---------------------------------------------------------


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_header_names_the_cipher_and_each_cipher_has_its_own_payload_key(cipher: str) -> None:
    blob = age.encrypt(b"x" * 100, [IDENTITY.recipient], cipher=cipher)
    header = age.parse_header(blob)
    assert header is not None and header.cipher == cipher
    assert blob.startswith(b"age-encryption.org/v1\n" if cipher == age.CHACHA20_POLY1305
                           else b"strongroom/aes-256-gcm/v1\n")
    fk, nonce = bytes(16), bytes(16)
    assert stream.payload_key(fk, nonce, age.AES_256_GCM) != stream.payload_key(fk, nonce)
    with pytest.raises(InvalidInput, match="cipher"):
        age.build_header(fk, [IDENTITY.recipient], cipher="rot13")


sizes = st.sampled_from([0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 777])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=sizes, cipher=st.sampled_from(age.CIPHERS),
       threads=st.integers(1, 3))
def test_decrypt_into_any_range_equals_the_slice(data: st.DataObject, size: int, cipher: str,
                                                 threads: int) -> None:
    plain = _plain(size)
    reader = age.AgeReader.open(age.encrypt(plain, [IDENTITY.recipient], cipher=cipher),
                                [IDENTITY])
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    out = bytearray(end - start)
    reader.decrypt_into(out, start, threads=threads)
    assert bytes(out) == plain[start:end]
    assert not any(stream._edge_buffer())  # the partial chunks left nothing behind


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_decrypt_into_refuses_ranges_outside_the_plaintext(cipher: str) -> None:
    reader = age.AgeReader.open(age.encrypt(b"abc", [IDENTITY.recipient], cipher=cipher),
                                [IDENTITY])
    with pytest.raises(InvalidInput, match="outside"):
        reader.decrypt_into(bytearray(2), 2)
    with pytest.raises(InvalidInput, match="outside"):
        reader.decrypt_into(bytearray(1), -1)
    with pytest.raises(InvalidInput, match="read-only"):
        reader.decrypt_into(memoryview(b"ab"), 1)


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_a_range_touching_a_truncated_end_fails_in_both_modes(cipher: str) -> None:
    plain = _plain(3 * CHUNK + 5)
    blob = age.encrypt(plain, [IDENTITY.recipient], cipher=cipher, file_key=bytes(16))
    cut = blob[: len(blob) - (5 + age.TAG_SIZE)]  # the final chunk removed
    reader = age.AgeReader.with_file_key(cut, bytes(16), plaintext_size=3 * CHUNK)
    out = bytearray(10)
    reader.decrypt_into(out, 5)  # chunk 0 is intact
    assert bytes(out) == plain[5:15]
    with pytest.raises(PayloadError, match="chunk 2"):
        reader.decrypt_into(bytearray(CHUNK), 2 * CHUNK)

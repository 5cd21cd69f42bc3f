"""Write the test vectors of strongroom's AES-256-GCM payload mode (docs/formats.md).

Each vector is a file in the C2SP age testkit's layout: textual header lines
(``expect``, ``payload`` = SHA-256 of the plaintext released before any failure,
``file key``, ``identity``, ``comment``), a blank line, then the encrypted file.
Every input is fixed (identity, ephemeral key, file key, nonce, plaintext), so
the output is the same on every run; tests/crypto/test_payload_modes.py checks
the checked-in files against a fresh run and decrypts each one.

Run: ``.venv/bin/python scripts/aes_gcm_vectors.py [DIR]``
(default ``tests/crypto/vectors/aes-256-gcm``).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto import age, stream

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "crypto" / "vectors" / "aes-256-gcm"

IDENTITY = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
EPHEMERAL = X25519PrivateKey.from_private_bytes(bytes(range(33, 65)))
FILE_KEY = bytes(range(0xA0, 0xB0))
NONCE = bytes(range(0xC0, 0xD0))
CHUNK = stream.CHUNK_SIZE


class _FixedX25519:
    """The standard age X25519 stanza, made with a fixed ephemeral key (for reproducibility)."""

    def wrap(self, file_key: bytes) -> list[age.Stanza]:
        share = EPHEMERAL.public_key().public_bytes_raw()
        recipient = IDENTITY.public_key().public_bytes_raw()
        shared = EPHEMERAL.exchange(IDENTITY.public_key())
        wrap_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=share + recipient,
                        info=b"age-encryption.org/v1/X25519").derive(shared)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        arg = age._b64encode(share).decode()
        return [age.Stanza("X25519", (arg,), body)]


def plaintext(size: int) -> bytes:
    """``size`` bytes of a fixed pattern (every chunk differs)."""
    return bytes((i * 7 + i // CHUNK) % 251 for i in range(size))


def _seal(plain: bytes, *, cipher: str = age.AES_256_GCM, label_cipher: str | None = None,
          last_flag: bool = True) -> bytes:
    """The payload (nonce + chunks) of ``plain``; the knobs make the broken variants."""
    key = stream.payload_key(FILE_KEY, NONCE, label_cipher or cipher)
    sealer = stream.PayloadCipher(key, cipher)
    out = bytearray(stream.sealed_size(len(plain)))
    sealer.seal(memoryview(plain), memoryview(out), 0, final=last_flag, threads=1)
    return NONCE + bytes(out)


def _file(plain: bytes, *, header_cipher: str = age.AES_256_GCM, **seal: object) -> bytes:
    header = age.build_header(FILE_KEY, [_FixedX25519()], cipher=header_cipher)
    return header + _seal(plain, **seal)  # type: ignore[arg-type]


def _vector(expect: str, released: bytes, comment: str, data: bytes) -> bytes:
    identity = str(age.X25519Identity(IDENTITY))
    head = (f"expect: {expect}\npayload: {hashlib.sha256(released).hexdigest()}\n"
            f"file key: {FILE_KEY.hex()}\nidentity: {identity}\ncomment: {comment}\n\n")
    return head.encode() + data


def vectors() -> dict[str, bytes]:
    """Every vector, by file name."""
    out: dict[str, bytes] = {}
    ok: dict[str, int] = {"empty": 0, "one_byte": 1, "one_chunk": CHUNK,
                          "chunk_plus_one": CHUNK + 1, "three_chunks_ragged": 3 * CHUNK + 1234}
    for name, size in ok.items():
        plain = plaintext(size)
        out[f"success_{name}"] = _vector("success", plain, f"{size} bytes", _file(plain))
    two = plaintext(2 * CHUNK + 10)
    whole = _file(two)
    cut = len(whole) - (10 + stream.TAG_SIZE)
    out["payload_truncated_last_chunk"] = _vector(
        "payload failure", two[: 2 * CHUNK],
        "the final chunk removed: chunk 1 is full but not flagged last", whole[:cut])
    flipped = bytearray(whole)
    flipped[-1] ^= 1
    out["payload_bad_tag"] = _vector("payload failure", two[: 2 * CHUNK],
                                     "the final chunk's tag altered", bytes(flipped))
    full = plaintext(2 * CHUNK)
    out["payload_missing_last_flag"] = _vector(
        "payload failure", full, "two full chunks, the second sealed without the "
        "last-chunk flag (a stream cut at a chunk boundary)", _file(full, last_flag=False))
    small = plaintext(100)
    out["payload_chacha_under_aes_intro"] = _vector(
        "payload failure", b"", "an age ChaCha20-Poly1305 payload behind the AES-256-GCM line",
        _file(small, cipher=age.CHACHA20_POLY1305, label_cipher=age.CHACHA20_POLY1305))
    out["payload_age_hkdf_label"] = _vector(
        "payload failure", b"", "AES-256-GCM chunks under a key derived with age's "
        "'payload' label", _file(small, label_cipher=age.CHACHA20_POLY1305))
    aes = _file(small)
    swapped = age._INTRO + aes[len(age.AES_INTRO):]
    out["hmac_intro_swapped_to_age"] = _vector(
        "HMAC failure", b"", "the first line changed to age's: the header MAC covers it",
        swapped)
    out["header_unknown_version"] = _vector(
        "header failure", b"", "an unknown version of the mode's first line",
        b"strongroom/aes-256-gcm/v2\n" + aes[len(age.AES_INTRO):])
    return out


def write(directory: Path, generate: Callable[[], dict[str, bytes]] = vectors) -> int:
    """Write every vector into ``directory``; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    written = generate()
    for name, data in written.items():
        (directory / name).write_bytes(data)
    return len(written)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    print(f"wrote {write(target)} vectors to {target}")

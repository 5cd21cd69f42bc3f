"""The STREAM payload machinery: sealing runs of chunks and its page-aligned buffers.

``PayloadCipher.seal`` builds the nonces of whole chunks inline (counter shifted past
the flag byte) and only the payload's last chunk through ``chunk_nonce``; these tests
hold it to a chunk-by-chunk reference at every boundary the layout has.
"""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from strongroom.crypto.stream import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    CHUNK_SIZE,
    PayloadCipher,
    chunk_count,
    chunk_nonce,
    io_buffer,
    sealed_size,
)


def _reference(key: bytes, cipher: str, plaintext: bytes, first: int, final: bool) -> bytes:
    """Each chunk sealed on its own with ``chunk_nonce``: the layout docs/formats.md gives."""
    aead = ChaCha20Poly1305(key) if cipher == CHACHA20_POLY1305 else AESGCM(key)
    count = chunk_count(len(plaintext))
    return b"".join(
        aead.encrypt(chunk_nonce(first + k, final and k == count - 1),
                     plaintext[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE], None)
        for k in range(count)
    )


@pytest.mark.parametrize("cipher", [CHACHA20_POLY1305, AES_256_GCM])
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  3 * CHUNK_SIZE, 5 * CHUNK_SIZE + 7])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_seal_matches_chunk_by_chunk_reference(cipher: str, size: int, threads: int) -> None:
    key = os.urandom(32)
    plaintext = os.urandom(size)
    for first in (0, 5, 2**40):
        for final in (True, False):
            if not final and (size == 0 or size % CHUNK_SIZE):
                continue  # a non-final run is whole chunks
            out = bytearray(sealed_size(size) if final else size + size // CHUNK_SIZE * 16)
            PayloadCipher(key, cipher).seal(memoryview(plaintext), memoryview(out), first,
                                           final=final, threads=threads)
            assert bytes(out) == _reference(key, cipher, plaintext, first, final)


def test_a_non_final_run_of_a_partial_chunk_is_refused() -> None:
    out = bytearray(sealed_size(10))
    with pytest.raises(ValueError, match="whole chunks"):
        PayloadCipher(bytes(32)).seal(memoryview(bytes(10)), memoryview(out), 0, final=False,
                                      threads=1)


@pytest.mark.parametrize("size", [0, 1, 4096, (1 << 20) + 256])
def test_io_buffer_is_zeroed_writable_and_page_aligned(size: int) -> None:
    buf = io_buffer(size)
    assert len(buf) == size and not buf.readonly
    assert bytes(buf) == bytes(size)
    if size:
        # A destination 16 bytes past a page boundary (a large bytearray's) makes the
        # kernel's copy from the page cache ~4x slower on the EPYC this was measured on.
        assert ctypes.addressof(ctypes.c_char.from_buffer(buf)) % mmap.PAGESIZE == 0
        buf[-1] = 1
        assert buf[-1] == 1

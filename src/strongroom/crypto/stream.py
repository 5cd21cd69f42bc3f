"""The STREAM payload of an age file: 64 KiB AEAD chunks, in parallel.

This is age's internal payload machinery; use :mod:`strongroom.crypto.age`
instead of calling it directly. The payload is a 16-byte nonce followed by
chunks of at most ``CHUNK_SIZE`` plaintext bytes, each sealed under the payload
key with the nonce ``counter (11 bytes, big-endian) || last-flag (1 byte)``.
Every chunk but the last is full; the last carries the flag and is empty only
when the whole plaintext is.

Two AEADs run the same STREAM (``CIPHERS``): ``chacha20-poly1305`` is age's
payload; ``aes-256-gcm`` is strongroom's FIPS-approved payload mode (same
chunking, nonces and last-chunk rule; its payload key is derived with its own
HKDF label, see docs/formats.md).

:class:`PayloadCipher` seals and opens runs of consecutive chunks straight
into caller-provided buffers, splitting a run into contiguous blocks that run
on a shared thread pool (``cryptography``'s AEAD calls release the GIL).
:class:`BlockReader` reads a stream in large reused blocks, holding back the
final unit until end of input is known, so the caller can tell which chunk is
the last one without a second pass.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:  # imported on first use: a small file never starts the pool (CLI start-up)
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = [
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "CHUNK_SIZE",
    "CIPHERS",
    "ENCRYPTED_CHUNK_SIZE",
    "FETCH_CHUNKS",
    "NONCE_SIZE",
    "TAG_SIZE",
    "BlockReader",
    "ChunkFailure",
    "PayloadCipher",
    "PayloadGeometry",
    "chunk_count",
    "chunk_nonce",
    "first_failure",
    "io_buffer",
    "payload_key",
    "sealed_size",
]

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
#: Chunks of ciphertext fetched from a source at once by one worker (4 MiB).
FETCH_CHUNKS = 64
_PAYLOAD_LABEL = b"payload"
#: The payload ciphers, by the name manifests, settings and ``--cipher`` use.
CHACHA20_POLY1305 = "chacha20-poly1305"
AES_256_GCM = "aes-256-gcm"
CIPHERS = (CHACHA20_POLY1305, AES_256_GCM)
#: HKDF info of each cipher's payload key: age's label for age's cipher, a distinct one
#: for AES-256-GCM so no payload key is ever shared between the two modes.
_PAYLOAD_LABELS = {CHACHA20_POLY1305: _PAYLOAD_LABEL, AES_256_GCM: b"strongroom/aes-256-gcm payload"}
_AEADS: dict[str, type[ChaCha20Poly1305] | type[AESGCM]] = {
    CHACHA20_POLY1305: ChaCha20Poly1305, AES_256_GCM: AESGCM}
_LAST_CHUNK_FLAG = 1
_COUNTER_BYTES = 11

ReadBuffer = bytes | bytearray | memoryview
#: ``fetch(first, stop)`` returns the ciphertext of chunks ``first..stop-1``, contiguous.
Fetch = Callable[[int, int], ReadBuffer]
#: ``done(first, stop)``: chunks ``first..stop-1`` were opened (their ciphertext may go).
Done = Callable[[int, int], None]


def _init_frozen(obj: object, **values: object) -> None:
    """Set the fields of an immutable record (see :class:`ChunkFailure`)."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _frozen_setattr(obj: object, name: str, value: object) -> None:
    raise AttributeError(f"cannot assign to field {name!r}: {type(obj).__name__} is immutable")


def _frozen_delattr(obj: object, name: str) -> None:
    raise AttributeError(f"cannot delete field {name!r}: {type(obj).__name__} is immutable")


class ChunkFailure:
    """A chunk that did not open (immutable, compared by value).

    ``misflagged``: it opens with the other last-chunk flag, so it is authentic
    but the stream was truncated or extended there; its plaintext is in the
    output buffer. The age records here are plain classes, not dataclasses:
    ``dataclasses`` imports ``inspect`` (with ``ast`` and ``dis``), ~10 ms of
    every ``strongroom encrypt`` start-up.
    """

    __slots__ = ("index", "misflagged")
    index: int
    misflagged: bool

    def __init__(self, index: int, misflagged: bool) -> None:
        _init_frozen(self, index=index, misflagged=misflagged)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, ChunkFailure)
        return (self.index, self.misflagged) == (other.index, other.misflagged)

    def __hash__(self) -> int:
        return hash((self.index, self.misflagged))

    def __repr__(self) -> str:
        return f"ChunkFailure(index={self.index!r}, misflagged={self.misflagged!r})"

    __setattr__ = _frozen_setattr
    __delattr__ = _frozen_delattr

    def describe(self) -> str:
        """A message naming the chunk and what is wrong with it."""
        if self.misflagged:
            return (
                f"chunk {self.index} is authentic but out of place: "
                "the file was truncated or extended"
            )
        return f"chunk {self.index} failed authentication"


def payload_key(file_key: bytes | bytearray, nonce: bytes,
                cipher: str = CHACHA20_POLY1305) -> bytes:
    """Derive the payload key: HKDF-SHA256(file key, salt = nonce, info = the cipher's label).

    age's label is ``payload``; AES-256-GCM's is ``strongroom/aes-256-gcm payload``.
    """
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce,
                info=_PAYLOAD_LABELS[cipher]).derive(file_key)


def chunk_nonce(index: int, last: bool) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce of chunk ``index``."""
    return index.to_bytes(_COUNTER_BYTES, "big") + bytes((_LAST_CHUNK_FLAG if last else 0,))


def chunk_count(plaintext_size: int) -> int:
    """Number of chunks a plaintext of this size is sealed into (at least one)."""
    return max(1, -(-plaintext_size // CHUNK_SIZE))


class PayloadGeometry:
    """Chunk layout derived from the ciphertext length of a payload (nonce excluded)."""

    __slots__ = ("ciphertext_size", "last_chunk_size", "num_chunks", "plaintext_size")

    def __init__(self, ciphertext_size: int) -> None:
        self.ciphertext_size = ciphertext_size
        self.num_chunks = -(-ciphertext_size // ENCRYPTED_CHUNK_SIZE)
        self.last_chunk_size = ciphertext_size - (self.num_chunks - 1) * ENCRYPTED_CHUNK_SIZE
        self.plaintext_size = ciphertext_size - self.num_chunks * TAG_SIZE

    def problem(self) -> str | None:
        """Why no valid payload can have this length, or None when one can."""
        if self.num_chunks == 0:
            return "the payload has no chunks (the file is truncated)"
        if self.last_chunk_size < TAG_SIZE:
            return f"chunk {self.num_chunks - 1} is shorter than its tag (the file is truncated)"
        if self.last_chunk_size == TAG_SIZE and self.num_chunks > 1:
            return f"chunk {self.num_chunks - 1} is an empty final chunk after a non-empty one"
        return None


def io_buffer(size: int) -> memoryview:
    """A zeroed, page-aligned buffer of ``size`` bytes for reads and sealing (private mapping).

    Not a ``bytearray``: glibc serves a buffer of 128 KiB or more from its own
    mapping with the data 16 bytes past a page boundary, and the kernel's copy
    from the page cache into a destination at that offset runs ~4x slower here
    (preadv of 1 GiB from the page cache: 0.45 s of system time into a bytearray,
    0.12 s into a page-aligned buffer; AMD EPYC, measured 2026-12-02).
    """
    area = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return memoryview(area)[:size]


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """The process-wide pool of chunk workers, created on first use and reused."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(
                max_workers=max(4, os.cpu_count() or 1), thread_name_prefix="age-chunks"
            )
        return _pool


def _split(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(count)`` into at most ``parts`` contiguous, nearly equal ranges."""
    parts = max(1, min(parts, count))
    step, extra = divmod(count, parts)
    ranges = []
    lo = 0
    for p in range(parts):
        hi = lo + step + (1 if p < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return ranges


class PayloadCipher:
    """Seals and opens runs of STREAM chunks under one payload key, with one of ``CIPHERS``."""

    def __init__(self, key: bytes, cipher: str = CHACHA20_POLY1305) -> None:
        if cipher not in _AEADS:
            raise ValueError(f"unknown payload cipher {cipher!r}")
        self._key = bytearray(key)
        self._wiped = False
        self.cipher = cipher

    def wipe(self) -> None:
        """Zero the key held here; any later use raises ValueError."""
        self._key[:] = bytes(len(self._key))
        self._wiped = True

    def _aead(self) -> ChaCha20Poly1305 | AESGCM:
        if self._wiped:
            raise ValueError("the payload key was wiped")
        return _AEADS[self.cipher](self._key)

    # -- sealing ------------------------------------------------------------

    def _seal_range(
        self, plaintext: memoryview, out: memoryview, first: int, lo: int, hi: int, last: int
    ) -> None:
        encrypt_into = self._aead().encrypt_into
        # Every chunk before the payload's last one is whole and unflagged: its nonce is
        # the counter shifted past the flag byte (half the Python time a chunk of
        # chunk_nonce and min(), the time each sealing thread holds the GIL).
        tail = last - first if lo <= last - first < hi else hi
        for k in range(lo, tail):
            p0 = k * CHUNK_SIZE
            c0 = k * ENCRYPTED_CHUNK_SIZE
            encrypt_into(((first + k) << 8).to_bytes(12, "big"), plaintext[p0 : p0 + CHUNK_SIZE],
                         None, out[c0 : c0 + ENCRYPTED_CHUNK_SIZE])
        if tail < hi:  # the last chunk: flagged, and the only one that may be short or empty
            p0 = tail * CHUNK_SIZE
            p1 = min(p0 + CHUNK_SIZE, len(plaintext))
            c0 = tail * ENCRYPTED_CHUNK_SIZE
            encrypt_into(chunk_nonce(last, True), plaintext[p0:p1], None,
                         out[c0 : c0 + (p1 - p0) + TAG_SIZE])

    @staticmethod
    def _seal_plan(plaintext: memoryview, first: int, final: bool) -> tuple[int, int]:
        """Chunk count of a run and the index that carries the last-chunk flag (-1: none)."""
        count = chunk_count(len(plaintext))
        if not final and len(plaintext) % CHUNK_SIZE:
            raise ValueError("a non-final run must be whole chunks")
        return count, first + count - 1 if final else -1

    def submit_seal(
        self, plaintext: memoryview, out: memoryview, first: int, *, final: bool, threads: int
    ) -> list[Future[None]]:
        """Start sealing ``plaintext`` as chunks ``first, first+1, ...`` into ``out``.

        ``out`` must hold ``sealed_size(len(plaintext))`` bytes. When ``final``
        the last chunk carries the last-chunk flag; otherwise the plaintext must
        be whole chunks. Returns the futures to wait on.
        """
        count, last = self._seal_plan(plaintext, first, final)
        pool = _executor()
        return [
            pool.submit(self._seal_range, plaintext, out, first, lo, hi, last)
            for lo, hi in _split(count, threads)
        ]

    def seal(
        self, plaintext: memoryview, out: memoryview, first: int, *, final: bool, threads: int
    ) -> None:
        """Seal like :meth:`submit_seal` and wait; one thread runs inline."""
        count, last = self._seal_plan(plaintext, first, final)
        if threads <= 1 or count == 1:
            self._seal_range(plaintext, out, first, 0, count, last)
            return
        for fut in self.submit_seal(plaintext, out, first, final=final, threads=threads):
            fut.result()

    # -- opening ------------------------------------------------------------

    def _open_range(
        self, fetch: Fetch, out: memoryview, first: int, lo: int, hi: int, last: int,
        skip: int = 0, done: Done | None = None,
    ) -> ChunkFailure | None:
        """Open chunks ``first+lo .. first+hi-1``; describe the first one that fails.

        Chunk ``first`` lands at ``-skip`` in ``out``: a chunk that lies partly
        outside ``out`` is opened into this thread's 64 KiB buffer and its part
        copied (then the buffer is zeroed); every other chunk opens in place.
        """
        decrypt_into = self._aead().decrypt_into
        edge: memoryview | None = None
        for part in range(lo, hi, FETCH_CHUNKS):
            part_end = min(part + FETCH_CHUNKS, hi)
            # Fetched a piece at a time: a remote or pread source then holds at most
            # FETCH_CHUNKS chunks of ciphertext per thread in memory.
            data = memoryview(fetch(first + part, first + part_end)).cast("B")
            size = len(data)
            for k in range(part, part_end):
                c0 = (k - part) * ENCRYPTED_CHUNK_SIZE
                c1 = min(c0 + ENCRYPTED_CHUNK_SIZE, size)
                if c1 - c0 < TAG_SIZE:
                    return ChunkFailure(first + k, misflagged=False)
                p0 = k * CHUNK_SIZE - skip
                size_k = c1 - c0 - TAG_SIZE
                inside = p0 >= 0 and p0 + size_k <= len(out)
                if inside:
                    plain = out[p0 : p0 + size_k]
                else:
                    edge = edge if edge is not None else _edge_buffer()
                    plain = edge[:size_k]
                failure = _open_chunk(decrypt_into, data[c0:c1], plain, first + k,
                                      first + k == last)
                if not inside:
                    a, b = max(p0, 0), min(p0 + size_k, len(out))
                    if failure is None or failure.misflagged:
                        out[a:b] = plain[a - p0 : b - p0]
                    plain[:] = bytes(size_k)  # no plaintext left in the reused buffer
                if failure is not None:
                    return failure
            del data
            if done is not None:
                done(first + part, first + part_end)
        return None

    def submit_open(
        self, fetch: Fetch, out: memoryview, first: int, count: int, *, last: int, threads: int,
        skip: int = 0, done: Done | None = None,
    ) -> list[Future[ChunkFailure | None]]:
        """Start opening ``count`` chunks from ``first`` into ``out``.

        Chunk ``first`` starts ``skip`` bytes before ``out`` (0: at its start);
        plaintext outside ``out`` is dropped. ``last`` is the index of the
        payload's final chunk (-1 when it is not in this run). ``done`` hears of
        each piece once opened. Each future describes the first chunk of its
        block that failed, or gives None.
        """
        pool = _executor()
        return [
            pool.submit(self._open_range, fetch, out, first, lo, hi, last, skip, done)
            for lo, hi in _split(count, threads)
        ]

    def open(
        self, fetch: Fetch, out: memoryview, first: int, count: int, *, last: int, threads: int,
        skip: int = 0, done: Done | None = None,
    ) -> ChunkFailure | None:
        """Open like :meth:`submit_open` and wait; describe the first failing chunk."""
        if count <= 0:
            return None
        if threads <= 1 or count == 1:
            return self._open_range(fetch, out, first, 0, count, last, skip, done)
        return first_failure(self.submit_open(fetch, out, first, count, last=last,
                                              threads=threads, skip=skip, done=done))


def _open_chunk(decrypt_into: Callable[[bytes, ReadBuffer, None, memoryview], int],
                sealed: memoryview, plain: memoryview, index: int, is_last: bool
                ) -> ChunkFailure | None:
    """Open one chunk into ``plain``; describe it when it fails."""
    try:
        decrypt_into(chunk_nonce(index, is_last), sealed, None, plain)
        return None
    except InvalidTag:
        if len(sealed) != ENCRYPTED_CHUNK_SIZE:
            return ChunkFailure(index, misflagged=False)
    # A full chunk that opens with the other flag is authentic but out of place: the
    # stream was truncated or extended at this chunk.
    try:
        decrypt_into(chunk_nonce(index, not is_last), sealed, None, plain)
    except InvalidTag:
        return ChunkFailure(index, misflagged=False)
    return ChunkFailure(index, misflagged=True)


# -- per-thread buffers ---------------------------------------------------------------

_local = threading.local()


def _edge_buffer() -> memoryview:
    """This thread's 64 KiB buffer for a chunk only partly inside the output (zeroed after use)."""
    buf: bytearray | None = getattr(_local, "edge", None)
    if buf is None:
        buf = bytearray(CHUNK_SIZE)
        _local.edge = buf
    return memoryview(buf)


def first_failure(futures: list[Future[ChunkFailure | None]]) -> ChunkFailure | None:
    """Wait for every block; the failure with the lowest chunk index, or None."""
    failed = [f for f in (fut.result() for fut in futures) if f is not None]
    return min(failed, key=lambda f: f.index) if failed else None


def sealed_size(plaintext_size: int) -> int:
    """Ciphertext size of a payload (nonce excluded) for this much plaintext."""
    return plaintext_size + chunk_count(plaintext_size) * TAG_SIZE


class BlockReader:
    """Reads a stream in blocks of whole ``unit``-sized pieces into two reused buffers.

    Each :meth:`next` returns a view of the block just read and whether it is
    the final one. A non-final block holds back its last unit (the next call
    copies it to the front of the other buffer), because only end of input
    tells whether that unit is the stream's last. A view stays valid, and is
    only read, until the second following :meth:`next` call.
    """

    def __init__(self, src: BinaryIO, unit: int, units_per_block: int, prefix: bytes = b"") -> None:
        if units_per_block < 2:
            raise ValueError("a block must hold at least two units")
        size = unit * units_per_block
        if len(prefix) > size:
            raise ValueError("prefix larger than a block")
        self._src = src
        self._unit = unit
        self._views = (io_buffer(size), io_buffer(size))
        self._which = 0
        self._views[0][: len(prefix)] = prefix
        self._filled = len(prefix)
        self._carry: memoryview | None = None
        self._eof = False
        readinto = getattr(src, "readinto", None)
        self._readinto: Callable[[memoryview], int | None] = (
            readinto if readinto is not None else self._read_copy
        )

    def _read_copy(self, view: memoryview) -> int:
        data = self._src.read(len(view))
        view[: len(data)] = data
        return len(data)

    def next(self) -> tuple[memoryview, bool]:
        """Read the next block; returns ``(view, final)``."""
        if self._eof:
            raise ValueError("read past the final block")
        view = self._views[self._which]
        if self._carry is not None:
            # Copied only now: the previous block may still be in use until this call.
            view[: self._unit] = self._carry
            self._carry = None
        filled = self._filled
        while filled < len(view):
            n = self._readinto(view[filled:])
            if not n:
                self._eof = True
                break
            filled += n
        if self._eof:
            return view[:filled], True
        keep = len(view) - self._unit
        self._carry = view[keep:]
        self._filled = self._unit
        self._which = 1 - self._which
        return view[:keep], False

"""Loading weights into memory: decrypted tensors as numpy arrays, never plaintext on disk.

:func:`strongroom.open_weights` returns a :class:`Weights`, a read-only mapping
of tensor name -> array::

    with strongroom.open_weights("minilm") as w:        # everything, now
        emb = w["embeddings.word_embeddings.weight"]
    with strongroom.open_weights("minilm", lazy=True) as w:
        one = w["pooler.dense.weight"]                   # decrypts only its chunks

A full load decrypts each shard with ``settings.threads`` threads straight into
one buffer per shard and hands out zero-copy, read-only views of it. A lazy load
releases a shard's file key on first use and decrypts only the 64 KiB chunks
that cover the tensor asked for, straight into the tensor's own array (one
allocation, no intermediate copy). Each shard's blob is opened once and its
key released once, by the release gate through :meth:`Vault.open_reader`
(audited, metered). ``close()`` zeroes the plaintext buffers.

Fresh memory costs the kernel a zeroed page on first touch (in a VM, often the
host's fault too), which bounds a full load. Each shard's buffer (and a large
lazy tensor's) is an anonymous mapping of its own on a 2 MiB boundary, advised
for transparent huge pages and left unpopulated: each decrypting thread takes a
range and populates it a segment at a time just before decrypting into it, so
zeroing and decryption run on every configured thread at once. To load the same
model again without paying for fresh memory at all, keep the buffers and pass
them back (``into``); they are zeroed on ``close()`` and refilled::

    buffers = shard_buffers(manifest)                    # once
    with vault.open_weights("minilm", into=buffers) as w:
        ...
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound
from strongroom.vault.manifest import FileEntry, Manifest, TensorRef
from strongroom.vault.shards import renamed_errors

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from strongroom.settings import Settings


class ShardReaders(Protocol):
    """What loading needs of a vault: its settings (threads) and a reader per shard.

    :class:`~strongroom.vault.vault.Vault` (embedded: keys from the local gate)
    and :class:`~strongroom.server.remote_vault.RemoteVault` (ciphertext by
    range and keys from a server's gate) both provide it.
    """

    settings: Settings

    def open_reader(self, manifest: Manifest, entry: FileEntry, purpose: str
                    ) -> contextlib.AbstractContextManager[age.AgeReader]:
        """An authenticated reader over one shard's plaintext."""
        ...


__all__ = ["NUMPY_DTYPES", "ShardReaders", "Weights", "fresh_buffer", "load_weights",
           "shard_buffers"]

#: safetensors dtype -> numpy dtype (little-endian). BF16 and FP8 have no numpy
#: dtype: they come back as raw unsigned integers of the same width.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "F8_E5M2": "|u1",
    "F8_E4M3": "|u1",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "BF16": "<u2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "I64": "<i8",
    "U64": "<u8",
    "F64": "<f8",
}

_TORCH_DTYPES = {"BF16": "bfloat16", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn"}

#: Buffers from this size up are their own mappings, aligned to 2 MiB (huge pages).
_PREFAULT_MIN = 8 << 20
_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_HUGE = 2 << 20
#: A fresh buffer is populated and decrypted this much at a time per thread; each
#: thread's range starts on a multiple of _SEGMENT_ALIGN (huge pages, whole 64 KiB chunks).
_SEGMENT = 16 << 20
_SEGMENT_ALIGN = _HUGE
_libc: ctypes.CDLL | None = None


def _madvise(array: np.ndarray[Any, Any], start: int, end: int, advice: int) -> bool:
    """``madvise(2)`` on ``array[start:end]`` (``start`` page-aligned) through ctypes."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return int(_libc.madvise(ctypes.c_void_p(array.ctypes.data + start),
                             ctypes.c_size_t(end - start), advice)) == 0


def fresh_buffer(nbytes: int, *, populate: bool = True) -> np.ndarray[Any, Any]:
    """A writable uint8 buffer; with ``populate``, its pages are already faulted in.

    Large buffers are anonymous mappings of their own, starting on a 2 MiB
    boundary and advised for transparent huge pages (``MADV_HUGEPAGE``: in
    ``madvise`` mode the kernel gives none otherwise), unmapped once the last
    array over them is dropped. ``populate`` faults them all in now, in one kernel
    call (``MADV_POPULATE_WRITE``, which releases the GIL through ctypes; a fill on
    older kernels): for buffers that are reused (``into=``). A load populates its
    fresh buffers itself, on the decrypting threads (:func:`_decrypt_fresh`).
    """
    if nbytes < _PREFAULT_MIN:
        return np.empty(nbytes, dtype=np.uint8)
    size = -(-nbytes // _HUGE) * _HUGE
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pad = -_address(area) % _HUGE
    if pad:  # a kernel that does not align large anonymous mappings: align within a larger one
        area.close()
        area = mmap.mmap(-1, size + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        pad = -_address(area) % _HUGE
    with contextlib.suppress(AttributeError, OSError):
        area.madvise(mmap.MADV_HUGEPAGE)
    array: np.ndarray[Any, Any] = np.frombuffer(area, dtype=np.uint8, count=nbytes, offset=pad)
    if populate:
        _populate(array, 0, nbytes)
    return array


def _address(area: mmap.mmap) -> int:
    """Where an mmap starts in memory."""
    return int(np.frombuffer(area, dtype=np.uint8, count=1).ctypes.data)


def _populate(array: np.ndarray[Any, Any], start: int, end: int) -> None:
    """Fault ``array[start:end]`` in: one kernel call that releases the GIL (ctypes).

    ``start`` must be page-aligned. A kernel without ``MADV_POPULATE_WRITE``
    (before 5.14) gets a fill instead.
    """
    if not _madvise(array, start, end, _MADV_POPULATE_WRITE):
        array[start:end].fill(0)


def _decrypt_fresh(reader: age.AgeReader, buffer: np.ndarray[Any, Any], threads: int,
                   offset: int = 0) -> None:
    """Decrypt plaintext ``[offset, offset + buffer.nbytes)`` into an unpopulated ``buffer``.

    ``buffer`` comes from ``fresh_buffer(populate=False)`` (huge pages). Each of
    ``threads`` threads takes one contiguous range and, a segment at a time,
    populates the segment (the kernel zeroes its pages) and decrypts into it while
    it is still in cache, so the faulting is spread over every thread. The first
    failure (lowest offset) is raised once all stop.

    Huge pages throughout, measured against choosing 4 KiB pages per segment by
    their populate CPU cost (2026-12-02, 2-vCPU Firecracker VM with free page
    reporting): huge pages from blocks the host took back cost ~1.2 s of CPU per
    GiB against ~0.4 s for 4 KiB pages from small free fragments, but the two
    threads' 4 KiB populates hardly overlap there (wall about their CPU time),
    while huge-page populates do, and a load that follows one which freed its
    huge pages gets them back at ~0.1 s per GiB. In bench/weights.py's order the
    choice cost wall time: 1 GiB AES-256-GCM fresh load 383 ms (huge pages only)
    vs 1,294 ms, ChaCha20-Poly1305 1,569 vs 1,421 ms, the same total CPU.
    """
    size = buffer.nbytes
    step = -(-size // threads // _SEGMENT_ALIGN) * _SEGMENT_ALIGN
    ranges = [(lo, min(lo + step, size)) for lo in range(0, size, step)]

    def run(lo: int, hi: int) -> None:
        for start in range(lo, hi, _SEGMENT):
            end = min(start + _SEGMENT, hi)
            _populate(buffer, start, end)
            reader.decrypt_into(buffer.data[start:end], offset + start, threads=1)

    if len(ranges) == 1:
        run(*ranges[0])
        return
    with ThreadPoolExecutor(len(ranges), thread_name_prefix="load") as pool:
        futures = [pool.submit(run, lo, hi) for lo, hi in ranges]
    failed = [f.exception() for f in futures]
    for exc in failed:
        if exc is not None:
            raise exc


def _view(buffer: np.ndarray[Any, Any], offset: int, ref: TensorRef) -> np.ndarray[Any, Any]:
    dtype = np.dtype(NUMPY_DTYPES[ref.dtype])
    count = ref.nbytes // dtype.itemsize
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(ref.shape)
    array.flags.writeable = False
    return array


class Weights(Mapping[str, Any]):
    """Decrypted tensors of one artifact version (numpy arrays, or torch tensors)."""

    def __init__(self, vault: ShardReaders, manifest: Manifest, *, lazy: bool,
                 framework: str) -> None:
        if framework not in ("numpy", "torch"):
            raise InvalidInput(f"unknown framework {framework!r}", remedy="use 'numpy' or 'torch'")
        self.vault = vault
        self.manifest = manifest
        self.lazy = lazy
        self.framework = framework
        self._buffers: dict[str, np.ndarray[Any, Any]] = {}
        self._readers: dict[str, age.AgeReader] = {}
        self._stack = contextlib.ExitStack()
        self._cache: dict[str, Any] = {}
        self._closed = False

    # -- Mapping -----------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        if self._closed:
            raise InvalidInput("weights were closed", obj=self.manifest.ref)
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        ref = self.manifest.tensors.get(name)
        if ref is None:
            raise KeyError(name)
        if self.lazy:
            reader = self._reader(self.manifest.file(ref.file))
            data = fresh_buffer(ref.nbytes, populate=False)
            self._buffers[f"tensor:{name}"] = data  # zeroed on close, even after a failure
            threads = self.vault.settings.threads
            with renamed_errors(f"{self.manifest.ref}/{ref.file}"):
                if ref.nbytes >= _PREFAULT_MIN:
                    _decrypt_fresh(reader, data, threads, ref.start)
                else:
                    reader.decrypt_into(data.data, ref.start, threads=threads)
            array = _view(data, 0, ref)
        else:
            array = _view(self._buffers[ref.file], ref.start, ref)
        value = self._convert(array, ref)
        self._cache[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.manifest.tensors)

    def __len__(self) -> int:
        return len(self.manifest.tensors)

    # -- extras ------------------------------------------------------------

    def info(self, name: str) -> TensorRef:
        """Dtype, shape and location of a tensor, without decrypting it."""
        try:
            return self.manifest.tensors[name]
        except KeyError:
            raise NotFound("no such tensor", obj=f"{self.manifest.ref}:{name}") from None

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in the artifact."""
        return sum(t.nbytes for t in self.manifest.tensors.values())

    def file_bytes(self, path: str) -> bytes:
        """The decrypted bytes of a small non-tensor file (config, tokenizer)."""
        entry = self.manifest.file(path)
        reader = self._reader(entry)
        with renamed_errors(f"{self.manifest.ref}/{path}"):
            return reader.read(0, entry.size)

    def close(self) -> None:
        """Zero every plaintext buffer and release file keys."""
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        for buffer in self._buffers.values():
            with contextlib.suppress(ValueError):
                buffer.setflags(write=True)
                buffer.fill(0)
        self._buffers.clear()
        self._readers.clear()
        self._stack.close()

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------

    def _reader(self, entry: FileEntry) -> age.AgeReader:
        reader = self._readers.get(entry.path)
        if reader is None:
            reader = self._stack.enter_context(
                self.vault.open_reader(self.manifest, entry, "load (lazy)")
            )
            self._readers[entry.path] = reader
        return reader

    def _load_all(self, into: Mapping[str, Buffer] | None) -> None:
        """Decrypt every shard into its buffer; fresh pages are populated by the decrypting
        threads, each in its own range (see :func:`_decrypt_fresh`)."""
        threads = self.vault.settings.threads
        for entry in self.manifest.files:
            if entry.kind != "safetensors":
                continue
            given = None if into is None else into.get(entry.path)
            buffer = (fresh_buffer(entry.size, populate=False) if given is None
                      else self._caller_buffer(given, entry))
            self._buffers[entry.path] = buffer  # zeroed on close, even after a failure
            with self.vault.open_reader(self.manifest, entry, "load") as reader:
                if given is None and entry.size >= _PREFAULT_MIN:
                    _decrypt_fresh(reader, buffer, threads)
                else:
                    reader.decrypt_into(buffer.data, threads=threads)
            buffer.flags.writeable = False

    def _caller_buffer(self, given: Buffer, entry: FileEntry) -> np.ndarray[Any, Any]:
        """The first ``entry.size`` bytes of a caller's buffer, as a writable uint8 array."""
        obj = f"{self.manifest.ref}/{entry.path}"
        view = memoryview(given)
        if view.readonly:
            raise InvalidInput("the buffer given for this shard is read-only", obj=obj,
                               remedy="pass writable buffers (shard_buffers(manifest))")
        if not view.c_contiguous:
            raise InvalidInput("the buffer given for this shard is not contiguous", obj=obj,
                               remedy="pass contiguous buffers (shard_buffers(manifest))")
        if view.nbytes < entry.size:
            raise InvalidInput(f"the buffer given for this shard holds {view.nbytes} bytes, "
                               f"the shard {entry.size}", obj=obj,
                               remedy="pass buffers from shard_buffers(manifest)")
        return np.frombuffer(view.cast("B"), dtype=np.uint8, count=entry.size)

    def _convert(self, array: np.ndarray[Any, Any], ref: TensorRef) -> Any:
        if self.framework == "numpy":
            return array
        import torch  # the optional extra

        name = _TORCH_DTYPES.get(ref.dtype)
        with _quiet_nonwritable():
            tensor = torch.from_numpy(array)
        if name is not None:
            tensor = tensor.view(getattr(torch, name))
        return tensor


@contextlib.contextmanager
def _quiet_nonwritable() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield


def shard_buffers(manifest: Manifest) -> dict[str, np.ndarray[Any, Any]]:
    """One writable buffer per safetensors shard of ``manifest``, for ``into=`` (pre-faulted).

    Allocate once and pass to every full load of the artifact: decryption then
    writes into memory that is already mapped instead of faulting in fresh pages.
    """
    return {entry.path: fresh_buffer(entry.size) for entry in manifest.files
            if entry.kind == "safetensors"}


def load_weights(
    vault: ShardReaders, manifest: Manifest, *, lazy: bool = False, framework: str = "numpy",
    into: Mapping[str, Buffer] | None = None,
) -> Weights:
    """Open the weights of ``manifest``: all decrypted now, or lazily per tensor.

    ``into`` (full loads only) maps shard paths to the caller's buffers to decrypt
    into (see :func:`shard_buffers`); shards it does not name get fresh buffers.
    ``close()`` zeroes them all: they hold plaintext.
    """
    if into is not None and lazy:
        raise InvalidInput("into= applies to full loads", obj=manifest.ref,
                           remedy="drop lazy=True, or drop into=")
    weights = Weights(vault, manifest, lazy=lazy, framework=framework)
    if not lazy:
        try:
            weights._load_all(into)
        except BaseException:
            weights.close()
            raise
    return weights

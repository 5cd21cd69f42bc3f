"""Full-load buffers: huge-page mappings faulted in by the decrypting threads, correct,
read-only to the caller, zeroed on close and unmapped once dropped."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np
import pytest

from strongroom.crypto import age
from strongroom.errors import PayloadError
from strongroom.vault import loader
from strongroom.vault.loader import fresh_buffer
from strongroom.vault.vault import Vault

from vault_fixtures import make_model

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/smaps"
)
HUGE = 2 << 20


def _mapping(address: int) -> tuple[int, int, str] | None:
    """(start, end, VmFlags) of this process's mapping that holds ``address``, if any."""
    found: tuple[int, int] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            found = (lo, hi) if lo <= address < hi else None
        elif found is not None and line.startswith("VmFlags:"):
            return found[0], found[1], line
    return None


def _own_mapping(start: int, size: int) -> bool:
    """Whether ``[start, start + size)`` lies in mappings of its own: they begin at most
    2 MiB before it and end at most 2 MiB after it (the buffer starts on a 2 MiB boundary;
    segments populated with 4 KiB pages split the mapping)."""
    first, last = _mapping(start), _mapping(start + size - 1)
    return (first is not None and last is not None and 0 <= start - first[0] < HUGE
            and 0 <= last[1] - start - size < HUGE)


def test_an_unpopulated_buffer_is_its_own_huge_page_mapping_and_reads_zero() -> None:
    size = 16 << 20
    buf = fresh_buffer(size, populate=False)
    assert buf.flags.writeable and buf.nbytes == size
    found = _mapping(buf.ctypes.data)
    assert found is not None
    flags = found[2]
    assert buf.ctypes.data % HUGE == 0  # whole huge pages from its first byte
    assert _own_mapping(buf.ctypes.data, size)
    assert " hg" in flags  # MADV_HUGEPAGE: THP in madvise mode gives none without it
    assert not buf.any()  # what the kernel maps in is zeroed
    buf[size // 2] = 7
    assert buf[size // 2] == 7


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_full_load_buffers_are_correct_read_only_zeroed_and_released(
    vault: Vault, model, monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    monkeypatch.setattr(loader, "_PREFAULT_MIN", 0)  # the tiny model's shard gets a mapping
    path, tensors = model
    vault.import_weights(path, "tiny", cipher=cipher)
    w = vault.open_weights("tiny")
    (shard,) = w._buffers.values()
    start, size = shard.ctypes.data, shard.nbytes
    assert _own_mapping(start, size)
    for name, expected in tensors.items():
        got = w[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes(), name
        assert not got.flags.writeable
        with pytest.raises(ValueError):
            got[...] = 0
    held = w["embed.weight"]
    w.close()
    assert not held.any()  # plaintext zeroed on close, even in arrays still held
    del held, got, shard, w
    gc.collect()
    assert not _own_mapping(start, size)  # unmapped: memory released


def test_a_load_that_fails_midway_leaves_no_plaintext_mapped(
    vault: Vault, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "_PREFAULT_MIN", 0)
    path, _ = model
    vault.import_weights(path, "tiny")
    made: list[np.ndarray] = []
    real = loader.fresh_buffer

    def spy(nbytes: int, *, populate: bool = True) -> np.ndarray:
        made.append(real(nbytes, populate=populate))
        return made[-1]

    def fail(self: object, out: object, offset: int = 0, *, threads: int = 2) -> None:
        memoryview(out).cast("B")[:16] = b"plaintext-like.."  # type: ignore[arg-type]
        raise PayloadError("chunk 3 failed", obj="age payload")

    monkeypatch.setattr(loader, "fresh_buffer", spy)
    monkeypatch.setattr(age.AgeReader, "decrypt_into", fail)
    with pytest.raises(PayloadError):
        vault.open_weights("tiny")
    (buf,) = made
    assert not buf.any()  # what was written before the failure was zeroed


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_fresh_shard_split_over_threads_and_segments_is_bit_identical(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    """Each decrypting thread populates and decrypts its range a segment at a time."""
    monkeypatch.setattr(loader, "_PREFAULT_MIN", 0)
    monkeypatch.setattr(loader, "_SEGMENT_ALIGN", 64 << 10)  # ranges of whole chunks
    monkeypatch.setattr(loader, "_SEGMENT", 128 << 10)  # many segments per range
    src = tmp_path / "big.safetensors"
    tensors = make_model(src, big=True)  # a 1.2 MB shard
    vault.import_weights(src, "big", cipher=cipher)
    calls: list[tuple[int, int]] = []
    real = age.AgeReader.decrypt_into

    def counting(self: age.AgeReader, out: object, offset: int = 0, *, threads: int = 2) -> None:
        calls.append((offset, len(memoryview(out))))  # type: ignore[arg-type]
        real(self, out, offset, threads=threads)  # type: ignore[arg-type]

    monkeypatch.setattr(age.AgeReader, "decrypt_into", counting)
    with vault.open_weights("big") as w:
        for name, expected in tensors.items():
            assert w[name].tobytes() == expected.tobytes(), name
    size = vault.manifest("big").files[0].size
    assert sorted(calls)[0][0] == 0 and sum(n for _, n in calls) == size  # covered once
    assert len(calls) > 4 and all(off % (64 << 10) == 0 for off, _ in calls)


def test_large_lazy_tensors_are_populated_and_decrypted_in_segments_too(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lazy tensor of _PREFAULT_MIN or more takes the full load's path, at its own offset."""
    monkeypatch.setattr(loader, "_PREFAULT_MIN", 0)
    monkeypatch.setattr(loader, "_SEGMENT_ALIGN", 64 << 10)
    monkeypatch.setattr(loader, "_SEGMENT", 128 << 10)
    src = tmp_path / "big.safetensors"
    tensors = make_model(src, big=True)
    vault.import_weights(src, "big")
    calls: list[int] = []
    real = loader._decrypt_fresh

    def counting(reader: age.AgeReader, buffer: np.ndarray, threads: int,
                 offset: int = 0) -> None:
        calls.append(offset)
        real(reader, buffer, threads, offset)

    monkeypatch.setattr(loader, "_decrypt_fresh", counting)
    with vault.open_weights("big", lazy=True) as w:
        for name, expected in tensors.items():
            got = w[name]
            assert got.tobytes() == expected.tobytes(), name
            assert got.ctypes.data % HUGE == 0  # a mapping of its own
    assert len(calls) == len(tensors) and any(off % (64 << 10) for off in calls)

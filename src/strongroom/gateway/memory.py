"""Keep decrypted weights out of swap (``mlock``) and out of core dumps (``MADV_DONTDUMP``).

Lock a model's arrays after loading and unlock them before the buffers are freed::

    lock = MemoryLock.lock(model.arrays())
    print(lock.describe())          # says plainly when the OS refused and why
    ...
    lock.release()

``mlock`` needs ``CAP_IPC_LOCK`` or a large enough ``RLIMIT_MEMLOCK``
(``ulimit -l``); when the OS refuses, the gateway still runs but says so at
start-up and in the audit log: do not claim the weights cannot reach swap
unless :attr:`MemoryLock.locked` is true. Swap encryption or no swap at all is
the remedy where locking is not allowed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import resource
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MemoryLock", "memlock_limit"]

_MADV_DONTDUMP = 16  # Linux <asm-generic/mman-common.h>


def _libc() -> Any:
    if not sys.platform.startswith(("linux", "darwin", "freebsd")):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def memlock_limit() -> int | None:
    """The soft ``RLIMIT_MEMLOCK`` in bytes (None when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _page_ranges(arrays: Iterable[np.ndarray[Any, Any]]) -> list[tuple[int, int]]:
    """Merged, page-aligned (start, length) ranges covering every array's bytes."""
    page = mmap.PAGESIZE
    spans = []
    for a in arrays:
        if a.nbytes == 0:
            continue
        start = int(a.__array_interface__["data"][0])
        spans.append((start - start % page, -(-(start + a.nbytes) // page) * page))
    spans.sort()
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in merged]


@dataclass
class MemoryLock:
    """The outcome of locking a set of buffers: what was locked and why not."""

    locked_bytes: int = 0
    wanted_bytes: int = 0
    error: str | None = None
    dontdump: bool = False
    _ranges: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def locked(self) -> bool:
        """True when every byte asked for is locked in RAM."""
        return self.error is None and self.locked_bytes == self.wanted_bytes

    @classmethod
    def lock(cls, arrays: Iterable[np.ndarray[Any, Any]]) -> MemoryLock:
        """``mlock`` the pages under ``arrays`` (and exclude them from core dumps)."""
        ranges = _page_ranges(arrays)
        result = cls(wanted_bytes=sum(n for _, n in ranges))
        libc = _libc()
        if libc is None:
            result.error = f"mlock is not available on {sys.platform}"
            return result
        libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        dontdump = sys.platform.startswith("linux")
        for start, length in ranges:
            if dontdump and libc.madvise(start, length, _MADV_DONTDUMP) != 0:
                dontdump = False
            if libc.mlock(start, length) != 0:
                err = ctypes.get_errno()
                limit = memlock_limit()
                shown = "unlimited" if limit is None else f"{limit} bytes"
                result.error = (
                    f"mlock refused ({os.strerror(err)}): RLIMIT_MEMLOCK is {shown} and "
                    f"{result.wanted_bytes} bytes are needed; raise it (`ulimit -l`, "
                    "LimitMEMLOCK= in systemd) or grant CAP_IPC_LOCK, or run without swap"
                )
                break
            result._ranges.append((start, length))
            result.locked_bytes += length
        result.dontdump = dontdump and bool(ranges)
        return result

    def release(self) -> None:
        """``munlock`` what was locked (call before the buffers are freed)."""
        libc = _libc()
        if libc is not None:
            libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            for start, length in self._ranges:
                libc.munlock(start, length)
        self._ranges.clear()
        self.locked_bytes = 0

    def describe(self) -> str:
        """One line for the operator."""
        mib = self.wanted_bytes / 2**20
        if self.locked:
            dump = ", excluded from core dumps" if self.dontdump else ""
            return f"weights locked in RAM: {mib:.1f} MiB cannot be swapped out{dump}"
        return (f"WARNING: weights NOT locked in RAM ({self.locked_bytes / 2**20:.1f} of "
                f"{mib:.1f} MiB): {self.error}")

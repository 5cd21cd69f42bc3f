"""Spent request nonces shared by the worker processes of one host, in a mapped file.

``strongroom serve --workers N`` on SQLite: every worker maps
``<home>/server-nonces.map`` (mode 0600) and spends a request's nonce in it
under a byte-range lock, so a request replayed to another worker (or to a
worker started later, the file outlives the processes) is refused::

    nonces = SharedNonceTable(home / "server-nonces.map", legacy=home / "server-nonces.db")
    nonces.spend(key_id, nonce, expires, now)   # False: already spent (a replay)

Layout: a 4 KiB header (magic, geometry, a random 32-byte hash key) then
``buckets`` buckets of ``SLOTS`` slots, each slot a 64-bit fingerprint and the
expiry (a double, the time the nonce's window closes). A (key id, nonce)
hashes, with the file's key (BLAKE2b, keyed, so no caller can aim nonces at one
bucket or at another's fingerprint), to one bucket and a fingerprint; a spend
locks that bucket (``fcntl`` byte-range lock against the other workers, a
thread lock against this process's threads), reads its slots, refuses when a
slot holds the fingerprint and has not expired, else writes the first expired
(or never used) slot. Expired slots are reused in place, so nothing is pruned.
A bucket with no free slot refuses the request (401, retry shortly), as the
in-process cache does past its limit. The default 2**15 buckets of 32 slots
(a 16 MiB sparse file) hold a million slots: at 4,000 requests a second (260,000
nonces live in the 65 s window, 8 a bucket on average) a full bucket is less
likely than one in 10**9 a request.

A spend is two system calls (lock, unlock) and a few microseconds of Python,
where the SQLite file it replaces cost a WAL transaction (~17 system calls,
~25-35 us of CPU, its checkpoints' fsyncs on the event loop). Durability is
the page cache's: a worker or ``serve`` restart keeps every spent nonce; an
operating-system crash may lose the last seconds of them, as the SQLite file
(WAL, ``synchronous=NORMAL``, no sync per commit) could. Two 64-bit
fingerprints colliding (a legitimate request refused as a replay) is one chance
in 2**59 a request or less (at most 32 live slots a bucket).

The first time the file is made, the live nonces of the SQLite file earlier
releases kept (``legacy``) are copied in and that file removed, so an upgrade
does not reopen the window for requests spent just before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import secrets
import sqlite3
import struct
import threading
import time
from pathlib import Path

from strongroom.datadir import FILE_MODE
from strongroom.errors import InvalidInput
from strongroom.server.errors import Unauthenticated

__all__ = ["SLOTS", "SharedNonceTable"]

_MAGIC = b"SRNONCE1"
_HEADER = 4096
_HEAD = struct.Struct("<8sII32s")  # magic, buckets, slots a bucket, hash key
#: Slots a bucket.
SLOTS = 32
_SLOT = struct.Struct("<Qd")
_BUCKET = struct.Struct("<" + "Qd" * SLOTS)
_BUCKET_BYTES = _BUCKET.size


class SharedNonceTable:
    """Nonces shared by the worker processes of one host (a mapped file, see the module)."""

    #: spend() never waits on I/O (a lock held for microseconds): fine on the event loop.
    inline = True

    def __init__(self, path: Path, *, buckets: int = 1 << 15, legacy: Path | None = None
                 ) -> None:
        if buckets < 1 or buckets & (buckets - 1):
            raise InvalidInput("the nonce table's bucket count must be a power of two",
                               obj=str(path))
        self.path = path
        self._lock = threading.Lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # workers starting together: one lays the file out
            try:
                head = os.pread(fd, _HEAD.size, 0)
                if len(head) == _HEAD.size and head[:8] == _MAGIC:
                    _, buckets, slots, key = _HEAD.unpack(head)
                    size = os.fstat(fd).st_size
                    if (slots != SLOTS or buckets < 1 or buckets & (buckets - 1)
                            or size != _HEADER + buckets * _BUCKET_BYTES):
                        raise InvalidInput("the nonce table file has another layout",
                                           obj=str(path), remedy="stop strongroom serve, "
                                           "remove the file and start it again")
                    fresh = False
                else:
                    key = secrets.token_bytes(32)
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, _HEADER + buckets * _BUCKET_BYTES)  # sparse, zeroed
                    fresh = True
                self._buckets = buckets
                self._key = key
                self._fd = fd
                self._map = mmap.mmap(fd, _HEADER + buckets * _BUCKET_BYTES,
                                      mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                if fresh:
                    try:
                        if legacy is not None:
                            self._adopt(legacy)
                    except BaseException:
                        self._map.close()
                        raise
                    os.pwrite(fd, _HEAD.pack(_MAGIC, buckets, SLOTS, key), 0)  # valid last
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Unmap the table and close the file (spent nonces stay in it)."""
        with self._lock:
            self._map.close()
            os.close(self._fd)

    def spend(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """Record ``nonce`` of ``key``; False when it is spent and its window still open."""
        digest = hashlib.blake2b(f"{key}\n{nonce}".encode(), digest_size=16,
                                 key=self._key).digest()
        fingerprint, = struct.unpack_from("<Q", digest)
        at = _HEADER + (int.from_bytes(digest[8:], "little") & (self._buckets - 1)) * _BUCKET_BYTES
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, _BUCKET_BYTES, at)
            try:
                slots = _BUCKET.unpack_from(self._map, at)
                free = -1
                for i in range(0, 2 * SLOTS, 2):
                    if slots[i + 1] <= now:
                        if free < 0:
                            free = i
                    elif slots[i] == fingerprint:
                        return False
                if free < 0:
                    raise Unauthenticated("too many requests in the replay window",
                                          obj="nonce cache", remedy="retry shortly")
                _SLOT.pack_into(self._map, at + free * 8, fingerprint, expires)
                return True
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, _BUCKET_BYTES, at)

    def _adopt(self, legacy: Path) -> None:
        """Copy the live nonces of the SQLite file earlier releases kept, then remove it."""
        if not legacy.exists():
            return
        now = time.time()
        try:
            with contextlib.closing(sqlite3.connect(legacy, timeout=10.0)) as conn:
                known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                     "AND name = 'nonces'").fetchone() is not None
                rows = conn.execute("SELECT key, nonce, expires FROM nonces WHERE expires > ?",
                                    (now,)).fetchall() if known else []
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot read the spent nonces of earlier releases: {exc}",
                               obj=str(legacy), remedy="stop strongroom serve, wait 65 s (the "
                               "replay window), remove the file and start it again") from None
        for key, nonce, expires in rows:
            self.spend(str(key), str(nonce), float(expires), now)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{legacy}{suffix}")

"""Blobs as files in a local directory: mmapped zero-copy reads, fsynced all-or-nothing writes.

::

    store = LocalBlobStore(data_dir / "blobs")
    with store.writer(new_blob_id()) as w:
        w.write(ciphertext)
        w.commit()                       # fsync, link into place, fsync the directory
    with store.open(blob_id) as src:     # a LocalBlobSource: read_at() and .buffer are views
        header = src.read_at(0, 4096)

Blobs are immutable once committed: never truncate or rewrite a blob file in
place (a mapped reader would fault); delete it and write a new id.
:meth:`LocalBlobStore.cleanup_temp` removes what crashed writers left.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from strongroom.errors import AlreadyExists, NotFound, StorageError
from strongroom.vault.blobs.base import (
    BLOB_ID_PATTERN,
    ReaderBase,
    WriterBase,
    check_range,
    validate_blob_id,
)

__all__ = ["LocalBlobSource", "LocalBlobStore", "LocalBlobWriter"]

#: Prefix of the temp files a local writer creates next to the final blob.
_TEMP_PREFIX = ".tmp-"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: link() errors meaning "this filesystem has no hard links" (then rename instead).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobSource(ReaderBase):
    """A read-only mmap of a local blob; slices are zero-copy memoryviews."""

    def __init__(self, path: Path, blob_id: str) -> None:
        self.blob_id = blob_id
        self._mmap: mmap.mmap | None = None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound("no such blob", obj=f"blob {blob_id}") from None
        except OSError as err:
            raise StorageError(f"cannot open: {err.strerror}", obj=f"blob {blob_id}") from err
        try:
            size = os.fstat(fd).st_size
            if size > 0:  # an empty file cannot be mmapped
                self._mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as err:
            raise StorageError(f"cannot map: {err.strerror}", obj=f"blob {blob_id}") from err
        finally:
            os.close(fd)  # the mapping keeps its own reference to the file
        self._view = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")
        self._size = size

    @property
    def buffer(self) -> memoryview:
        """The whole blob as one read-only, zero-copy memoryview."""
        return self._view

    def __len__(self) -> int:
        """Size of the blob in bytes."""
        return self._size

    def read_at(self, offset: int, size: int) -> memoryview:
        """A zero-copy view of up to ``size`` bytes from ``offset``."""
        check_range(offset, size)
        return self._view[offset : offset + size]

    def close(self) -> None:
        """Unmap the file (deferred until slices handed out are no longer referenced)."""
        # Views handed to callers keep the mapping exported; it is then unmapped
        # when the last of them is dropped, so a live view never dangles.
        with contextlib.suppress(BufferError):
            self._view.release()
            if self._mmap is not None:
                self._mmap.close()


class LocalBlobWriter(WriterBase):
    """Writes a blob to a 0600 temp file, then fsyncs and links it into place."""

    def __init__(self, store: LocalBlobStore, blob_id: str) -> None:
        super().__init__(blob_id)
        self._final = store.path_of(blob_id)
        self._dir = self._final.parent
        self._temp = self._dir / f"{_TEMP_PREFIX}{blob_id}-{secrets.token_hex(8)}"
        try:
            store.make_dir(self._dir)
            self._fd: int | None = os.open(
                self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE
            )
        except OSError as err:
            raise self._storage_error("cannot create temp file", err) from err

    def _storage_error(self, what: str, err: OSError) -> StorageError:
        remedy = "free disk space, then retry" if err.errno == errno.ENOSPC else None
        return StorageError(
            f"{what} in {self._dir}: {err.strerror or err}",
            obj=f"blob {self.blob_id}",
            remedy=remedy or "check the blob directory is writable, then retry",
        )

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the temp file; on failure abort and raise StorageError."""
        self._check_open()
        assert self._fd is not None
        view = memoryview(data).cast("B")
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as err:
            self.abort()
            raise self._storage_error("write failed", err) from err

    def commit(self) -> None:
        """fsync the file, link it to its final name (never overwriting), fsync the directory."""
        self._check_open()
        assert self._fd is not None
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._publish()
        except FileExistsError:
            self.abort()
            raise AlreadyExists(
                "a blob with this id already exists", obj=f"blob {self.blob_id}"
            ) from None
        except OSError as err:
            self.abort()
            raise self._storage_error("commit failed", err) from err
        self._committed = True
        self._closed = True
        try:
            with contextlib.suppress(FileNotFoundError):  # gone already if renamed
                os.unlink(self._temp)
            _fsync_dir(self._dir)
        except OSError as err:
            raise self._storage_error("commit could not be made durable", err) from err

    def _publish(self) -> None:
        # link() refuses an existing name atomically, unlike rename().
        try:
            os.link(self._temp, self._final)
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            # A filesystem without hard links: check, then rename (a narrow race).
            if self._final.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(self._final)) from err
            os.rename(self._temp, self._final)

    def abort(self) -> None:
        """Close and remove the temp file; a no-op once committed or aborted."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            with contextlib.suppress(OSError):  # closing is best effort; the unlink matters
                os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise self._storage_error("abort could not remove temp file", err) from err


class LocalBlobStore:
    """Blobs as files under ``root/<first two chars of id>/<id>`` (dirs 0700, files 0600)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(
                f"cannot create blob directory: {err.strerror}", obj=str(self.root)
            ) from err

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_of(self, blob_id: str) -> Path:
        """Where the blob with this (validated) id lives."""
        validate_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id

    def make_dir(self, directory: Path) -> None:
        """Create a shard directory (0700), durably, if it does not exist."""
        if directory.is_dir():
            return
        directory.mkdir(mode=_DIR_MODE, exist_ok=True)
        _fsync_dir(directory.parent)

    def writer(self, blob_id: str) -> LocalBlobWriter:
        """Start writing a new blob; AlreadyExists if the id is taken."""
        if self.path_of(blob_id).exists():
            raise AlreadyExists("a blob with this id already exists", obj=f"blob {blob_id}")
        return LocalBlobWriter(self, blob_id)

    def open(self, blob_id: str) -> LocalBlobSource:
        """Map a blob read-only for zero-copy random reads; NotFound if absent."""
        return LocalBlobSource(self.path_of(blob_id), blob_id)

    def size(self, blob_id: str) -> int:
        """Size of a blob in bytes; NotFound if absent."""
        try:
            return self.path_of(blob_id).stat().st_size
        except FileNotFoundError:
            raise NotFound("no such blob", obj=f"blob {blob_id}") from None
        except OSError as err:
            raise StorageError(f"cannot stat: {err.strerror}", obj=f"blob {blob_id}") from err

    def exists(self, blob_id: str) -> bool:
        """Whether a committed blob with this id exists."""
        return self.path_of(blob_id).is_file()

    def delete(self, blob_id: str) -> None:
        """Delete a blob durably; NotFound if absent."""
        path = self.path_of(blob_id)
        try:
            path.unlink()
            _fsync_dir(path.parent)
        except FileNotFoundError:
            raise NotFound("no such blob", obj=f"blob {blob_id}") from None
        except OSError as err:
            raise StorageError(f"cannot delete: {err.strerror}", obj=f"blob {blob_id}") from err

    def list_ids(self) -> list[str]:
        """Ids of every committed blob, sorted (temp files are not listed)."""
        return sorted(
            entry.name
            for shard in self._shards()
            for entry in os.scandir(shard)
            if entry.is_file(follow_symlinks=False) and BLOB_ID_PATTERN.fullmatch(entry.name)
        )

    def cleanup_temp(self, *, older_than: float = 3600.0) -> int:
        """Remove temp files left by crashed writers older than ``older_than`` seconds."""
        # The age limit spares writers that are still running in another process.
        cutoff = time.time() - older_than
        removed = 0
        for shard in self._shards():
            for entry in os.scandir(shard):
                if not entry.name.startswith(_TEMP_PREFIX):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise StorageError(
                        f"cannot remove stale temp file: {err.strerror}", obj=entry.path
                    ) from err
        return removed

    def _shards(self) -> Iterator[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and len(entry.name) == 2:
                yield entry.path


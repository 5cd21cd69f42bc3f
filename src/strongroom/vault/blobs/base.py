"""What every blob store is: the protocols, blob ids, and the writer's shared behaviour.

A blob store (:class:`BlobStore`) keeps age-encrypted files by opaque id;
:class:`BlobWriter` writes one all-or-nothing, :class:`BlobReader` reads one
back at random offsets. A reader is an age :class:`~strongroom.crypto.age.ByteSource`
(``__len__`` and ``read_at``) with ``close()``, so it is handed to the age
reader as it is. The two stores are :mod:`strongroom.vault.blobs.local` and
:mod:`strongroom.vault.blobs.s3`; a new backend implements :class:`BlobStore`
and may subclass :class:`ReaderBase` and :class:`WriterBase`.

Ids come from :func:`new_blob_id`; every store method checks an id with
:func:`validate_blob_id` (``[a-z0-9-]{8,100}``) so it can never name a path
outside the store.
"""

from __future__ import annotations

import re
import secrets
from types import TracebackType
from typing import Protocol, Self

from strongroom.crypto.age import ByteSource
from strongroom.errors import InvalidInput

__all__ = [
    "BLOB_ID_PATTERN",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "ReaderBase",
    "WriterBase",
    "check_range",
    "new_blob_id",
    "validate_blob_id",
]

#: What a blob id may look like; also keeps ids from naming paths outside the store.
BLOB_ID_PATTERN = re.compile(r"[a-z0-9-]{8,100}")


def new_blob_id() -> str:
    """Return a fresh random blob id (32 lowercase hex characters)."""
    return secrets.token_hex(16)


def validate_blob_id(blob_id: str) -> str:
    """Return ``blob_id`` if it is a well-formed id, else raise InvalidInput."""
    if not isinstance(blob_id, str) or BLOB_ID_PATTERN.fullmatch(blob_id) is None:
        raise InvalidInput(
            "not a valid blob id",
            obj=f"blob id {blob_id!r}",
            remedy="blob ids are 8-100 characters of a-z, 0-9 and '-'",
        )
    return blob_id


def check_range(offset: int, size: int) -> None:
    """Refuse a negative ``read_at`` offset or size (InvalidInput)."""
    if offset < 0 or size < 0:
        raise InvalidInput(
            f"negative offset or size (offset={offset}, size={size})",
            remedy="read_at takes a non-negative offset and size",
        )


class BlobReader(ByteSource, Protocol):
    """An open blob: an age ByteSource that is also a context manager releasing its resources."""

    def close(self) -> None:
        """Release what the reader holds (a mapping, a connection)."""
        ...

    def __enter__(self) -> Self:
        """Return the reader itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the reader."""
        ...


class BlobWriter(Protocol):
    """An all-or-nothing write of one blob; a context manager that aborts unless committed."""

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the blob."""
        ...

    def commit(self) -> None:
        """Make the blob durable and visible under its id."""
        ...

    def abort(self) -> None:
        """Remove every trace of the unfinished blob."""
        ...

    def __enter__(self) -> Self:
        """Return the writer itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort unless committed."""
        ...


class BlobStore(Protocol):
    """Where encrypted blobs live, by id."""

    def writer(self, blob_id: str) -> BlobWriter:
        """Start writing a new blob; AlreadyExists if the id is taken."""
        ...

    def open(self, blob_id: str) -> BlobReader:
        """Open a blob for random reads; NotFound if absent."""
        ...

    def size(self, blob_id: str) -> int:
        """Size of a blob in bytes; NotFound if absent."""
        ...

    def exists(self, blob_id: str) -> bool:
        """Whether a committed blob with this id exists."""
        ...

    def delete(self, blob_id: str) -> None:
        """Delete a blob; NotFound if absent."""
        ...

    def list_ids(self) -> list[str]:
        """Ids of every committed blob, sorted."""
        ...


class ReaderBase:
    """Context-manager behaviour shared by both readers: leaving the block closes."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Return the source itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the source."""
        self.close()


class WriterBase:
    """State and context-manager behaviour shared by both writers."""

    def __init__(self, blob_id: str) -> None:
        self.blob_id = blob_id
        self._committed = False
        self._closed = False

    def abort(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            state = "committed" if self._committed else "aborted"
            raise InvalidInput(
                f"writer already {state}",
                obj=f"blob {self.blob_id}",
                remedy="start a new writer for a new blob",
            )

    def __enter__(self) -> Self:
        """Return the writer itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort unless committed."""
        if not self._committed:
            self.abort()


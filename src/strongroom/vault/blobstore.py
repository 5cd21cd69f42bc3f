"""Where encrypted blobs (age files) live: a local directory or an S3 bucket.

A blob is one age-encrypted file, named by an opaque id (``new_blob_id()``).
Only ciphertext ever reaches a blob store; nothing here encrypts, decrypts or
caches plaintext.

Write a blob through a writer, which is all-or-nothing::

    store = blob_store_from_settings(settings)   # or LocalBlobStore(path) / S3BlobStore(...)
    blob_id = new_blob_id()
    with store.writer(blob_id) as w:
        for chunk in age_ciphertext_chunks:
            w.write(chunk)
        w.commit()            # durable and visible only now

Leaving the ``with`` block without ``commit()`` (an exception, or simply
forgetting) aborts: no temp file, object or multipart upload is left behind.
A writer refuses an id that already exists (blobs are never overwritten).

Read one back with random access, as the age STREAM reader wants::

    with store.open(blob_id) as src:
        header = src.read_at(0, 4096)

``open`` returns a ``BlobReader``: a ``BlobSource`` (``__len__`` and
``read_at``, structurally the age ``ByteSource``) with ``close()``.
``LocalBlobSource.buffer`` is a zero-copy view of the whole (mmapped) file;
``S3BlobSource.read_all()`` fetches a whole object in one request.

Blobs are immutable once committed: never truncate or rewrite a local blob
file in place (a mapped reader would fault); delete it and write a new id.
Stores may be shared between threads; a writer or reader belongs to one.

Do not build blob ids from user input without validation: ids must match
``[a-z0-9-]{8,100}``, and every method checks this (``InvalidInput``) so an id
can never name a path outside the store.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from strongroom.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    NotFound,
    StorageError,
)
from strongroom.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "BLOB_ID_PATTERN",
    "S3_PART_SIZE",
    "BlobReader",
    "BlobSource",
    "BlobStore",
    "BlobWriter",
    "LocalBlobSource",
    "LocalBlobStore",
    "LocalBlobWriter",
    "S3BlobSource",
    "S3BlobStore",
    "S3BlobWriter",
    "blob_store_from_settings",
    "new_blob_id",
    "validate_blob_id",
]

#: What a blob id may look like; also keeps ids from naming paths outside the store.
BLOB_ID_PATTERN = re.compile(r"[a-z0-9-]{8,100}")
#: Size of each part of an S3 multipart upload (and the threshold for using one).
S3_PART_SIZE = 8 * 1024 * 1024
#: Prefix of the temp files a local writer creates next to the final blob.
_TEMP_PREFIX = ".tmp-"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: link() errors meaning "this filesystem has no hard links" (then rename instead).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})
_S3_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_S3_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
_S3_CREDENTIALS_REMEDY = (
    "check STRONGROOM_S3_ENDPOINT, STRONGROOM_S3_ACCESS_KEY, STRONGROOM_S3_SECRET_KEY "
    "and that the endpoint is reachable"
)


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


def _check_range(offset: int, size: int) -> None:
    if offset < 0 or size < 0:
        raise InvalidInput(
            f"negative offset or size (offset={offset}, size={size})",
            remedy="read_at takes a non-negative offset and size",
        )


class BlobSource(Protocol):
    """Random read access to a blob (structurally the same as the age ``ByteSource``)."""

    def __len__(self) -> int:
        """Total size of the blob in bytes."""
        ...

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the blob)."""
        ...


class BlobReader(BlobSource, Protocol):
    """An open blob: a BlobSource that is also a context manager releasing its resources."""

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


class _WriterBase:
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


# --------------------------------------------------------------------------- local


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobSource:
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
        _check_range(offset, size)
        return self._view[offset : offset + size]

    def close(self) -> None:
        """Unmap the file (deferred until slices handed out are no longer referenced)."""
        # Views handed to callers keep the mapping exported; it is then unmapped
        # when the last of them is dropped, so a live view never dangles.
        with contextlib.suppress(BufferError):
            self._view.release()
            if self._mmap is not None:
                self._mmap.close()

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


class LocalBlobWriter(_WriterBase):
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


# --------------------------------------------------------------------------- S3


class _S3Target:
    """A bucket on an endpoint, and the translation of botocore errors into StorageError."""

    def __init__(self, client: S3Client, bucket: str, endpoint_url: str, secret_key: str) -> None:
        self.client = client
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self._secret_key = secret_key

    def error(self, what: str, obj: str, err: Exception) -> StorageError:
        """A StorageError naming the object and the endpoint, never the secret key."""
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "?")
            detail = err.response.get("Error", {}).get("Message", "") or code
            detail = f"{code}: {detail}" if detail != code else code
        else:
            detail = type(err).__name__
        message = f"{what} failed at {self.endpoint_url} (bucket {self.bucket}): {detail}"
        if len(self._secret_key) >= 4:  # a shorter "secret" would mangle the message
            message = message.replace(self._secret_key, "***")
        return StorageError(message, obj=obj, remedy=_S3_CREDENTIALS_REMEDY)

    @contextlib.contextmanager
    def errors(self, what: str, obj: str) -> Iterator[None]:
        """Turn any botocore error inside the block into StorageError."""
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            raise self.error(what, obj, err) from None


def _client_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class S3BlobSource:
    """Random reads of one S3 object by ranged GET, pinned to the ETag seen at open."""

    def __init__(self, target: _S3Target, key: str, blob_id: str, size: int, etag: str) -> None:
        self.blob_id = blob_id
        self._target = target
        self._key = key
        self._size = size
        self._etag = etag

    def __len__(self) -> int:
        """Size of the blob in bytes."""
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``, fetched with ``Range: bytes=a-b``."""
        _check_range(offset, size)
        end = min(offset + size, self._size)
        if end <= offset:
            return b""
        return self._get(f"bytes={offset}-{end - 1}", end - offset)

    def read_all(self) -> bytes:
        """The whole blob in one GET."""
        if self._size == 0:
            return b""
        return self._get(None, self._size)

    def _get(self, byte_range: str | None, expected: int) -> bytes:
        obj = f"blob {self.blob_id}"
        client, bucket = self._target.client, self._target.bucket
        try:
            # IfMatch: a blob replaced under an open source fails loudly instead of
            # mixing bytes of two objects.
            if byte_range is None:
                response = client.get_object(Bucket=bucket, Key=self._key, IfMatch=self._etag)
            else:
                response = client.get_object(
                    Bucket=bucket, Key=self._key, IfMatch=self._etag, Range=byte_range
                )
            data = response["Body"].read()
        except ClientError as err:
            if _client_code(err) in _S3_NOT_FOUND:
                raise NotFound("blob was deleted while open", obj=obj) from None
            raise self._target.error(f"read {byte_range or 'all'}", obj, err) from None
        except BotoCoreError as err:
            raise self._target.error(f"read {byte_range or 'all'}", obj, err) from None
        if len(data) != expected:
            raise StorageError(
                f"short read from {self._target.endpoint_url}: got {len(data)} of {expected} bytes",
                obj=obj,
                remedy="retry; if it persists, check the object store",
            )
        return data

    def close(self) -> None:
        """Nothing to release (each read is its own request)."""

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


class S3BlobWriter(_WriterBase):
    """Buffers a blob and uploads it: one PUT if small, else 8 MiB multipart parts."""

    def __init__(self, target: _S3Target, key: str, blob_id: str) -> None:
        super().__init__(blob_id)
        self._target = target
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    @property
    def _obj(self) -> str:
        return f"blob {self.blob_id}"

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``, uploading each full 8 MiB part; on failure abort and raise."""
        self._check_open()
        view = memoryview(data).cast("B")
        while view:
            take = min(S3_PART_SIZE - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == S3_PART_SIZE:
                self._upload_part()

    def _upload_part(self) -> None:
        client, bucket = self._target.client, self._target.bucket
        try:
            if self._upload_id is None:
                created = client.create_multipart_upload(Bucket=bucket, Key=self._key)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            part = client.upload_part(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._buffer),
            )
        except (ClientError, BotoCoreError) as err:
            self.abort()
            raise self._target.error("multipart upload", self._obj, err) from None
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})
        self._buffer.clear()

    def commit(self) -> None:
        """Upload what is buffered and make the object visible; never overwrites."""
        self._check_open()
        client, bucket = self._target.client, self._target.bucket
        try:
            if self._upload_id is None:
                client.put_object(
                    Bucket=bucket, Key=self._key, Body=bytes(self._buffer), IfNoneMatch="*"
                )
            else:
                if self._buffer:
                    self._upload_part()
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    IfNoneMatch="*",
                )
        except (ClientError, BotoCoreError) as err:
            self.abort()
            if isinstance(err, ClientError) and _client_code(err) in {"PreconditionFailed", "412"}:
                raise AlreadyExists("a blob with this id already exists", obj=self._obj) from None
            raise self._target.error("commit", self._obj, err) from None
        self._committed = True
        self._closed = True
        self._buffer = bytearray()

    def abort(self) -> None:
        """Drop the buffer and abort the multipart upload, if one was started."""
        if self._closed:
            return
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with self._target.errors("abort multipart upload", self._obj):
                self._target.client.abort_multipart_upload(
                    Bucket=self._target.bucket, Key=self._key, UploadId=upload_id
                )


class S3BlobStore:
    """Blobs as objects ``<prefix><id>`` in an S3-compatible bucket (created if missing)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str,
        region: str,
        access_key: str,
        secret_key: str,
        prefix: str = "blobs/",
        create_bucket: bool = True,
    ) -> None:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Many S3-compatible stores reject the newer default CRC checksums;
            # integrity is the age MAC's job anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self._target = _S3Target(client, bucket, endpoint_url, secret_key)
        if create_bucket:
            self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client (for administration and tests)."""
        return self._target.client

    def _ensure_bucket(self) -> None:
        client = self._target.client
        obj = f"bucket {self.bucket}"
        try:
            client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as err:
            if _client_code(err) not in _S3_NO_BUCKET:
                raise self._target.error("bucket check", obj, err) from None
        except BotoCoreError as err:
            raise self._target.error("bucket check", obj, err) from None
        try:
            if self.region == "us-east-1":
                client.create_bucket(Bucket=self.bucket)
            else:
                client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={
                        "LocationConstraint": cast("BucketLocationConstraintType", self.region)
                    },
                )
        except ClientError as err:
            if _client_code(err) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._target.error("bucket creation", obj, err) from None
        except BotoCoreError as err:
            raise self._target.error("bucket creation", obj, err) from None

    def key_of(self, blob_id: str) -> str:
        """The object key of the blob with this (validated) id."""
        return self.prefix + validate_blob_id(blob_id)

    def _head(self, blob_id: str) -> tuple[int, str] | None:
        """(size, etag) of the blob, or None if absent."""
        try:
            head = self._target.client.head_object(Bucket=self.bucket, Key=self.key_of(blob_id))
        except ClientError as err:
            if _client_code(err) in _S3_NOT_FOUND:
                return None
            raise self._target.error("head", f"blob {blob_id}", err) from None
        except BotoCoreError as err:
            raise self._target.error("head", f"blob {blob_id}", err) from None
        return head["ContentLength"], head["ETag"]

    def _head_or_raise(self, blob_id: str) -> tuple[int, str]:
        head = self._head(blob_id)
        if head is None:
            raise NotFound(
                f"no such blob in bucket {self.bucket} at {self.endpoint_url}",
                obj=f"blob {blob_id}",
            )
        return head

    def writer(self, blob_id: str) -> S3BlobWriter:
        """Start writing a new blob; AlreadyExists if the id is taken."""
        if self._head(blob_id) is not None:
            raise AlreadyExists("a blob with this id already exists", obj=f"blob {blob_id}")
        return S3BlobWriter(self._target, self.key_of(blob_id), blob_id)

    def open(self, blob_id: str) -> S3BlobSource:
        """Open a blob for ranged reads; NotFound if absent."""
        size, etag = self._head_or_raise(blob_id)
        return S3BlobSource(self._target, self.key_of(blob_id), blob_id, size, etag)

    def size(self, blob_id: str) -> int:
        """Size of a blob in bytes; NotFound if absent."""
        return self._head_or_raise(blob_id)[0]

    def exists(self, blob_id: str) -> bool:
        """Whether a committed blob with this id exists."""
        return self._head(blob_id) is not None

    def delete(self, blob_id: str) -> None:
        """Delete a blob; NotFound if absent."""
        self._head_or_raise(blob_id)
        with self._target.errors("delete", f"blob {blob_id}"):
            self._target.client.delete_object(Bucket=self.bucket, Key=self.key_of(blob_id))

    def list_ids(self) -> list[str]:
        """Ids of every committed blob, sorted."""
        ids: list[str] = []
        with self._target.errors("list", f"bucket {self.bucket}"):
            pages = self._target.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if BLOB_ID_PATTERN.fullmatch(name):
                        ids.append(name)
        return sorted(ids)


# --------------------------------------------------------------------------- factory


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The blob store that ``settings`` configure (``STRONGROOM_BLOB_STORE`` and friends)."""
    kind = settings.blob_store.strip().lower()
    if kind == "local":
        return LocalBlobStore(settings.blob_dir)
    if kind != "s3":
        raise ConfigError(
            f"unknown blob store {settings.blob_store!r}",
            obj="STRONGROOM_BLOB_STORE",
            remedy="set it to 'local' or 's3'",
        )
    required = {
        "STRONGROOM_S3_ENDPOINT": settings.s3_endpoint,
        "STRONGROOM_S3_ACCESS_KEY": settings.s3_access_key,
        "STRONGROOM_S3_SECRET_KEY": settings.s3_secret_key,
    }
    for variable, value in required.items():
        if not value:
            raise ConfigError(
                "must be set when STRONGROOM_BLOB_STORE=s3",
                obj=variable,
                remedy=f"set {variable}, or use STRONGROOM_BLOB_STORE=local",
            )
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return S3BlobStore(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )

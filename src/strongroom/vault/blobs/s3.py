"""Blobs as objects in an S3-compatible bucket: ranged GETs pinned to an ETag, multipart writes.

::

    store = S3BlobStore("strongroom", endpoint_url=url, region="us-east-1",
                        access_key=key_id, secret_key=secret)   # creates the bucket if missing
    with store.writer(new_blob_id()) as w:
        w.write(ciphertext)
        w.commit()             # one PUT (or 8 MiB multipart parts), never overwriting
    with store.open(blob_id) as src:   # an S3BlobSource: each read_at is one ranged GET
        header = src.read_at(0, 4096)

Every botocore error becomes a :class:`~strongroom.errors.StorageError` that
names the endpoint and bucket and never the secret key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from strongroom.errors import AlreadyExists, NotFound, StorageError
from strongroom.vault.blobs.base import (
    BLOB_ID_PATTERN,
    ReaderBase,
    WriterBase,
    check_range,
    validate_blob_id,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3_PART_SIZE", "S3BlobSource", "S3BlobStore", "S3BlobWriter"]

#: Size of each part of an S3 multipart upload (and the threshold for using one).
S3_PART_SIZE = 8 * 1024 * 1024
_S3_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_S3_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
_S3_CREDENTIALS_REMEDY = (
    "check STRONGROOM_S3_ENDPOINT, STRONGROOM_S3_ACCESS_KEY, STRONGROOM_S3_SECRET_KEY "
    "and that the endpoint is reachable"
)


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


class S3BlobSource(ReaderBase):
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
        check_range(offset, size)
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


class S3BlobWriter(WriterBase):
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


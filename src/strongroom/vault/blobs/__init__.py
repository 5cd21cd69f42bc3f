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

``open`` returns a ``BlobReader``: an age :class:`~strongroom.crypto.age.ByteSource`
(``__len__`` and ``read_at``) with ``close()``.
``LocalBlobSource.buffer`` is a zero-copy view of the whole (mmapped) file;
``S3BlobSource.read_all()`` fetches a whole object in one request.

Blobs are immutable once committed: never truncate or rewrite a local blob
file in place (a mapped reader would fault); delete it and write a new id.
Stores may be shared between threads; a writer or reader belongs to one.

Do not build blob ids from user input without validation: ids must match
``[a-z0-9-]{8,100}``, and every method checks this (``InvalidInput``) so an id
can never name a path outside the store.

The package: :mod:`~strongroom.vault.blobs.base` (the protocols and blob ids),
:mod:`~strongroom.vault.blobs.local`, :mod:`~strongroom.vault.blobs.s3`; this
module picks one from the settings (:func:`blob_store_from_settings`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strongroom.errors import ConfigError
from strongroom.settings import Settings
from strongroom.vault.blobs.base import (
    BLOB_ID_PATTERN,
    BlobReader,
    BlobStore,
    BlobWriter,
    new_blob_id,
    validate_blob_id,
)
from strongroom.vault.blobs.local import LocalBlobSource, LocalBlobStore, LocalBlobWriter

if TYPE_CHECKING:
    from strongroom.vault.blobs.s3 import S3_PART_SIZE, S3BlobSource, S3BlobStore, S3BlobWriter

#: The S3 backend's names, imported on first use: boto3 costs ~0.3 s of every CLI
#: command's start-up, and a local deployment never needs it.
_S3_NAMES = frozenset({"S3_PART_SIZE", "S3BlobSource", "S3BlobStore", "S3BlobWriter"})


def __getattr__(name: str) -> Any:
    if name in _S3_NAMES:
        from strongroom.vault.blobs import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BLOB_ID_PATTERN",
    "S3_PART_SIZE",
    "BlobReader",
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
    from strongroom.vault.blobs.s3 import S3BlobStore

    return S3BlobStore(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )

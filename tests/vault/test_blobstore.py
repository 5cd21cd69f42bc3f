"""Blob stores: the local directory and S3 (SeaweedFS) behave the same."""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import AlreadyExists, ConfigError, InvalidInput, NotFound, StorageError
from strongroom.settings import Settings
from strongroom.vault.blobs import (
    S3_PART_SIZE,
    BlobStore,
    LocalBlobSource,
    LocalBlobStore,
    S3BlobSource,
    S3BlobStore,
    blob_store_from_settings,
    new_blob_id,
)

from testsupport import need_service

BAD_IDS = ["../x", "A B", "", "short", "../../etc/passwd", "ab/cdefghij", "x" * 101, "abcdefgh\x00"]


def _s3_credentials() -> tuple[str, str, str]:
    endpoint = need_service("STRONGROOM_TEST_S3_ENDPOINT", "S3 (SeaweedFS)")
    access = need_service("STRONGROOM_TEST_S3_ACCESS_KEY", "S3 credentials")
    secret = need_service("STRONGROOM_TEST_S3_SECRET_KEY", "S3 credentials")
    return endpoint, access, secret


def _drop_bucket(store: S3BlobStore) -> None:
    client = store.client
    for upload in client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []):
        client.abort_multipart_upload(
            Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    for page in pages:
        for item in page.get("Contents", []):
            client.delete_object(Bucket=store.bucket, Key=item["Key"])
    client.delete_bucket(Bucket=store.bucket)


@pytest.fixture
def s3_store() -> Iterator[S3BlobStore]:
    """An S3 blob store on a fresh random bucket, deleted afterwards."""
    endpoint, access, secret = _s3_credentials()
    store = S3BlobStore(
        "sr-test-" + secrets.token_hex(6),
        endpoint_url=endpoint,
        region="us-east-1",
        access_key=access,
        secret_key=secret,
    )
    try:
        yield store
    finally:
        _drop_bucket(store)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    """A local blob store in a fresh directory."""
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blob_store(request: pytest.FixtureRequest) -> BlobStore:
    """Each blob store implementation, empty."""
    store: BlobStore = request.getfixturevalue(f"{request.param}_store")
    return store


def _put(store: BlobStore, data: bytes, *, piece: int = 7919) -> str:
    blob_id = new_blob_id()
    with store.writer(blob_id) as w:
        for i in range(0, len(data), piece):
            w.write(memoryview(data)[i : i + piece])
        w.commit()
    return blob_id


def _read(store: BlobStore, blob_id: str) -> bytes:
    source = store.open(blob_id)
    try:
        return bytes(source.read_at(0, len(source)))
    finally:
        source.close()


def _no_traces(store: BlobStore) -> None:
    """No temp file on disk, no object and no unfinished multipart upload in the bucket."""
    assert store.list_ids() == []
    if isinstance(store, LocalBlobStore):
        assert [p for p in store.root.rglob("*") if p.is_file()] == []
    elif isinstance(store, S3BlobStore):
        assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
        listed = store.client.list_objects_v2(Bucket=store.bucket)
        assert listed.get("Contents", []) == []


# ---------------------------------------------------------------- both stores


def test_new_blob_id_is_random_and_valid(blob_store: BlobStore) -> None:
    ids = {new_blob_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 for i in ids)
    assert not blob_store.exists(next(iter(ids)))


def test_write_commit_read_list_delete(blob_store: BlobStore) -> None:
    data = os.urandom(100_003)
    blob_id = _put(blob_store, data)
    assert blob_store.exists(blob_id)
    assert blob_store.size(blob_id) == len(data)
    assert blob_store.list_ids() == [blob_id]
    assert _read(blob_store, blob_id) == data

    other = _put(blob_store, b"second blob")
    assert blob_store.list_ids() == sorted([blob_id, other])

    blob_store.delete(blob_id)
    assert not blob_store.exists(blob_id)
    assert blob_store.list_ids() == [other]
    with pytest.raises(NotFound, match=blob_id):
        blob_store.delete(blob_id)
    with pytest.raises(NotFound, match=blob_id):
        blob_store.open(blob_id)
    with pytest.raises(NotFound, match=blob_id):
        blob_store.size(blob_id)


def test_empty_blob(blob_store: BlobStore) -> None:
    blob_id = _put(blob_store, b"")
    assert blob_store.size(blob_id) == 0
    source = blob_store.open(blob_id)
    assert len(source) == 0
    assert bytes(source.read_at(0, 10)) == b""
    source.close()


@pytest.fixture
def random_blob(blob_store: BlobStore) -> tuple[str, bytes]:
    """A 65,537-byte random blob in the store: (id, data)."""
    data = os.urandom(65_537)
    return _put(blob_store, data), data


# The fixtures are made once per test and shared by every example: the blob is only read.
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offset=st.integers(0, 70_000), size=st.integers(0, 70_000))
def test_read_at_random_ranges(
    blob_store: BlobStore, random_blob: tuple[str, bytes], offset: int, size: int
) -> None:
    blob_id, data = random_blob
    with blob_store.open(blob_id) as source:
        assert len(source) == len(data)
        assert bytes(source.read_at(offset, size)) == data[offset : offset + size]


def test_negative_range_refused(blob_store: BlobStore) -> None:
    blob_id = _put(blob_store, b"0123456789")
    source = blob_store.open(blob_id)
    with pytest.raises(InvalidInput):
        source.read_at(-1, 2)
    with pytest.raises(InvalidInput):
        source.read_at(0, -2)
    source.close()


def test_abort_leaves_nothing(blob_store: BlobStore) -> None:
    blob_id = new_blob_id()
    w = blob_store.writer(blob_id)
    w.write(b"x" * 1000)
    w.abort()
    w.abort()  # idempotent
    assert not blob_store.exists(blob_id)
    _no_traces(blob_store)
    with pytest.raises(InvalidInput, match="aborted"):
        w.write(b"more")


def test_exception_inside_with_leaves_nothing(blob_store: BlobStore) -> None:
    blob_id = new_blob_id()
    with pytest.raises(RuntimeError, match="boom"), blob_store.writer(blob_id) as w:
        w.write(b"partial ciphertext")
        raise RuntimeError("boom")
    assert not blob_store.exists(blob_id)
    _no_traces(blob_store)


def test_leaving_with_without_commit_aborts(blob_store: BlobStore) -> None:
    blob_id = new_blob_id()
    with blob_store.writer(blob_id) as w:
        w.write(b"never committed")
    assert not blob_store.exists(blob_id)
    _no_traces(blob_store)


def test_write_after_commit_refused(blob_store: BlobStore) -> None:
    blob_id = new_blob_id()
    with blob_store.writer(blob_id) as w:
        w.write(b"abc")
        w.commit()
        with pytest.raises(InvalidInput, match="committed"):
            w.write(b"def")
        with pytest.raises(InvalidInput, match="committed"):
            w.commit()
        w.abort()  # no-op after commit: the blob stays
    assert _read(blob_store, blob_id) == b"abc"


def test_multipart_sized_blob_and_abort(blob_store: BlobStore) -> None:
    data = os.urandom(2 * S3_PART_SIZE + 12_345)
    blob_id = _put(blob_store, data, piece=1 << 20)
    assert blob_store.size(blob_id) == len(data)
    with blob_store.open(blob_id) as source:
        assert bytes(source.read_at(S3_PART_SIZE - 10, 20)) == data[S3_PART_SIZE - 10 :][:20]
        assert bytes(source.read_at(len(data) - 5, 100)) == data[-5:]
    if isinstance(blob_store, S3BlobStore):
        etag = blob_store.client.head_object(
            Bucket=blob_store.bucket, Key=blob_store.key_of(blob_id)
        )["ETag"]
        assert etag.strip('"').endswith("-3")  # three parts: the multipart path ran
    blob_store.delete(blob_id)

    # A failure after a part was uploaded aborts the multipart upload.
    with pytest.raises(RuntimeError), blob_store.writer(new_blob_id()) as w:
        w.write(data[: S3_PART_SIZE + 1])
        raise RuntimeError("interrupted")
    _no_traces(blob_store)


def test_duplicate_id_refused(blob_store: BlobStore) -> None:
    blob_id = _put(blob_store, b"first")
    with pytest.raises(AlreadyExists, match=blob_id):
        blob_store.writer(blob_id)
    assert _read(blob_store, blob_id) == b"first"


def test_racing_writers_only_first_commit_wins(blob_store: BlobStore) -> None:
    blob_id = new_blob_id()
    first, second = blob_store.writer(blob_id), blob_store.writer(blob_id)
    first.write(b"winner")
    second.write(b"loser")
    first.commit()
    with pytest.raises(AlreadyExists, match=blob_id):
        second.commit()
    assert _read(blob_store, blob_id) == b"winner"
    assert blob_store.list_ids() == [blob_id]
    if isinstance(blob_store, LocalBlobStore):
        assert [p.name for p in blob_store.root.rglob(".tmp-*")] == []


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_refused(blob_store: BlobStore, bad: str) -> None:
    for call in (
        blob_store.writer,
        blob_store.open,
        blob_store.size,
        blob_store.exists,
        blob_store.delete,
    ):
        with pytest.raises(InvalidInput, match="not a valid blob id") as info:
            call(bad)
        assert repr(bad) in str(info.value)


# ---------------------------------------------------------------- local store


def test_local_layout_and_modes(local_store: LocalBlobStore) -> None:
    blob_id = _put(local_store, b"ciphertext")
    path = local_store.root / blob_id[:2] / blob_id
    assert path.read_bytes() == b"ciphertext"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(local_store.root.stat().st_mode) == 0o700


def test_local_temp_file_while_writing(local_store: LocalBlobStore) -> None:
    blob_id = new_blob_id()
    with local_store.writer(blob_id) as w:
        w.write(b"abc")
        temps = list(local_store.root.rglob(f".tmp-{blob_id}-*"))
        assert len(temps) == 1
        assert stat.S_IMODE(temps[0].stat().st_mode) == 0o600
        assert local_store.list_ids() == []
        w.commit()
    assert list(local_store.root.rglob(".tmp-*")) == []
    assert local_store.list_ids() == [blob_id]


def test_local_open_is_zero_copy_mmap(local_store: LocalBlobStore) -> None:
    data = os.urandom(10_000)
    blob_id = _put(local_store, data)
    source = local_store.open(blob_id)
    assert isinstance(source, LocalBlobSource)
    assert isinstance(source.buffer, memoryview)
    assert isinstance(source.buffer.obj, mmap.mmap)
    assert source.buffer.readonly
    piece = source.read_at(100, 50)
    assert isinstance(piece, memoryview)
    assert piece.obj is source.buffer.obj  # a slice of the mapping, not a copy
    assert bytes(piece) == data[100:150]
    with pytest.raises(TypeError):
        piece[0] = 1
    source.close()
    assert bytes(piece) == data[100:150]  # a live slice outlives close() safely
    del piece


def test_local_empty_blob_has_buffer(local_store: LocalBlobStore) -> None:
    blob_id = _put(local_store, b"")
    with local_store.open(blob_id) as source:
        assert bytes(source.buffer) == b""


def test_local_full_disk_leaves_no_temp_file(
    local_store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = 0

    def filling_write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, memoryview(data)[:100])

    blob_id = new_blob_id()
    with local_store.writer(blob_id) as w:
        monkeypatch.setattr(os, "write", filling_write)
        with pytest.raises(StorageError, match=blob_id) as info:
            w.write(b"z" * 10_000)
        monkeypatch.undo()
    assert "free disk space" in str(info.value)
    assert not local_store.exists(blob_id)
    assert [p for p in local_store.root.rglob("*") if p.is_file()] == []
    with pytest.raises(InvalidInput):
        w.commit()


def test_local_cleanup_temp(local_store: LocalBlobStore) -> None:
    kept = _put(local_store, b"kept")
    crashed = new_blob_id()
    w = local_store.writer(crashed)
    w.write(b"left behind by a crash")
    temp = next(local_store.root.rglob(".tmp-*"))
    assert local_store.cleanup_temp() == 0  # too young: may be a live writer
    old = temp.stat().st_mtime - 7200
    os.utime(temp, (old, old))
    assert local_store.cleanup_temp() == 1
    assert not temp.exists()
    assert local_store.list_ids() == [kept]
    with pytest.raises(StorageError, match=crashed):
        w.commit()  # its temp file is gone: the commit fails loudly, not silently
    assert not local_store.exists(crashed)


def test_local_store_does_not_list_foreign_files(local_store: LocalBlobStore) -> None:
    blob_id = _put(local_store, b"x")
    (local_store.root / blob_id[:2] / "README").write_text("not a blob")
    (local_store.root / "stray-file-at-root").write_text("not a blob")
    assert local_store.list_ids() == [blob_id]


# ---------------------------------------------------------------- S3 store


@pytest.mark.s3
def test_s3_read_all_and_ranges(s3_store: S3BlobStore) -> None:
    data = os.urandom(5000)
    blob_id = _put(s3_store, data)
    source = s3_store.open(blob_id)
    assert isinstance(source, S3BlobSource)
    assert source.read_all() == data
    assert source.read_at(4990, 100) == data[4990:]
    assert source.read_at(5000, 10) == b""
    assert source.read_at(10_000, 10) == b""
    key = s3_store.key_of(blob_id)
    assert key == f"blobs/{blob_id}"
    assert s3_store.client.head_object(Bucket=s3_store.bucket, Key=key)["ContentLength"] == 5000


@pytest.mark.s3
def test_s3_source_refuses_a_replaced_object(s3_store: S3BlobStore) -> None:
    blob_id = _put(s3_store, b"original ciphertext")
    source = s3_store.open(blob_id)
    s3_store.client.put_object(
        Bucket=s3_store.bucket, Key=s3_store.key_of(blob_id), Body=b"swapped ciphertext!"
    )
    with pytest.raises(StorageError, match="PreconditionFailed"):
        source.read_at(0, 5)


def test_local_filesystem_without_hard_links(
    local_store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    blob_id = _put(local_store, b"renamed into place")
    assert _read(local_store, blob_id) == b"renamed into place"
    with local_store.writer(new_blob_id()) as w:
        w.write(b"x")
        w.commit()
    blob_id = new_blob_id()
    late = local_store.writer(blob_id)
    _put_as(local_store, blob_id, b"first")  # wins the race while `late` is writing
    late.write(b"second")
    with pytest.raises(AlreadyExists, match=blob_id):
        late.commit()
    assert _read(local_store, blob_id) == b"first"
    assert list(local_store.root.rglob(".tmp-*")) == []


def _put_as(store: BlobStore, blob_id: str, data: bytes) -> None:
    with store.writer(blob_id) as w:
        w.write(data)
        w.commit()


@pytest.mark.s3
def test_s3_blob_deleted_while_open(s3_store: S3BlobStore) -> None:
    blob_id = _put(s3_store, b"soon gone")
    source = s3_store.open(blob_id)
    s3_store.delete(blob_id)
    with pytest.raises(NotFound, match=blob_id):
        source.read_at(0, 4)


@pytest.mark.s3
def test_s3_wrong_credentials(s3_store: S3BlobStore) -> None:
    endpoint, access, _ = _s3_credentials()
    wrong_secret = "wrong-secret-" + secrets.token_hex(8)
    with pytest.raises(StorageError) as info:
        S3BlobStore(
            s3_store.bucket,
            endpoint_url=endpoint,
            region="us-east-1",
            access_key=access,
            secret_key=wrong_secret,
        )
    message = str(info.value)
    assert endpoint in message
    assert wrong_secret not in message
    assert "STRONGROOM_S3_SECRET_KEY" in message  # the remedy names what to check

    store = S3BlobStore(
        s3_store.bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key=access,
        secret_key=wrong_secret,
        create_bucket=False,
    )
    blob_id = new_blob_id()
    with pytest.raises(StorageError, match=blob_id) as info:
        store.exists(blob_id)
    assert wrong_secret not in str(info.value)
    assert endpoint in str(info.value)


@pytest.mark.s3
def test_s3_unreachable_endpoint() -> None:
    with pytest.raises(StorageError, match=re.escape("127.0.0.1:9")):
        S3BlobStore(
            "sr-test-unreachable",
            endpoint_url="http://127.0.0.1:9",
            region="us-east-1",
            access_key="a",
            secret_key="never-shown-secret",
        )


@pytest.mark.s3
def test_s3_creates_missing_bucket_and_reuses_existing(s3_store: S3BlobStore) -> None:
    endpoint, access, secret = _s3_credentials()
    buckets = [b["Name"] for b in s3_store.client.list_buckets()["Buckets"]]
    assert s3_store.bucket in buckets
    blob_id = _put(s3_store, b"kept")
    again = S3BlobStore(
        s3_store.bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key=access,
        secret_key=secret,
    )
    assert again.list_ids() == [blob_id]


# ---------------------------------------------------------------- factory


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STRONGROOM_") and not name.startswith("STRONGROOM_TEST_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_factory_local(tmp_path: Path) -> None:
    store = blob_store_from_settings(Settings(home=tmp_path))
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path.resolve() / "blobs"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("s3_endpoint", "STRONGROOM_S3_ENDPOINT"),
        ("s3_access_key", "STRONGROOM_S3_ACCESS_KEY"),
        ("s3_secret_key", "STRONGROOM_S3_SECRET_KEY"),
    ],
)
def test_factory_s3_needs_endpoint_and_credentials(missing: str, variable: str) -> None:
    values: dict[str, Any] = {
        "blob_store": "s3",
        "s3_endpoint": "http://127.0.0.1:9",
        "s3_access_key": "a",
        "s3_secret_key": "b",
    }
    values[missing] = None
    with pytest.raises(ConfigError, match=variable):
        blob_store_from_settings(Settings(**values))


@pytest.mark.usefixtures("clean_env")
def test_factory_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="STRONGROOM_BLOB_STORE"):
        blob_store_from_settings(Settings(blob_store="floppy"))


@pytest.mark.s3
@pytest.mark.usefixtures("clean_env")
def test_factory_s3() -> None:
    endpoint, access, secret = _s3_credentials()
    settings_ = Settings(
        blob_store="s3",
        s3_endpoint=endpoint,
        s3_access_key=access,
        s3_secret_key=secret,
        s3_bucket="sr-test-" + secrets.token_hex(6),
    )
    store = blob_store_from_settings(settings_)
    assert isinstance(store, S3BlobStore)
    try:
        assert store.bucket == settings_.s3_bucket
        assert _read(store, _put(store, b"via settings")) == b"via settings"
    finally:
        _drop_bucket(store)

"""Bad input and tampering: each gives a typed error naming the file and chunk, and no partial state."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.numpy import save_file
from sqlalchemy import select, update

from strongroom.errors import IntegrityError, InvalidInput, StorageError, StrongroomError
from strongroom.store.tables.vault import Artifact
from strongroom.vault.vault import Vault

from vault_fixtures import make_model

CHUNK = 64 * 1024 + 16


def _blob_path(vault: Vault, manifest_file_blob: str) -> Path:
    matches = list((vault.settings.resolved_home / "blobs").rglob(manifest_file_blob))
    assert len(matches) == 1
    return matches[0]


def _imported(vault: Vault, tmp_path: Path, name: str = "m") -> tuple[Path, Path]:
    src = tmp_path / f"{name}.safetensors"
    make_model(src, big=True)  # ~1.2 MB: about 19 chunks
    manifest = vault.import_weights(src, name)
    return src, _blob_path(vault, manifest.files[0].blob)


def _payload_start(blob: bytes) -> int:
    return blob.index(b"\n---") + blob[blob.index(b"\n---") + 1 :].index(b"\n") + 2 + 16


def _assert_no_artifacts_or_blobs(vault: Vault, before: set[str]) -> None:
    assert vault.list_artifacts() == [] or before
    assert set(vault.blobs.list_ids()) == before


def test_bit_flip_in_a_chunk_names_the_chunk(vault: Vault, tmp_path: Path) -> None:
    _, blob = _imported(vault, tmp_path)
    data = bytearray(blob.read_bytes())
    start = _payload_start(bytes(data))
    data[start + 3 * CHUNK + 100] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        vault.open_weights("m")
    assert "chunk 3" in str(info.value)
    with pytest.raises(IntegrityError):
        vault.verify("m")


def test_truncated_blob_is_refused(vault: Vault, tmp_path: Path) -> None:
    _, blob = _imported(vault, tmp_path)
    data = blob.read_bytes()
    start = _payload_start(data)
    blob.write_bytes(data[: start + 5 * CHUNK])  # cut at a chunk boundary
    with pytest.raises(IntegrityError):
        vault.open_weights("m")
    blob.write_bytes(data[:-7])
    with pytest.raises(IntegrityError):
        vault.open_weights("m", lazy=True)["embed.weight"]


def test_reordered_chunks_are_refused(vault: Vault, tmp_path: Path) -> None:
    _, blob = _imported(vault, tmp_path)
    data = bytearray(blob.read_bytes())
    s = _payload_start(bytes(data))
    one, two = bytes(data[s + CHUNK : s + 2 * CHUNK]), bytes(data[s + 2 * CHUNK : s + 3 * CHUNK])
    data[s + CHUNK : s + 2 * CHUNK], data[s + 2 * CHUNK : s + 3 * CHUNK] = two, one
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        vault.open_weights("m")
    assert "chunk 1" in str(info.value)


def test_edited_header_is_refused(vault: Vault, tmp_path: Path) -> None:
    _, blob = _imported(vault, tmp_path)
    data = bytearray(blob.read_bytes())
    data[30] ^= 0x02  # inside the stanza
    blob.write_bytes(bytes(data))
    with pytest.raises(StrongroomError):
        vault.open_weights("m")


def test_swapped_blobs_between_shards_are_refused(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "two"
    src.mkdir()
    make_model(src / "a.safetensors", seed=1, prefix="a.")
    make_model(src / "b.safetensors", seed=2, prefix="b.")
    manifest = vault.import_weights(src, "two")
    a, b = (_blob_path(vault, f.blob) for f in manifest.files)
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(IntegrityError) as info:
        vault.open_weights("two")
    assert "swapped" in str(info.value)


def test_manifest_signed_by_another_key_is_refused(vault: Vault, model) -> None:
    path, _ = model
    manifest = vault.import_weights(path, "tiny")
    forged = manifest.sign(Ed25519PrivateKey.generate())
    with vault.store.session() as s:
        s.execute(update(Artifact).values(manifest_json=forged))
    with pytest.raises(IntegrityError) as info:
        vault.open_weights("tiny")
    assert "manifest of tiny@1" in str(info.value)


def test_manifest_edited_in_the_database_is_refused(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    with vault.store.session() as s:
        env = json.loads(s.scalars(select(Artifact.manifest_json)).one())
    import base64

    payload = json.loads(base64.b64decode(env["payload"]))
    payload["compartments"] = []
    payload["files"][0]["size"] += 1
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with vault.store.session() as s:
        s.execute(update(Artifact).values(manifest_json=json.dumps(env)))
    with pytest.raises(IntegrityError):
        vault.manifest("tiny")


def test_manifest_row_renamed_is_refused(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    with vault.store.session() as s:
        s.execute(update(Artifact).values(name="renamed"))
    with pytest.raises(IntegrityError):
        vault.manifest("renamed")


def test_wrapped_key_edited_in_the_database_cannot_unwrap(vault: Vault, model) -> None:
    path, _ = model
    manifest = vault.import_weights(path, "tiny")
    from strongroom.store.tables.keys import WrappedKey

    with vault.store.session() as s:
        row = s.get(WrappedKey, (manifest.files[0].blob, 1))
        assert row is not None
        forged = bytearray(row.wrapped)
        forged[-1] ^= 0x01
        row.wrapped = bytes(forged)
    with pytest.raises(IntegrityError):
        vault.open_weights("tiny")


def test_not_safetensors_is_refused_without_partial_state(vault: Vault, tmp_path: Path) -> None:
    before = set(vault.blobs.list_ids())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3 + b"not a model at all")
    with pytest.raises(InvalidInput) as info:
        vault.import_weights(junk, "junk")
    assert "junk.safetensors" in str(info.value)
    _assert_no_artifacts_or_blobs(vault, before)


def _raw_safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("header", "data", "why"),
    [
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "outside"),
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 12, "bytes but"),
        (
            {
                "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlaps",
        ),
        ({"t": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unknown dtype"),
        ({"t": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, b"\0" * 4, "hole"),
    ],
)
def test_header_that_lies_about_offsets_is_refused(
    vault: Vault, tmp_path: Path, header: dict, data: bytes, why: str
) -> None:
    before = set(vault.blobs.list_ids())
    bad = tmp_path / "liar.safetensors"
    bad.write_bytes(_raw_safetensors(header, data))
    with pytest.raises(InvalidInput) as info:
        vault.import_weights(bad, "liar")
    assert why in str(info.value)
    _assert_no_artifacts_or_blobs(vault, before)


def test_header_length_past_end_of_file_is_refused(vault: Vault, tmp_path: Path) -> None:
    bad = tmp_path / "long.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(InvalidInput) as info:
        vault.import_weights(bad, "long")
    assert "limit" in str(info.value) or "past the end" in str(info.value)


def test_disk_full_mid_import_leaves_nothing(vault: Vault, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "shards"
    src.mkdir()
    make_model(src / "a.safetensors", seed=1, prefix="a.")
    make_model(src / "b.safetensors", seed=2, big=True, prefix="b.")
    before = set(vault.blobs.list_ids())
    from strongroom.vault import blobs as blobstore

    original = blobstore.LocalBlobStore.writer
    opened: list[str] = []

    def writer(self: blobstore.LocalBlobStore, blob_id: str):  # the second shard hits a full disk
        w = original(self, blob_id)
        opened.append(blob_id)
        if len(opened) == 2:
            real_write = w.write
            calls = {"n": 0}

            def write(data):
                calls["n"] += 1
                if calls["n"] > 1:
                    raise StorageError("No space left on device", obj=f"blob {blob_id}")
                return real_write(data)

            w.write = write
        return w

    monkeypatch.setattr(blobstore.LocalBlobStore, "writer", writer)
    with pytest.raises(StorageError):
        vault.import_weights(src, "full")
    assert len(opened) == 2
    assert vault.list_artifacts() == []
    assert set(vault.blobs.list_ids()) == before
    leftovers = [p for p in (vault.settings.resolved_home / "blobs").rglob("*") if p.is_file()]
    assert leftovers == []


def test_file_that_is_a_directory_without_safetensors_is_refused(
    vault: Vault, tmp_path: Path
) -> None:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text("{}")
    with pytest.raises(InvalidInput):
        vault.import_weights(d, "cfg")


def test_symlink_is_refused(vault: Vault, tmp_path: Path) -> None:
    d = tmp_path / "with-link"
    d.mkdir()
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(d / "m.safetensors"))
    (d / "secret").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput) as info:
        vault.import_weights(d, "link")
    assert "symlink" in str(info.value) or "symbolic link" in str(info.value)

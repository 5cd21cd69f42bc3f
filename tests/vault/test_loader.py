"""Loading in both payload modes: per-import and per-vault cipher, lazy tensors decrypted into
their own arrays, full loads into the caller's buffers, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto import age
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.vault.loader import shard_buffers
from strongroom.vault.manifest import FileEntry, Manifest
from strongroom.vault.shards import MappedSource
from strongroom.vault.vault import Vault

from vault_fixtures import make_model, unsealed_vault


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _blob_intro(vault: Vault, entry: FileEntry) -> bytes:
    return vault.blobs.path_of(entry.blob).read_bytes()[:26]  # type: ignore[attr-defined]


@pytest.mark.parametrize("cipher", age.CIPHERS)
def test_each_mode_imports_records_and_loads_bit_identical(vault: Vault, model,
                                                           cipher: str) -> None:
    path, tensors = model
    manifest = vault.import_weights(path, "tiny", cipher=cipher)
    entry = manifest.files[0]
    assert entry.cipher == cipher
    assert ("cipher" in entry.to_json()) == (cipher != age.CHACHA20_POLY1305)
    assert vault.manifest("tiny").files[0].cipher == cipher  # as signed
    assert _blob_intro(vault, entry).startswith(
        b"age-encryption.org/v1\n" if cipher == age.CHACHA20_POLY1305
        else b"strongroom/aes-256-gcm/v1\n")
    with vault.open_weights("tiny") as full, vault.open_weights("tiny", lazy=True) as lazy:
        for name, expected in tensors.items():
            assert _same(full[name], expected), name
            assert _same(lazy[name], expected), name
            assert not lazy[name].flags.writeable
    imports = [e for e in vault.audit.tail(20) if e.action == "weights.import"]
    assert imports[-1].details is not None and imports[-1].details["cipher"] == cipher


def test_the_vault_setting_picks_the_mode_and_an_import_overrides_it(
        db_url: str, tmp_path: Path) -> None:
    with unsealed_vault(db_url, tmp_path, cipher="aes-256-gcm") as vault:
        src = tmp_path / "m.safetensors"
        make_model(src)
        assert vault.import_weights(src, "a").files[0].cipher == age.AES_256_GCM
        chacha = vault.import_weights(src, "b", cipher=age.CHACHA20_POLY1305)
        assert chacha.files[0].cipher == age.CHACHA20_POLY1305
        with pytest.raises(InvalidInput, match="cipher"):
            vault.import_weights(src, "c", cipher="aes-128-ctr")


def test_full_load_into_caller_buffers_reuses_them_and_close_zeroes_them(vault: Vault,
                                                                         model) -> None:
    path, tensors = model
    vault.import_weights(path, "tiny", cipher=age.AES_256_GCM)
    manifest = vault.manifest("tiny")
    buffers = shard_buffers(manifest)
    (only,) = buffers.values()
    assert only.nbytes == manifest.files[0].size
    for _ in range(2):  # the same memory serves each load
        with vault.open_weights("tiny", into=buffers) as w:
            arr = w["embed.weight"]
            assert _same(arr, tensors["embed.weight"])
            assert np.shares_memory(arr, only)
        assert not only.any()  # plaintext zeroed on close
        assert not arr.any()


def test_into_refuses_buffers_that_cannot_hold_the_shard(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    shard = vault.manifest("tiny").files[0]
    with pytest.raises(InvalidInput, match=f"holds 10 bytes, the shard {shard.size}"):
        vault.open_weights("tiny", into={shard.path: bytearray(10)})
    with pytest.raises(InvalidInput, match="read-only"):
        vault.open_weights("tiny", into={shard.path: bytes(shard.size)})
    with pytest.raises(InvalidInput, match="full loads"):
        vault.open_weights("tiny", lazy=True, into={shard.path: bytearray(shard.size)})


def test_lazy_tensor_straddling_chunks_decrypts_only_its_own_bytes(vault: Vault,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "big.safetensors"
    tensors = make_model(src, big=True)  # embed.weight is 1.2 MB: it spans many chunks
    vault.import_weights(src, "big", cipher=age.AES_256_GCM)
    with vault.open_weights("big", lazy=True) as w:
        arr = w["embed.weight"]
        assert _same(arr, tensors["embed.weight"])
        assert arr.base is not None and arr.base.nbytes == arr.nbytes  # one allocation


def test_a_manifest_naming_an_unknown_cipher_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    entry = FileEntry("m.safetensors", "0" * 32, "safetensors", 1, "0" * 64, 40, "0" * 64,
                      "0" * 64, cipher="rot13")
    envelope = Manifest("m", 1, "weights", "2026-12-01T00:00:00Z", (), (entry,)).sign(key)
    with pytest.raises(IntegrityError, match="unknown cipher"):
        Manifest.verify(envelope, key.public_key(), obj="m@1")


def test_mapped_source_reads_views_and_drops_released_pages(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    source = MappedSource(blob, obj="blob b")
    assert len(source) == 1 << 20
    assert bytes(source.read_at(256 * 3 + 5, 3)) == bytes([5, 6, 7])
    source.release(0, 1 << 20)  # dropped from the resident set, still readable
    assert bytes(source.read_at(1000, 2)) == bytes([1000 % 256, 1001 % 256])
    source.close()
    with pytest.raises(InvalidInput, match="closed"):
        source.read_at(0, 1)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(IntegrityError, match="empty"):
        MappedSource(empty, obj="blob e")

"""Import, list, load and export, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from strongroom.errors import AlreadyExists, InvalidInput, NotFound
from strongroom.vault.vault import Vault

from testsupport import need_service
from vault_fixtures import make_model, unsealed_vault


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_import_then_full_load_is_bit_identical(vault: Vault, model) -> None:
    path, tensors = model
    manifest = vault.import_weights(path, "tiny", compartments=["atlas"])
    assert manifest.ref == "tiny@1"
    assert set(manifest.tensors) == set(tensors)
    assert manifest.compartments == ("atlas",)
    with vault.open_weights("tiny") as w:
        assert len(w) == len(tensors)
        for name, expected in tensors.items():
            assert _equal(w[name], expected), name
            assert not w[name].flags.writeable


def test_lazy_load_decrypts_single_tensors(vault: Vault, model) -> None:
    path, tensors = model
    vault.import_weights(path, "tiny")
    with vault.open_weights("tiny", lazy=True) as w:
        assert _equal(w["layer.0.w"], tensors["layer.0.w"])
        assert _equal(w["scalar"], tensors["scalar"])
        assert w.info("embed.weight").shape == tensors["embed.weight"].shape


def test_directory_of_shards_with_opaque_files(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "shards"
    (src / "tokenizer").mkdir(parents=True)
    a = make_model(src / "model-00001.safetensors", seed=1)
    b = {"other.weight": np.ones((3, 4), dtype=np.float32)}
    save_file(b, str(src / "model-00002.safetensors"))
    (src / "config.json").write_text(json.dumps({"hidden": 384}))
    (src / "tokenizer" / "vocab.txt").write_text("[PAD]\nhello\n")
    manifest = vault.import_weights(src, "sharded")
    assert [f.path for f in manifest.files] == [
        "config.json",
        "model-00001.safetensors",
        "model-00002.safetensors",
        "tokenizer/vocab.txt",
    ]
    assert {f.kind for f in manifest.files} == {"opaque", "safetensors"}
    with vault.open_weights("sharded") as w:
        assert set(w) == set(a) | set(b)
        assert _equal(w["other.weight"], b["other.weight"])
        assert json.loads(w.file_bytes("config.json")) == {"hidden": 384}
        assert w.file_bytes("tokenizer/vocab.txt") == b"[PAD]\nhello\n"


def test_each_shard_has_its_own_blob_and_file_key(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    make_model(src / "model.safetensors", seed=1)
    (src / "a.json").write_text('{"same": true}')
    (src / "b.json").write_text('{"same": true}')  # identical plaintext
    manifest = vault.import_weights(src, "twins")
    a, b = manifest.files[:2]
    assert a.sha256 == b.sha256
    assert a.blob != b.blob and a.ct_sha256 != b.ct_sha256 and a.header_sha256 != b.header_sha256


def test_existing_name_is_refused_unless_new_version(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    blobs_before = set(vault.blobs.list_ids())
    with pytest.raises(AlreadyExists) as info:
        vault.import_weights(path, "tiny")
    assert "--new-version" in str(info.value)
    assert set(vault.blobs.list_ids()) == blobs_before
    assert vault.import_weights(path, "tiny", new_version=True).version == 2
    assert vault.manifest("tiny").version == 2
    assert vault.manifest("tiny", 1).version == 1
    assert [(a.name, a.version) for a in vault.list_artifacts()] == [("tiny", 2), ("tiny", 1)]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-lead", "x" * 101, "sp ace"])
def test_bad_names_are_refused(vault: Vault, model, bad: str) -> None:
    with pytest.raises(InvalidInput):
        vault.import_weights(model[0], bad)
    assert vault.list_artifacts() == []


def test_unknown_artifact_is_not_found(vault: Vault) -> None:
    with pytest.raises(NotFound) as info:
        vault.open_weights("nope")
    assert "weights ls" in str(info.value)


def test_export_writes_identical_files_and_is_audited(vault: Vault, model, tmp_path: Path) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    dest = tmp_path / "out"
    vault.export("tiny", dest, reason="handover to eval")
    assert (dest / "model.safetensors").read_bytes() == path.read_bytes()
    events = [e for e in vault.audit.tail(50) if e.action == "weights.export"]
    assert events and events[-1].reason == "handover to eval"
    with pytest.raises(AlreadyExists):
        vault.export("tiny", dest, reason="again")
    with pytest.raises(InvalidInput):
        vault.export("tiny", tmp_path / "out2", reason="  ")
    assert not (tmp_path / "out2").exists()


def test_no_plaintext_reaches_the_data_directory(vault: Vault, tmp_path: Path) -> None:
    marker = np.frombuffer(b"PLAINTEXT-MARKER-" * 4000, dtype=np.uint8).copy()
    src = tmp_path / "m.safetensors"
    save_file({"marker": marker}, str(src))
    vault.import_weights(src, "marked")
    with vault.open_weights("marked") as w:
        assert w["marker"].tobytes() == marker.tobytes()
    with vault.open_weights("marked", lazy=True) as w:
        assert w["marker"].tobytes()[:17] == b"PLAINTEXT-MARKER-"
    home = vault.settings.resolved_home
    for f in home.rglob("*"):
        if f.is_file():
            assert b"PLAINTEXT-MARKER-" not in f.read_bytes(), f


def test_key_releases_are_audited_per_shard(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    with vault.open_weights("tiny"):
        pass
    releases = [e for e in vault.audit.tail(50) if e.action == "key.release"]
    assert len(releases) == 1
    assert releases[0].object == "tiny@1/model.safetensors"


def test_weights_close_zeroes_buffers(vault: Vault, model) -> None:
    path, _ = model
    vault.import_weights(path, "tiny")
    w = vault.open_weights("tiny")
    arr = w["embed.weight"]
    assert arr.any()
    w.close()
    assert not arr.any()


def test_import_and_load_through_s3(db_url: str, tmp_path: Path, model) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("one backend is enough for the S3 path")
    endpoint = need_service("STRONGROOM_TEST_S3_ENDPOINT", "S3 (SeaweedFS)")
    import os
    import secrets

    path, tensors = model
    with unsealed_vault(
        db_url,
        tmp_path,
        blob_store="s3",
        s3_endpoint=endpoint,
        s3_bucket="sr-" + secrets.token_hex(4),
        s3_access_key=os.environ["STRONGROOM_TEST_S3_ACCESS_KEY"],
        s3_secret_key=os.environ["STRONGROOM_TEST_S3_SECRET_KEY"],
    ) as v:
        v.import_weights(path, "tiny")
        with v.open_weights("tiny") as w:
            assert all(_equal(w[k], t) for k, t in tensors.items())
        with v.open_weights("tiny", lazy=True) as w:
            assert _equal(w["layer.0.w"], tensors["layer.0.w"])
        assert v.verify("tiny").files == 1
        assert not list((tmp_path / "home").rglob("blobs/*"))


class _CountingBlobs:
    """A blob store that counts how often each blob is opened (for reading)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.opens: list[str] = []

    def open(self, blob_id: str):  # type: ignore[no-untyped-def]
        self.opens.append(blob_id)
        return self.inner.open(blob_id)  # type: ignore[attr-defined]

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


@pytest.mark.parametrize("how", ["load", "lazy", "verify"])
def test_one_shard_release_opens_its_blob_once_and_parses_its_header_once(
    vault: Vault, model, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Issue 16: the gate-backed age identity; the blob is opened and its header parsed once."""
    from strongroom.crypto import age

    path, tensors = model
    vault.import_weights(path, "tiny")
    counting = _CountingBlobs(vault.blobs)
    vault.blobs = counting  # type: ignore[assignment]
    headers: list[int] = []
    read_header = age.read_header

    def counted(source):  # type: ignore[no-untyped-def]
        headers.append(1)
        return read_header(source)

    monkeypatch.setattr(age, "read_header", counted)
    blob = vault.manifest("tiny").files[0].blob
    if how == "load":
        with vault.open_weights("tiny") as w:
            assert all(_equal(w[k], t) for k, t in tensors.items())
    elif how == "lazy":
        with vault.open_weights("tiny", lazy=True) as w:
            assert _equal(w["layer.0.w"], tensors["layer.0.w"])
            assert _equal(w["embed.weight"], tensors["embed.weight"])
    else:
        assert vault.verify("tiny").files == 1
    assert counting.opens == [blob]
    assert len(headers) == 1

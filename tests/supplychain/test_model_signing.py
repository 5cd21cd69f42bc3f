"""OpenSSF model-signing interop (both directions with the reference tool) and checked imports."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.supplychain.imports import import_checked, signature_path, write_model_signature
from strongroom.supplychain.signing import (
    hash_directory,
    public_key_pem,
    sign_digests,
    verify_directory,
)
from strongroom.vault.vault import Vault

from vault_fixtures import make_model

TOOL = str(Path(sys.executable).parent / "model_signing")


def _tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(TOOL):
        pytest.skip("model_signing is not installed (pip install model-signing pyopenssl)")
    return subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def publisher(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "pub.key", tmp_path / "pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(public_key_pem(key.public_key()))
    return key, priv, pub


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    make_model(d / "model.safetensors")
    (d / "sub" / "tokenizer.json").write_text('{"v": 1}')
    return d


def test_reference_tool_accepts_our_signature(publisher: tuple, model_dir: Path, tmp_path: Path) -> None:
    key, _, pub = publisher
    sig = tmp_path / "model.sig"
    sig.write_text(sign_digests("model", hash_directory(model_dir), key))
    assert _tool("verify", "key", "--public_key", pub, "--signature", sig, model_dir).returncode == 0
    (model_dir / "sub" / "tokenizer.json").write_text('{"v": 2}')
    assert _tool("verify", "key", "--public_key", pub, "--signature", sig, model_dir).returncode != 0


def test_we_accept_the_reference_tools_signature_and_refuse_changes(
    publisher: tuple, model_dir: Path, tmp_path: Path
) -> None:
    key, priv, _ = publisher
    sig = tmp_path / "ref.sig"
    assert _tool("sign", "key", "--private_key", priv, "--signature", sig, model_dir).returncode == 0
    verify_directory(model_dir, sig.read_text(), key.public_key())
    (model_dir / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"not signed: extra\.bin"):
        verify_directory(model_dir, sig.read_text(), key.public_key())
    (model_dir / "extra.bin").unlink()
    (model_dir / "sub" / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError, match=r"missing: sub/tokenizer\.json"):
        verify_directory(model_dir, sig.read_text(), key.public_key())
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(IntegrityError, match="another public key"):
        verify_directory(model_dir, sig.read_text(), other)


def test_checked_import_verifies_publisher_and_signs_the_version(
    vault: Vault, publisher: tuple, model_dir: Path, tmp_path: Path
) -> None:
    key, _, pub = publisher
    sig = tmp_path / "model.sig"
    sig.write_text(sign_digests("model", hash_directory(model_dir), key))
    manifest = import_checked(vault, model_dir, "signed", publisher_key=pub, signature=sig)
    assert signature_path(vault, manifest.ref).is_file()
    export = tmp_path / "export"
    vault.export("signed", export, reason="interop check")
    write_model_signature(vault, "signed", tmp_path / "vault.sig", tmp_path / "vault.pub")
    result = _tool("verify", "key", "--public_key", tmp_path / "vault.pub",
                   "--signature", tmp_path / "vault.sig", export)
    assert result.returncode == 0, result.stdout + result.stderr
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 8)
    with pytest.raises(IntegrityError, match=r"changed: model\.safetensors"):
        import_checked(vault, model_dir, "signed2", publisher_key=pub, signature=sig)
    assert [a.name for a in vault.list_artifacts()] == ["signed"]
    refused = [e for e in vault.audit.tail(5) if e.action == "weights.import"]
    assert refused[-1].decision == "deny" and refused[-1].object == "signed2"
    assert "changed: model.safetensors" in refused[-1].reason


def test_checked_import_refuses_pickles_unless_converted(vault: Vault, tmp_path: Path) -> None:
    d = tmp_path / "torchy"
    d.mkdir()
    make_model(d / "model.safetensors", prefix="a.")
    (d / "extra.bin").write_bytes(pickle.dumps({"b.w": np.arange(4, dtype=np.float32)}, protocol=2))
    with pytest.raises(InvalidInput, match="--convert"):
        import_checked(vault, d, "torchy")
    denied = [e for e in vault.audit.tail(5) if e.action == "weights.import"]
    assert denied and denied[-1].decision == "deny" and "pickle" in denied[-1].reason
    with pytest.raises(InvalidInput, match="pickle-based"):
        vault.import_weights(d, "torchy")  # the vault's own import scans and audits too
    assert [e.decision for e in vault.audit.tail(5) if e.action == "weights.import"][-1] == "deny"
    manifest = import_checked(vault, d, "torchy", convert=True)
    assert {f.path for f in manifest.files} == {"model.safetensors", "extra.safetensors"}
    with vault.open_weights("torchy") as w:
        assert np.array_equal(w["b.w"], np.arange(4, dtype=np.float32))

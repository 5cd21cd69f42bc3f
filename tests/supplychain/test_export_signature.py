"""``weights export`` signs its output so that outsiders' tools accept it with their defaults.

The export of a model whose directory holds git files (``.gitattributes``) is
checked with the real model-signing package, its Python API and its CLI, both
with default options (``ignore_git_paths`` on), and a changed file is refused.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import model_signing
import pytest

from strongroom.errors import AlreadyExists
from strongroom.supplychain.signing import load_public_key, verify_directory, write_export_signature
from strongroom.vault.vault import Vault

from cli_fixtures import Run, grant_cli, unseal_home
from vault_fixtures import make_model


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Run]:
    run, env = unseal_home(tmp_path / "home", None)  # SQLite: the signature is store-independent
    run.env = env  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        run("seal", ok=False)


def _outsider(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """model-signing's own CLI, as an outsider runs it (no options beyond the required)."""
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _api_verify(dest: Path, sig: Path, pub: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(dest, sig)


def test_export_writes_a_signature_model_signing_accepts_with_defaults(
    cli: Run, tmp_path: Path
) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    make_model(src / "model.safetensors")
    (src / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (src / "sub" / "tokenizer.json").write_text('{"v": 1}')
    cli("weights", "import", src, "--name", "gitted")
    grant_cli(cli.env, "gitted", ("export",))  # type: ignore[attr-defined]
    dest = tmp_path / "plain"
    out = cli("weights", "export", "gitted", "--to", dest, "--reason", "outside eval").stdout
    sig, pub = dest / "model.sig", dest / "model.pub.pem"
    assert f"--public_key {pub} --signature {sig} {dest}" in " ".join(out.split())
    assert (dest / ".gitattributes").is_file()  # the export itself is complete

    statement = json.loads(base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"]))
    assert [r["name"] for r in statement["predicate"]["resources"]] == [
        "model.safetensors", "sub/tokenizer.json"]
    assert set(statement["predicate"]["serialization"]["ignore_paths"]) == {
        ".git", ".gitattributes", ".github", ".gitignore", "model.sig", "model.pub.pem"}

    result = _outsider("verify", "key", "--public_key", pub, "--signature", sig, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    _api_verify(dest, sig, pub)
    verify_directory(dest, sig.read_text(), load_public_key(pub.read_bytes()), signature_path=sig)

    (dest / "sub" / "tokenizer.json").write_text('{"v": 2}')
    tampered = _outsider("verify", "key", "--public_key", pub, "--signature", sig, dest)
    assert tampered.returncode != 0 and "tokenizer.json" in tampered.stderr
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        _api_verify(dest, sig, pub)

    tail = cli("audit", "tail", "-n", "50").stdout
    assert '"action":"weights.export"' in tail and "outside eval" in tail


def test_model_signing_signature_over_git_files_verifies_both_ways(tmp_path: Path) -> None:
    """A directory with .gitattributes: what model_signing signs by default, strongroom accepts."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from strongroom.supplychain.signing import hash_directory, public_key_pem, sign_digests

    d = tmp_path / "m"
    d.mkdir()
    make_model(d / "model.safetensors")
    (d / ".gitattributes").write_text("x\n")
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "k.pem", tmp_path / "p.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(public_key_pem(key.public_key()))
    theirs = tmp_path / "theirs.sig"
    assert _outsider("sign", "key", "--private_key", priv, "--signature", theirs, d).returncode == 0
    verify_directory(d, theirs.read_text(), key.public_key())
    ours = tmp_path / "ours.sig"
    ours.write_text(sign_digests("m", hash_directory(d), key))
    result = _outsider("verify", "key", "--public_key", pub, "--signature", ours, d)
    assert result.returncode == 0, result.stdout + result.stderr
    (d / ".gitattributes").write_text("changed, and unsigned by both tools\n")
    verify_directory(d, ours.read_text(), key.public_key())


def test_an_artifact_holding_its_own_model_sig_is_signed_beside_the_export(
    vault: Vault, tmp_path: Path
) -> None:
    src = tmp_path / "published"
    src.mkdir()
    make_model(src / "model.safetensors")
    (src / "model.sig").write_text("the publisher's signature, part of the artifact\n")
    manifest = vault.import_weights(src, "published")
    dest = vault.export("published", tmp_path / "out" / "plain", reason="handover")
    sig, pub = write_export_signature(manifest, vault.keys, dest)
    assert (sig, pub) == (dest.parent / "plain.model.sig", dest.parent / "plain.model.pub.pem")
    assert (dest / "model.sig").read_text().startswith("the publisher's")  # left as exported
    result = _outsider("verify", "key", "--public_key", pub, "--signature", sig, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    _api_verify(dest, sig, pub)
    with pytest.raises(AlreadyExists, match="overwrite"):
        write_export_signature(manifest, vault.keys, dest)

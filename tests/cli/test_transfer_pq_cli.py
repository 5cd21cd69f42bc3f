"""``strongroom transfer export --pq`` signs the bundle manifest with the sender's ML-DSA-65
key beside Ed25519, and ``transfer import`` verifies it when the sender's .pub pins that key
(real CLI on a real unsealed vault, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from strongroom.keys.identity import Identity

from cli_fixtures import Run, grant_cli
from vault_fixtures import make_model

ENCLAVE = "enclave-b"
BID = "0123456789abcdef0123456789abcdef"


# ~2 min a database (vault init, unseal, an export Grant through the CLI): the one test of the
# CLI flags. The database plays no part in the manifest's signatures, so PostgreSQL runs in
# `make test-slow` only.
@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)],
                         indirect=True)
def test_export_pq_signs_the_manifest_and_import_checks_the_pinned_key(
    unsealed_cli_env: tuple[Run, dict[str, str]], tmp_path: Path,
) -> None:
    run, env = unsealed_cli_env
    make_model(tmp_path / "m.safetensors")
    run("weights", "import", tmp_path / "m.safetensors", "--name", "tiny")
    grant_cli(env, "tiny", ("export",))  # the vault releases the file keys to re-wrap
    run("keys", "new-identity", "--pq", "--name", "sender", "--out", tmp_path / "sender.id")
    run("keys", "new-identity", "--name", "plain", "--out", tmp_path / "plain.id")
    recipient = run("transfer", "keygen", "--out", tmp_path / "transfer.key").stdout.strip()
    run("transfer", "approve-sign", "--action", "transfer.export", "--bundle-id", BID,
        "--artifact", "tiny@1", "--enclave", ENCLAVE, "--out", tmp_path / "ok.dsse")
    export = ["transfer", "export", "tiny", "--enclave", ENCLAVE, "--recipient", recipient,
              "--bundle-id", BID, "--approval", tmp_path / "ok.dsse", "--pq"]

    refused = run(*export, "--to", tmp_path / "no", "--identity", tmp_path / "plain.id", ok=False)
    assert refused.returncode != 0 and "holds no ML-DSA-65 key" in refused.stderr
    assert not (tmp_path / "no").exists()

    run(*export, "--to", tmp_path / "usb", "--identity", tmp_path / "sender.id")
    signatures = json.loads((tmp_path / "usb" / "bundle.dsse").read_text())["signatures"]
    assert sorted(s["keyid"].split(":")[0] for s in signatures)[-1] == "mldsa65"

    # Pinned to another ML-DSA key: refused, naming the missing signature; nothing quarantined.
    other = Identity.generate("sender", pq=True)
    sender = Identity.load(tmp_path / "sender.id")
    impostor = type(sender.public)(sender.public.public_bytes, "sender", other.public.mldsa_bytes)
    (tmp_path / "impostor.pub").write_text(impostor.to_text())
    shutil.copytree(tmp_path / "usb", tmp_path / "usb2")
    bad = run("transfer", "import", tmp_path / "usb2", "--sender-key", tmp_path / "impostor.pub",
              "--transfer-identity", tmp_path / "transfer.key", "--enclave", ENCLAVE, ok=False)
    assert bad.returncode != 0 and "no signature by mldsa65:" in bad.stderr

    good = run("transfer", "import", tmp_path / "usb", "--sender-key",
               tmp_path / "sender.id.pub", "--transfer-identity", tmp_path / "transfer.key",
               "--enclave", ENCLAVE)
    assert "verified, scanned, quarantined" in " ".join(good.stdout.split())

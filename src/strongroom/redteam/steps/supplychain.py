"""Steps against the supply chain: a poisoned pickle at import, a tampered airgap bundle, a
signed model altered after signing."""

from __future__ import annotations

import pickle
import secrets
import shutil
from pathlib import Path
from typing import Any

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import attempt, step
from strongroom.redteam.target import ARTIFACT


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


@step("import_malicious_pickle")
def import_malicious_pickle(ctx: RunContext) -> None:
    """Import a checkpoint whose pickle calls ``os.system`` when loaded."""
    from strongroom.supplychain.imports import import_checked

    src = ctx.target.root / f"evil-{ctx.marker}"
    src.mkdir()
    (src / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload()}, protocol=2))
    ctx.vars["evil_name"] = f"evil-{ctx.marker}"
    ctx.vars["evil_dir"] = src
    attempt(ctx, "import of a poisoned pickle",
         lambda: import_checked(ctx.target.vault, src, f"evil-{ctx.marker}", convert=True))


@step("remove_evil_dir")
def remove_evil_dir(ctx: RunContext) -> None:
    """Cleanup: delete the attacker's model directory."""
    src = ctx.vars.pop("evil_dir", None)
    if isinstance(src, Path):
        shutil.rmtree(src, ignore_errors=True)


@step("tampered_airgap_bundle")
def tampered_airgap_bundle(ctx: RunContext, who: str) -> None:
    """Export an approved bundle, flip one byte of a blob on the media, import it."""
    from strongroom.crypto.age import X25519Identity
    from strongroom.supplychain.airgap import (
        OfficerQuorum,
        TransferRequest,
        export_bundle,
        receive_bundle,
        sign_approval,
    )

    t = ctx.target
    exporter = ctx.person(who)
    transfer = X25519Identity.generate()
    media = t.root / f"usb-{ctx.marker}"
    bundle = media / "bundle"
    req = TransferRequest("transfer.export", secrets.token_hex(16), f"{ARTIFACT}@1", "enclave-b")
    exporter_vault = t.vault_as(exporter)
    export_bundle(exporter_vault, ARTIFACT, bundle, enclave="enclave-b",
                  recipient=transfer.recipient, sender=exporter,
                  approvals=[sign_approval(t.officers[0], req)],
                  approver=OfficerQuorum.from_vault(t.vault), bundle_id=req.bundle_id)
    tampered = media / f"tampered-{ctx.marker}"
    shutil.copytree(bundle, tampered)
    blob = next(p for p in sorted((tampered / "blobs").rglob("*")) if p.is_file())
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    ctx.vars["media"] = media
    attempt(ctx, "import of the tampered bundle",
         lambda: receive_bundle(t.vault, tampered, sender=exporter.public, enclave="enclave-b",
                                identity=transfer))


@step("remove_media")
def remove_media(ctx: RunContext) -> None:
    """Cleanup: delete the removable-media directory."""
    media = ctx.vars.pop("media", None)
    if isinstance(media, Path):
        shutil.rmtree(media, ignore_errors=True)


@step("import_altered_signed_model")
def import_altered_signed_model(ctx: RunContext, who: str = "importer",
                                resigned: bool = False) -> None:
    """A publisher signs a model (OpenSSF model signing); its weights are replaced after
    signing (a poisoned mirror or transfer) and, if ``resigned``, the mirror signs the
    poisoned files with its own key in the publisher's name; ``who`` imports it with the
    publisher's key and the signature that came with it. Live (``host-shell``): on the
    serving host, through its own key agent, as the red-team identity."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from strongroom.redteam.toymodel import make_model_dir
    from strongroom.supplychain.imports import import_checked
    from strongroom.supplychain.signing import hash_directory, sign_digests

    t: Any = ctx.target
    name = f"published-{ctx.marker}"
    src = t.root / name
    model = make_model_dir(src / "model", seed=23)
    publisher = ec.generate_private_key(ec.SECP256R1())
    (src / "model.sig").write_text(sign_digests(name, hash_directory(model), publisher),
                                   encoding="utf-8")
    (src / "publisher.pem").write_bytes(publisher.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    make_model_dir(model, seed=24)  # other weights under the signed names: a poisoned copy
    if resigned:  # the mirror's own signature over the poisoned files, as if the publisher's
        (src / "model.sig").write_text(sign_digests(name, hash_directory(model),
                                                    ec.generate_private_key(ec.SECP256R1())),
                                       encoding="utf-8")
    ctx.vars["evil_name"], ctx.vars["evil_dir"] = name, src

    def go(vault: Any) -> None:
        import_checked(vault, model, name, publisher_key=src / "publisher.pem",
                       signature=src / "model.sig")

    label = "import of a signed model altered after signing"
    if getattr(t, "kind", "") == "live":
        with t.host.vault(t.identity) as vault:
            attempt(ctx, label, lambda: go(vault))
    else:
        attempt(ctx, label, lambda: go(t.vault_as(ctx.person(who))))

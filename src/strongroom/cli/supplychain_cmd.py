"""``strongroom scan|sbom|doctor`` and ``strongroom transfer export|import|approve|keygen|approve-sign``.

(``weights import --publisher-key|--signature|--convert`` checks through the
service: :func:`strongroom.supplychain.imports.import_checked`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.keys.officers import Officers

# Scanners, the vault and the keyring are imported inside the commands.

__all__ = ["register"]

transfer = typer.Typer(help="Airgap transfer bundles: export, import, approve.", no_args_is_help=True)
_out = Console(highlight=False)


def scan(path: Annotated[Path, typer.Argument(help="a model file or directory")]) -> None:
    """Scan a model file or directory; non-zero exit naming the file and global when refused."""
    from strongroom.scanning.scan import scan_path

    report = scan_path(path)
    table = Table("file", "kind", "size", "globals")
    for f in report.files:
        table.add_row(f.path, f.kind, str(f.size), ", ".join(sorted(f.globals)) or "-")
    _out.print(table)
    _out.print(f"[green]ok[/] {len(report.files)} file(s) passed")


def sbom(out: Annotated[Path | None, typer.Option("--out", "-o", help="write here (default stdout)")] = None) -> None:
    """Write a CycloneDX 1.5 SBOM of the installed strongroom and its dependencies."""
    from strongroom.outputs import is_stdout, write_output
    from strongroom.supplychain.sbom import build_sbom

    write_output(out, (json.dumps(build_sbom(), indent=2) + "\n").encode("utf-8"))
    if not is_stdout(out):
        _out.print(f"SBOM written to {out}")


def doctor(
    lock: Annotated[Path, typer.Option("--lock", help="the hash-pinned lock file")] = Path("requirements.lock"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Report installed packages that differ from the lock and other unsafe settings."""
    from strongroom.audit.config import AuditSettings
    from strongroom.keys.config import KeysSettings
    from strongroom.settings import Settings
    from strongroom.supplychain.doctor import run_doctor

    home = Settings().resolved_home
    report = run_doctor(lock=lock, status=_keyring_status(home), keys_settings=KeysSettings(),
                        audit_settings=AuditSettings(), home=home, officers=_officers(home))
    if as_json:
        print(json.dumps([f.__dict__ for f in report.findings], indent=2))
    else:
        for f in report.findings:
            colour = "red" if f.level == "error" else "yellow"
            _out.print(f"[{colour}]{f.level}[/] {f.check}: {f.message} — {f.remedy}")
        _out.print("[green]no errors[/]" if report.ok else "[red]unsafe settings found[/]")
    if not report.ok:
        raise typer.Exit(1)


def _keyring_status(home: Path) -> KeyringStatus | None:
    """The keyring status from the running agent, or None when there is none."""
    from strongroom.errors import NotFound, StrongroomError
    from strongroom.runtime.services import key_service

    try:
        return key_service(home, start=False).status()
    except (StrongroomError, OSError, NotFound):
        return None


def _officers(home: Path) -> Officers | None:
    """The officers pinned in the barrier, from the running agent (None when sealed or none)."""
    from strongroom.errors import NotFound, StrongroomError
    from strongroom.keys.officers import Officers
    from strongroom.runtime.services import key_service

    try:
        return Officers.from_public_keys(key_service(home, start=False).public_keys())
    except (StrongroomError, OSError, NotFound):
        return None


def _sender_identity(path: Path | None) -> Any:
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.identity import Identity

    chosen = path or KeysSettings().identity
    if chosen is None:
        from strongroom.errors import InvalidInput

        raise InvalidInput("no identity to sign the bundle with", obj="--identity",
                           remedy="pass --identity or set STRONGROOM_IDENTITY")
    return Identity.load(Path(chosen))


def _approvals(paths: list[Path] | None) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in paths or []]


def _enclave(value: str | None) -> str:
    import os

    from strongroom.errors import InvalidInput

    enclave = value or os.environ.get("STRONGROOM_ENCLAVE_ID")
    if not enclave:
        raise InvalidInput("this enclave's id is not known", obj="--enclave",
                           remedy="pass --enclave or set STRONGROOM_ENCLAVE_ID")
    return enclave


def _transfer_identity(path: Path) -> Any:
    from strongroom.crypto.age import parse_identities

    ids = parse_identities(path.read_text(encoding="utf-8"))
    if len(ids) != 1:
        from strongroom.errors import InvalidInput

        raise InvalidInput("expected exactly one transfer identity (AGE-SECRET-KEY-PQ-1… or "
                           "AGE-SECRET-KEY-1…)", obj=str(path))
    return ids[0]


@transfer.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="new transfer identity file (0600)")],
    classical: Annotated[bool, typer.Option(
        "--classical", help="an X25519-only key, for a sender that cannot wrap to hybrid keys")] = False,
) -> None:
    """Create this enclave's transfer identity (hybrid ML-KEM-768 + X25519); prints its recipient."""
    from strongroom.crypto.age import X25519Identity
    from strongroom.crypto.age_pq import HybridIdentity
    from strongroom.keys.identity import write_private_file

    ident = X25519Identity.generate() if classical else HybridIdentity.generate()
    write_private_file(out, f"# strongroom transfer identity\n# recipient: {ident.recipient}\n{ident}\n".encode())
    print(ident.recipient)


@transfer.command("approve-sign")
def approve_sign(
    action: Annotated[str, typer.Option("--action", help="transfer.export or transfer.import")],
    bundle_id: Annotated[str, typer.Option("--bundle-id")],
    artifact: Annotated[str, typer.Option("--artifact", help="name@version")],
    enclave: Annotated[str, typer.Option("--enclave", help="destination enclave id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="approval file to write")],
    identity: Annotated[Path | None, typer.Option("--identity", help="officer identity")] = None,
) -> None:
    """An officer signs an approval of one transfer."""
    from strongroom.outputs import write_output
    from strongroom.supplychain.airgap import TransferRequest, sign_approval

    envelope = sign_approval(_sender_identity(identity), TransferRequest(action, bundle_id, artifact, enclave))
    write_output(out, envelope.encode("utf-8"))
    _out.print(f"approval written to {out}")


@transfer.command("export")
def export(
    name: str,
    to: Annotated[Path, typer.Option("--to", help="new bundle directory (removable media)")],
    enclave: Annotated[str, typer.Option("--enclave", help="destination enclave id")],
    recipient: Annotated[str, typer.Option(
        "--recipient", help="destination's transfer recipient: age1pq1… (hybrid) or age1…")],
    bundle_id: Annotated[str, typer.Option("--bundle-id", help="the id the approvals name")],
    approval: Annotated[list[Path] | None, typer.Option("--approval", help="officer approval (repeatable)")] = None,
    threshold: Annotated[int, typer.Option("--threshold", help="officer approvals required")] = 1,
    identity: Annotated[Path | None, typer.Option("--identity", help="sender identity")] = None,
    version: Annotated[int | None, typer.Option("--version")] = None,
    pq: Annotated[bool, typer.Option(
        "--pq", help="require the sender identity's ML-DSA-65 key (keys new-identity --pq): the "
        "manifest carries both signatures, so a future quantum forger cannot fake it")] = False,
) -> None:
    """Write an encrypted, signed transfer bundle for another enclave.

    A sender identity holding an ML-DSA-65 key always signs the manifest with it
    too (receivers that pin only Ed25519 ignore it); ``--pq`` refuses a classical one.
    """
    from strongroom.crypto.age import parse_recipient
    from strongroom.crypto.age_pq import RECIPIENT_PREFIX
    from strongroom.runtime.services import open_vault
    from strongroom.supplychain.airgap import OfficerQuorum, export_bundle

    if not recipient.strip().startswith(RECIPIENT_PREFIX):
        typer.echo("warning: the transfer recipient is classical X25519: a recorded bundle's keys "
                   "fall to a future quantum computer; give the enclave a hybrid key "
                   "(`strongroom transfer keygen`, age1pq1…)", err=True)
    sender = _sender_identity(identity)
    if pq and sender.mldsa_key is None:
        from strongroom.errors import InvalidInput

        raise InvalidInput("the sender identity holds no ML-DSA-65 key", obj="--identity",
                           remedy="sign with an identity made by `strongroom keys new-identity "
                           "--pq`, or drop --pq")
    with open_vault() as vault:
        result = export_bundle(vault, name, to, enclave=enclave, recipient=parse_recipient(recipient),
                               sender=sender, approvals=_approvals(approval),
                               approver=OfficerQuorum.from_vault(vault, threshold),
                               bundle_id=bundle_id, version=version, sender_pq=sender.mldsa_key)
    _out.print(f"bundle {result.bundle_id} of {result.artifact} ({result.files} files) written to "
               f"{result.path} for enclave {enclave}")


@transfer.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="the bundle directory")],
    sender_key: Annotated[Path, typer.Option(
        "--sender-key", help="the sender's pinned public key; a hybrid .pub pins its ML-DSA-65 "
        "key too, and then the manifest must carry both signatures")],
    transfer_identity: Annotated[Path, typer.Option("--transfer-identity", help="this enclave's age identity")],
    enclave: Annotated[str | None, typer.Option("--enclave", help="this enclave's id")] = None,
    approval: Annotated[list[Path] | None, typer.Option("--approval", help="officer approval of the import")] = None,
    threshold: Annotated[int, typer.Option("--threshold")] = 1,
    name: Annotated[str | None, typer.Option("--name", help="artifact name here")] = None,
) -> None:
    """Verify, scan and quarantine a bundle; with enough --approval, admit it at once.

    When the --sender-key file carries an ML-DSA-65 key (keys new-identity --pq),
    a manifest without a valid ML-DSA-65 signature by it is refused.
    """
    from strongroom.keys.identity import PublicIdentity
    from strongroom.runtime.services import open_vault
    from strongroom.supplychain.airgap import OfficerQuorum, admit_bundle, receive_bundle

    sender = PublicIdentity.load(sender_key)
    ident = _transfer_identity(transfer_identity)
    here = _enclave(enclave)
    with open_vault() as vault:
        q = receive_bundle(vault, path, sender=sender, enclave=here, identity=ident,
                           sender_pq=sender.mldsa_key)
        _out.print(f"bundle {q.bundle_id} ({q.artifact}, {q.files} files) verified, scanned, quarantined")
        if approval:
            manifest = admit_bundle(vault, q.bundle_id, sender=sender, enclave=here, identity=ident,
                                    sender_pq=sender.mldsa_key, approvals=_approvals(approval),
                                    approver=OfficerQuorum.from_vault(vault, threshold), name=name)
            _out.print(f"admitted as [bold]{manifest.ref}[/]")


@transfer.command("approve")
def approve(
    bundle_id: str,
    sender_key: Annotated[Path, typer.Option("--sender-key")],
    transfer_identity: Annotated[Path, typer.Option("--transfer-identity")],
    approval: Annotated[list[Path], typer.Option("--approval", help="officer approval (repeatable)")],
    enclave: Annotated[str | None, typer.Option("--enclave")] = None,
    threshold: Annotated[int, typer.Option("--threshold")] = 1,
    name: Annotated[str | None, typer.Option("--name")] = None,
) -> None:
    """Admit a quarantined bundle once a quorum of officers approved it."""
    from strongroom.keys.identity import PublicIdentity
    from strongroom.runtime.services import open_vault
    from strongroom.supplychain.airgap import OfficerQuorum, admit_bundle

    sender = PublicIdentity.load(sender_key)
    with open_vault() as vault:
        manifest = admit_bundle(vault, bundle_id, sender=sender, sender_pq=sender.mldsa_key,
                                enclave=_enclave(enclave), identity=_transfer_identity(transfer_identity),
                                approvals=_approvals(approval),
                                approver=OfficerQuorum.from_vault(vault, threshold), name=name)
    _out.print(f"admitted as [bold]{manifest.ref}[/]")


def register(app: typer.Typer) -> None:
    """Add ``scan``, ``sbom``, ``doctor`` and ``transfer`` to the main app."""
    app.command("scan")(scan)
    app.command("sbom")(sbom)
    app.command("doctor")(doctor)
    app.add_typer(transfer, name="transfer")

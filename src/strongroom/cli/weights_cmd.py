"""``strongroom weights import|ls|show|verify|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from strongroom.cli import render
from strongroom.cli.progress import byte_progress
from strongroom.cli.render import human_bytes

# The vault (SQLAlchemy, boto3, numpy) is imported inside the commands so that
# unrelated commands start quickly.

__all__ = ["register"]

weights = typer.Typer(
    help="Encrypted model weights: import, list, verify, export.", no_args_is_help=True
)
_out = Console(highlight=False)


@weights.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="a .safetensors file or a directory of shards")],
    name: Annotated[str, typer.Option("--name", help="artifact name")],
    compartment: Annotated[
        list[str] | None, typer.Option("--compartment", help="compartment (repeatable)")
    ] = None,
    new_version: Annotated[
        bool, typer.Option("--new-version", help="add a version to an existing name")
    ] = False,
    escrow: Annotated[
        list[str] | None,
        typer.Option("--escrow", help="also encrypt each file key to this age1… recipient"),
    ] = None,
    publisher_key: Annotated[
        Path | None,
        typer.Option("--publisher-key", help="publisher's model-signing public key (PEM)"),
    ] = None,
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="the publisher's model-signing bundle (default: in PATH)"),
    ] = None,
    convert: Annotated[
        bool,
        typer.Option("--convert", help="convert scanned pickle checkpoints to safetensors"),
    ] = False,
) -> None:
    """Scan, then encrypt weights into the vault: one age file and file key per shard."""
    from strongroom.cli import remote

    if remote.active():
        return remote.weights_import(path, name, compartment or [], new_version,
                                     local_only={"--escrow": bool(escrow),
                                                 "--publisher-key": publisher_key is not None,
                                                 "--signature": signature is not None,
                                                 "--convert": convert})
    from strongroom.crypto import age
    from strongroom.runtime.services import open_vault
    from strongroom.vault.importer import collect_files

    recipients = [age.parse_recipient(r) for r in escrow or []]
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    elif path.exists():
        total = path.stat().st_size
    else:
        total = sum(f.size for f in collect_files(path))  # raises the clear NotFound
    options: dict[str, Any] = {
        "compartments": compartment or [],
        "new_version": new_version,
        "escrow": recipients,
    }
    with open_vault() as vault, byte_progress("import", total) as advance:
        if publisher_key or signature or convert:
            from strongroom.cli.supplychain_cmd import import_checked_cli

            manifest = import_checked_cli(
                vault,
                path,
                name,
                publisher_key=publisher_key,
                signature=signature,
                convert=convert,
                progress=advance,
                **options,
            )
        else:
            manifest = vault.import_weights(path, name, progress=advance, **options)
    render.imported(manifest.ref, len(manifest.files), len(manifest.tensors),
                    manifest.total_size)


@weights.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List artifacts and versions."""
    from strongroom.cli import remote

    if remote.active():
        return remote.weights_ls(as_json)
    from strongroom.runtime.services import open_vault

    with open_vault() as vault:
        rows = [render.artifact(r) for r in vault.list_artifacts()]
    render.artifacts(rows, as_json)


@weights.command("show")
def show(
    name: str,
    version: Annotated[int | None, typer.Option("--version")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the verified manifest")] = False,
) -> None:
    """Show an artifact's verified manifest."""
    from strongroom.runtime.services import open_vault

    with open_vault() as vault:
        manifest = vault.manifest(name, version)
    if as_json:
        render.print_json(manifest.to_json())
        return
    _out.print(f"[bold]{manifest.ref}[/] ({manifest.kind}), created {render.stamp(manifest.created)}")
    _out.print(f"compartments: {', '.join(manifest.compartments) or '(none)'}")
    table = Table("file", "kind", "size", "sha256")
    for f in manifest.files:
        table.add_row(f.path, f.kind, human_bytes(f.size), f.sha256[:16] + "…")
    _out.print(table)
    _out.print(
        f"{len(manifest.tensors)} tensors, {human_bytes(manifest.total_size)} in all; signature verified"
    )


@weights.command("verify")
def verify(name: str, version: Annotated[int | None, typer.Option("--version")] = None) -> None:
    """Check every blob, chunk and hash of an artifact against its signed manifest."""
    from strongroom.cli import remote

    if remote.active():
        return remote.weights_verify(name, version)
    from strongroom.runtime.services import open_vault

    with open_vault() as vault:
        manifest = vault.manifest(name, version)
        with byte_progress("verify", manifest.total_size) as advance:
            report = vault.verify(name, version, progress=advance)
    render.verified(report.ref, report.files, report.bytes)


@weights.command("export")
def export(
    name: str,
    to: Annotated[Path, typer.Option("--to", help="new directory for the plaintext files")],
    reason: Annotated[
        str, typer.Option("--reason", help="why a plaintext copy is needed (audited)")
    ],
    version: Annotated[int | None, typer.Option("--version")] = None,
) -> None:
    """Write a plaintext copy of an artifact: an explicit act, recorded in the audit log.

    Beside the files it writes model.sig (the vault's OpenSSF model-signing
    signature) and model.pub.pem (the vault's public key) for outsiders.
    """
    from strongroom.runtime.services import open_vault

    with open_vault() as vault:
        manifest = vault.manifest(name, version)
        with byte_progress("export", manifest.total_size) as advance:
            dest = vault.export(name, to, reason=reason, version=version, progress=advance)
        from strongroom.supplychain.signing import write_export_signature

        sig, pub = write_export_signature(manifest, vault.keys, dest)
    _out.print(f"exported {manifest.ref} in plaintext to {dest} (recorded in the audit log)")
    _out.print(f"signed: {sig} (OpenSSF model-signing), vault public key: {pub}; anyone can check "
               f"with: model_signing verify key --public_key {pub} --signature {sig} {dest}",
               soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``weights`` to the main app."""
    app.add_typer(weights, name="weights")

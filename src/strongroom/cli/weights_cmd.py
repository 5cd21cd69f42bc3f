"""``strongroom weights import|ls|show|verify|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.cli.placement import service
from strongroom.cli.progress import byte_progress

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
    cipher: Annotated[
        str | None,
        typer.Option("--cipher", help="payload cipher: chacha20-poly1305 (age) or aes-256-gcm "
                     "(FIPS-approved); default STRONGROOM_CIPHER"),
    ] = None,
) -> None:
    """Scan, then encrypt weights into the vault: one age file and file key per shard."""
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        total = path.stat().st_size if path.is_file() else 0
    with service() as svc, byte_progress("import", total) as advance:
        out = svc.weights_import(path, name, compartments=compartment or [],
                                 new_version=new_version, escrow=escrow or [],
                                 publisher_key=publisher_key, signature=signature,
                                 convert=convert, progress=advance, cipher=cipher)
    render.imported(out["ref"], out["files"], out["tensors"], out["bytes"])


@weights.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List artifacts and versions."""
    with service() as svc:
        render.artifacts(svc.weights_ls(), as_json)


@weights.command("show")
def show(
    name: str,
    version: Annotated[int | None, typer.Option("--version")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the verified manifest")] = False,
) -> None:
    """Show an artifact's verified manifest."""
    with service() as svc:
        manifest = svc.weights_show(name, version)
    render.manifest(manifest, as_json)


@weights.command("verify")
def verify(name: str, version: Annotated[int | None, typer.Option("--version")] = None) -> None:
    """Check every blob, chunk and hash of an artifact against its signed manifest."""
    with service() as svc:
        total = render.manifest_size(svc.weights_show(name, version))
        with byte_progress("verify", total) as advance:
            report = svc.weights_verify(name, version, progress=advance)
    render.verified(report["ref"], report["files"], report["bytes"])


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
    with service() as svc:
        total = render.manifest_size(svc.weights_show(name, version))
        with byte_progress("export", total) as advance:
            out = svc.weights_export(name, to, reason=reason, version=version,
                                     progress=advance)
    _out.print(f"exported {out['ref']} in plaintext to {out['dest']} (recorded in the audit log)")
    sig, pub, dest = out["signature"], out["public_key"], out["dest"]
    _out.print(f"signed: {sig} (OpenSSF model-signing), vault public key: {pub}; anyone can check "
               f"with: model_signing verify key --public_key {pub} --signature {sig} {dest}",
               soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``weights`` to the main app."""
    app.add_typer(weights, name="weights")

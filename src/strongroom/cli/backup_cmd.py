"""``strongroom backup create|verify|restore|check``: signed ciphertext backups and restore drills.

``create`` runs on an unsealed vault host (the vault's manifest key signs the
backup); ``verify`` needs no vault; ``restore`` writes a new data directory and
leaves it sealed; ``check``, after the custodians unseal it, verifies the
audit log and every artifact before ``serve`` accepts the directory. The logic
is :mod:`strongroom.runtime.backup`; docs/operations.md ("Backup and restore").
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from strongroom.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["register"]

backup_app = typer.Typer(help="Signed backups of the vault (ciphertext only) and their restore.",
                         no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

KeyOpt = Annotated[
    str | None,
    typer.Option("--manifest-key", help="the vault's manifest key (base64), pinned; default: "
                 "STRONGROOM_MANIFEST_KEY, else the key the backup names (integrity only until "
                 "`backup check`)"),
]


def _pinned(text: str | None) -> Ed25519PublicKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.crypto.ed25519 import checked

    text = text or os.environ.get("STRONGROOM_MANIFEST_KEY")
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidInput("not an Ed25519 public key in base64", obj="--manifest-key",
                           remedy="give the key `strongroom keys public` prints for "
                           "'manifest'") from exc
    return checked(key, obj="--manifest-key")


@backup_app.command("create")
def create(
    to: Annotated[Path, typer.Option("--to", help="new directory for the backup")],
) -> None:
    """Snapshot the database, copy the blobs (ciphertext) and sign the inventory."""
    from strongroom.runtime.backup import create_backup
    from strongroom.runtime.services import open_vault
    from strongroom.settings import Settings

    home = Settings().resolved_home
    with open_vault() as vault:
        report = create_backup(vault, home, to)
    _out.print(f"backup {report.backup_id} written to {report.path}: {report.files} files "
               f"({report.bytes} bytes), {report.blobs} blobs, audit log at {report.audit_size} "
               "entries; signed with the vault's manifest key", markup=False)


@backup_app.command("verify")
def verify(
    backup: Annotated[Path, typer.Argument(help="the backup directory")],
    manifest_key: KeyOpt = None,
) -> None:
    """Check a backup's signature and every file's hash; no vault needed."""
    from strongroom.runtime.backup import verify_backup

    pinned = _pinned(manifest_key)
    statement = verify_backup(backup, pinned)
    how = "the pinned manifest key" if pinned else "the key it names (pin it with --manifest-key)"
    _out.print(f"ok: backup {statement['backup_id']} of {statement['created']}, "
               f"{len(statement['files'])} files and {len(statement['blobs'])} blobs match, "
               f"signed by {statement['signer']['key_id']} ({how})", markup=False)


@backup_app.command("restore")
def restore(
    from_: Annotated[Path, typer.Option("--from", help="the backup directory")],
    to: Annotated[Path, typer.Option("--to", help="the new (empty) data directory")],
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="where the database goes (default: SQLite in --to; a "
        "PostgreSQL backup needs an empty schema of the dumped name)")] = None,
    manifest_key: KeyOpt = None,
) -> None:
    """Verify, then restore into a new data directory; the vault stays sealed."""
    from strongroom.runtime.backup import restore_backup

    statement = restore_backup(from_, to, database_url, _pinned(manifest_key))
    schema = statement["restored_schema"]
    upgrade = ""
    if schema["pending"]:
        upgrade = (f"Its database is at schema revision {', '.join(schema['from'])}, older than "
                   f"this strongroom's {', '.join(schema['to'])} (the backup was made by "
                   f"strongroom {statement.get('strongroom', '?')}): first `strongroom db "
                   "upgrade` on it (STRONGROOM_HOME set to it), then ")
    _out.print(f"restored backup {statement['backup_id']} into {to.expanduser().absolute()} "
               f"(sealed). Next: {upgrade or ''}the custodians unseal it (`strongroom unseal`), "
               "then `strongroom backup check`; serve refuses the directory until the check "
               "passed", markup=False)


@backup_app.command("check")
def check() -> None:
    """After unsealing a restored vault: audit verify and every artifact's blobs, then allow serve."""
    from strongroom.runtime.backup import check_restore
    from strongroom.runtime.services import open_vault
    from strongroom.settings import Settings

    home = Settings().resolved_home
    with open_vault() as vault:
        report = check_restore(vault, home)
    _out.print(f"ok: {report.audit}; {report.artifacts} artifacts, {report.blobs} blobs match "
               "their signed manifests; this data directory may serve", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``backup`` to the main app."""
    app.add_typer(backup_app, name="backup")

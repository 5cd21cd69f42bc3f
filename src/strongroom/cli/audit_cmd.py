"""``strongroom audit``: read, prove, verify and checkpoint the audit log.

``verify-checkpoint`` and ``verify-proof`` work offline, with nothing but the
files and verifier key strings: that is what an outsider runs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from strongroom.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

# The audit modules (SQLAlchemy, the witness's HTTP stack) are imported inside
# the commands: importing them here would slow every `strongroom` command.

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

LogKeyOpt = Annotated[str, typer.Option("--log-key", help="log verifier key <name>+<id>+<key>")]
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option("--witness-key", help="trusted witness verifier key (repeatable)"),
]
QuorumOpt = Annotated[int, typer.Option("--quorum", min=0, help="witness cosignatures required")]


@contextlib.contextmanager
def open_log() -> Iterator[AuditLog]:
    """The configured log, signing checkpoints through the key agent (vault must be unsealed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.audit.config import AuditSettings
    from strongroom.keys.service import key_service
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    home = settings.resolved_home
    keys = key_service(home)
    public = Ed25519PublicKey.from_public_bytes(keys.public_keys()["checkpoint"])
    store = Store.open(settings.resolved_database_url)
    try:
        log = AuditSettings().open_log(
            store,
            (public, lambda message: keys.sign("checkpoint", message)),
            anchor_path=home / "audit" / "latest-checkpoint",
        )
        try:
            yield log
        finally:
            log.close()
    finally:
        store.close()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read file ({exc.strerror})", obj=str(path)) from exc


@audit_app.command()
def tail(n: Annotated[int, typer.Option("-n", min=1, help="how many entries")] = 20) -> None:
    """Print the last entries as JSON lines."""
    from strongroom.cli import remote

    if remote.active():
        return remote.audit_tail(n)
    with open_log() as log:
        for event in log.tail(n):
            _out.print(event.body.decode(), markup=False)


@audit_app.command()
def show(index: int) -> None:
    """Print one entry (pretty JSON)."""
    with open_log() as log:
        _out.print(json.dumps(log.event(index).to_dict(), indent=2, ensure_ascii=False),
                   markup=False)


@audit_app.command()
def prove(
    index: int,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to a file")] = None,
) -> None:
    """Print an inclusion proof checkable with only the checkpoint and the log key."""
    with open_log() as log:
        text = log.prove(index).to_text()
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@audit_app.command()
def checkpoint() -> None:
    """Sign a checkpoint at the current size, push it to the witnesses, print it."""
    from strongroom.cli import remote

    if remote.active():
        return remote.audit_checkpoint()
    with open_log() as log:
        typer.echo(log.checkpoint(), nl=False)


@audit_app.command()
def verify(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="a checkpoint kept outside the database (repeatable)"),
    ] = None,
) -> None:
    """Replay the whole log against the stored checkpoints; name the first divergence."""
    trusted = [_read(p) for p in checkpoint or []]
    with open_log() as log:
        report = log.verify(trusted)
        _out.print(f"[green]ok[/]: {report.summary()}")
        if report.latest_checkpoint:
            typer.echo(report.latest_checkpoint, nl=False)


@audit_app.command("key")
def key() -> None:
    """Print the log's verifier key (give it to auditors and witnesses)."""
    with open_log() as log:
        typer.echo(log.signer.vkey)


@audit_app.command("verify-checkpoint")
def verify_checkpoint(
    file: Path,
    log_key: LogKeyOpt,
    witness_key: WitnessOpt = None,
    quorum: QuorumOpt = 0,
) -> None:
    """Check a signed checkpoint offline; non-zero exit, saying why, when it fails."""
    from strongroom.audit.checkpoint import open_checkpoint

    opened = open_checkpoint(
        _read(file), log_key=log_key, witness_keys=witness_key or [], quorum=quorum
    )
    cp = opened.checkpoint
    _out.print(f"[green]ok[/]: {cp.origin} size {cp.size}, cosigned by "
               f"{', '.join(opened.cosigners) or 'no trusted witness'}"
               + (f"; ignored {len(opened.ignored)} unknown signature(s)" if opened.ignored else ""))


@audit_app.command("verify-proof")
def verify_proof(
    file: Path,
    log_key: LogKeyOpt,
    witness_key: WitnessOpt = None,
    quorum: QuorumOpt = 0,
) -> None:
    """Check an inclusion proof offline and print the proven entry."""
    from strongroom.audit.log import InclusionProof

    event = InclusionProof.parse(_read(file)).verify(log_key, witness_key or [], quorum)
    _out.print(f"[green]ok[/]: entry {event.index} is in the log", markup=True)
    _out.print(event.body.decode(), markup=False)


@audit_app.command("hash")
def hash_value(value: str) -> None:
    """Print the HMAC a secret value is stored as (to search the log for it)."""
    with open_log() as log:
        typer.echo(log.redactor.hmac(value))


@audit_app.command("check-value")
def check_value(index: int, field: str, value: str) -> None:
    """Check a known value against a redacted field of an entry."""
    with open_log() as log:
        if not log.check_value(index, field, value):
            raise NotFound(f"field {field!r} of entry {index} does not match the value")
    _out.print(f"[green]match[/]: field {field!r} of entry {index}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(audit_app, name="audit")

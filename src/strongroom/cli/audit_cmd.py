"""``strongroom audit``: read, prove, verify and checkpoint the audit log.

``verify-checkpoint``, ``verify-note`` and ``verify-proof`` work offline, with
nothing but the files and verifier key strings: that is what an outsider runs,
on this log's notes or any other log's (``sum.golang.org``, a witness's).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from strongroom.cli.placement import service
from strongroom.errors import IntegrityError, InvalidInput, NotFound
from strongroom.outputs import write_output
from strongroom.service.embedded import open_log

# The audit modules (SQLAlchemy, the witness's HTTP stack) are imported inside
# the commands: importing them here would slow every `strongroom` command.
# open_log: the local log, for the host-only commands (hash, check-value, key).
__all__ = ["audit_app", "open_log", "register"]

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

LogKeyOpt = Annotated[str, typer.Option("--log-key", help="log verifier key <name>+<id>+<key>")]
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option("--witness-key", help="trusted witness verifier key (repeatable)"),
]
QuorumOpt = Annotated[int, typer.Option("--quorum", min=0, help="witness cosignatures required")]
# Remedies for malformed input, by the start of the error message.
_MALFORMED = {
    "malformed signed note": "a signed note is UTF-8 text, a blank line, then lines "
    "'— <key name> <base64 signature>'; give the whole note, byte for byte as its signer "
    "published it",
    "malformed checkpoint": "a checkpoint's text is its origin, tree size and base64 root hash, "
    "one a line; to check a signed note that is not a checkpoint, use `audit verify-note`",
}
_VKEY_FORMAT = "give the verifier key as <name>+<8 hex key ID>+<base64 key>, as its owner publishes it"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read file ({exc.strerror})", obj=str(path),
                           remedy="check the path and that you may read the file") from exc


@audit_app.command()
def tail(
    n: Annotated[int, typer.Option("-n", min=1, help="how many entries")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON array")] = False,
) -> None:
    """Print the last entries as JSON lines, each exactly as recorded."""
    from strongroom.cli import render

    with service() as svc:
        render.audit_entries(svc.audit_tail(n), as_json)


@audit_app.command()
def show(index: int) -> None:
    """Print one entry (pretty JSON)."""
    with service() as svc:
        entry = svc.audit_show(index)
    _out.print(json.dumps(entry, indent=2, ensure_ascii=False, sort_keys=True), markup=False)


@audit_app.command()
def prove(
    index: int,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to a file")] = None,
) -> None:
    """Print an inclusion proof checkable with only the checkpoint and the log key."""
    with service() as svc:
        text = svc.audit_prove(index)
    write_output(out, text.encode("utf-8"))


@audit_app.command()
def checkpoint() -> None:
    """Sign a checkpoint at the current size, push it to the witnesses, print it."""
    with service() as svc:
        typer.echo(svc.audit_checkpoint(), nl=False)


@audit_app.command()
def verify(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="a checkpoint kept outside the database (repeatable)"),
    ] = None,
) -> None:
    """Replay the whole log against its checkpoints, the high-water file and the witnesses.

    Names the first divergence; a log shorter than (or not extending) what was
    signed or witnessed names the entries that are gone.
    """
    trusted = [_read(p) for p in checkpoint or []]
    with service() as svc:
        report = svc.audit_verify(trusted)
    _out.print(f"[green]ok[/]: {report['summary']}; extends {report['kept_outside']} "
               "checkpoint(s) kept outside the database (high-water file, witnesses)")
    if report["latest_checkpoint"]:
        typer.echo(report["latest_checkpoint"], nl=False)


@audit_app.command("key")
def key() -> None:
    """Print the log's verifier key (give it to auditors and witnesses)."""
    with open_log() as log:
        typer.echo(log.signer.vkey)


@contextlib.contextmanager
def _about(file: Path) -> Iterator[None]:
    """Name ``file`` in integrity errors that do not say what they are about."""
    try:
        yield
    except IntegrityError as exc:
        if exc.obj:
            raise
        prefix = exc.message.partition(":")[0]
        remedy = _MALFORMED.get(prefix, exc.remedy)
        raise type(exc)(exc.message, obj=str(file), remedy=remedy) from exc


def _read_note(file: Path) -> str:
    """The file's text, refused (naming the file) when it is not a signed note at all."""
    from strongroom.crypto.note import parse_note

    text = _read(file)
    with _about(file):
        parse_note(text)
    return text


@audit_app.command("verify-checkpoint")
def verify_checkpoint(
    file: Path,
    log_key: LogKeyOpt,
    witness_key: WitnessOpt = None,
    quorum: QuorumOpt = 0,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="the checkpoint's origin line (default: the log key's name)"),
    ] = None,
) -> None:
    """Check a signed checkpoint offline; non-zero exit, saying why, when it fails."""
    from strongroom.audit.checkpoint import open_checkpoint

    text = _read_note(file)
    with _about(file):
        opened = open_checkpoint(
            text, log_key=log_key, witness_keys=witness_key or [], quorum=quorum, origin=origin
        )
    cp = opened.checkpoint
    _out.print(f"[green]ok[/]: {cp.origin} size {cp.size}, cosigned by "
               f"{', '.join(opened.cosigners) or 'no trusted witness'}"
               + (f"; ignored {len(opened.ignored)} unknown signature(s)" if opened.ignored else ""))


@audit_app.command("verify-note")
def verify_note(
    file: Path,
    key: Annotated[
        list[str],
        typer.Option("--key", help="trusted verifier key <name>+<id>+<key> (repeatable)"),
    ],
) -> None:
    """Check any signed note offline; print the keys that verified, fail when none did."""
    from strongroom.crypto.note import new_verifier, open_note

    text = _read_note(file)
    verifiers = []
    for k in key:
        try:
            verifiers.append(new_verifier(k))
        except InvalidInput as exc:
            name = k.partition("+")[0]
            raise InvalidInput(exc.message, obj=f"--key {name}", remedy=_VKEY_FORMAT) from exc
    with _about(file):
        note = open_note(text, verifiers)
    for s in note.sigs:
        _out.print(f"[green]verified[/]: {escape(s.name)}+{s.key_id:08x}")
    for s in note.unverified:
        _out.print(f"ignored (no such key given): {escape(s.name)}+{s.key_id:08x}")
    typer.echo(note.text, nl=False)


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

"""``strongroom encrypt|decrypt|keygen``: the age file format on its own, like the age tool.

Output goes through :mod:`strongroom.outputs`: a regular file is written to a
temporary name in the same directory, synced and renamed into place, so a
failed run (a corrupted input, a wrong key) leaves no partial output file;
stdout, FIFOs and devices such as ``/dev/null`` are written in place and never
replaced. Writing in place cannot be taken back: a decryption that fails
part-way has already written a prefix there.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from strongroom.cli.progress import byte_progress
from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound
from strongroom.outputs import is_stdout, open_output, write_output

__all__ = ["register"]


@contextlib.contextmanager
def _input(path: Path | None) -> Iterator[tuple[BinaryIO, int | None]]:
    """The input stream and its size when known (a regular file)."""
    if path is None or str(path) == "-":
        yield sys.stdin.buffer, None
        return
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise NotFound("no such file", obj=str(path)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read: {exc.strerror}", obj=str(path)) from None
    with f:
        st = os.fstat(f.fileno())
        yield f, st.st_size if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def _output(path: Path | None, *, binary_to_terminal: bool) -> Iterator[BinaryIO]:
    """An output stream by the rules of :func:`strongroom.outputs.open_output`."""
    if is_stdout(path) and not binary_to_terminal and sys.stdout.isatty():
        raise InvalidInput(
            "refusing to write binary ciphertext to a terminal",
            remedy="use -o FILE or redirect stdout",
        )
    with open_output(path) as out:
        yield out


@contextlib.contextmanager
def _progress(description: str, size: int | None) -> Iterator[Callable[[int], None] | None]:
    if size is None:
        yield None
        return
    with byte_progress(description, size) as advance:
        yield advance


def _read_identities(paths: list[Path]) -> list[age.AgeIdentity]:
    identities: list[age.AgeIdentity] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound("no such identity file", obj=str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read identity file: {exc}", obj=str(path)) from None
        try:
            identities.extend(age.parse_identities(text))
        except InvalidInput as exc:
            raise InvalidInput(exc.message, obj=f"identity file {path}") from None
    return identities


def encrypt(
    recipient: Annotated[
        list[str] | None,
        typer.Option("--recipient", "-r", help="encrypt to this age1… recipient (repeatable)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here (default: stdout)")
    ] = None,
    input_path: Annotated[
        Path | None, typer.Argument(metavar="[INPUT]", help="file to encrypt (default: stdin)")
    ] = None,
) -> None:
    """Encrypt a file to one or more age recipients."""
    if not recipient:
        raise InvalidInput("no recipients given", remedy="pass -r age1… at least once")
    recipients = [age.parse_recipient(r) for r in recipient]
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=False) as dst,
        _progress("encrypt", size) as advance,
    ):
        age.encrypt_stream(src, dst, recipients, progress=advance)


def decrypt(
    identity: Annotated[
        list[Path] | None,
        typer.Option("--identity", "-i", help="identity file with AGE-SECRET-KEY-1… (repeatable)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here (default: stdout)")
    ] = None,
    input_path: Annotated[
        Path | None, typer.Argument(metavar="[INPUT]", help="age file (default: stdin)")
    ] = None,
) -> None:
    """Decrypt an age file with one or more identity files."""
    if not identity:
        raise InvalidInput("no identity files given", remedy="pass -i FILE at least once")
    identities = _read_identities(identity)
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=True) as dst,
        _progress("decrypt", size) as advance,
    ):
        age.decrypt_stream(src, dst, identities, progress=advance)


def keygen(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write the new key here, mode 0600 (default: stdout)"),
    ] = None,
) -> None:
    """Generate an X25519 identity, printed like age-keygen."""
    identity = age.X25519Identity.generate()
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    public = str(identity.recipient)
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    write_output(output, text.encode("ascii"), overwrite=False)
    if is_stdout(output):
        return
    sys.stderr.write(f"Public key: {public}\n")


def register(app: typer.Typer) -> None:
    """Add ``encrypt``, ``decrypt`` and ``keygen`` to ``app``."""
    app.command("encrypt")(encrypt)
    app.command("decrypt")(decrypt)
    app.command("keygen")(keygen)

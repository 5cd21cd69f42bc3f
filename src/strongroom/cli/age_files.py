"""What ``strongroom encrypt|decrypt|keygen`` do, without the Typer declarations.

:mod:`strongroom.cli.age_cmd` declares the three commands for the Typer app
and calls these functions; :mod:`strongroom.cli.entry` calls them straight
from the console script, so encrypting a file does not first load Typer, Rich
and pydantic. Both pass the same arguments (``tests/cli/test_entry.py``
compares them), so the commands behave the same either way.

Output goes through :mod:`strongroom.outputs`: a regular file is written to a
temporary name in the same directory, synced and renamed into place, so a
failed run (a corrupted input, a wrong key) leaves no partial output file;
stdout, FIFOs and devices such as ``/dev/null`` are written in place and never
replaced. Writing in place cannot be taken back: a decryption that fails
part-way has already written a prefix there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound
from strongroom.outputs import is_stdout, open_output, write_output

__all__ = ["decrypt", "encrypt", "keygen"]


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
    """A progress bar when the size is known and stderr is a terminal, else nothing."""
    if size is None or not sys.stderr.isatty():
        yield None
        return
    from strongroom.cli.progress import byte_progress

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


def encrypt(recipient: list[str] | None, output: Path | None, input_path: Path | None) -> None:
    """Encrypt ``input_path`` (stdin) to every age recipient, into ``output`` (stdout)."""
    if not recipient:
        raise InvalidInput("no recipients given", remedy="pass -r age1… at least once")
    recipients = [age.parse_recipient(r) for r in recipient]
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=False) as dst,
        _progress("encrypt", size) as advance,
    ):
        age.encrypt_stream(src, dst, recipients, progress=advance)


def decrypt(identity: list[Path] | None, output: Path | None, input_path: Path | None) -> None:
    """Decrypt the age file ``input_path`` (stdin) with the identity files, into ``output``."""
    if not identity:
        raise InvalidInput("no identity files given", remedy="pass -i FILE at least once")
    identities = _read_identities(identity)
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=True) as dst,
        _progress("decrypt", size) as advance,
    ):
        age.decrypt_stream(src, dst, identities, progress=advance)


def keygen(output: Path | None) -> None:
    """Write a new X25519 identity to ``output`` (stdout) like age-keygen; the public key to stderr."""
    import datetime

    identity = age.X25519Identity.generate()
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    public = str(identity.recipient)
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    write_output(output, text.encode("ascii"), overwrite=False)
    if is_stdout(output):
        return
    sys.stderr.write(f"Public key: {public}\n")

"""``strongroom encrypt|decrypt|keygen``: the age file format on its own, like the age tool.

This module declares the commands for the Typer app; what they do is in
:mod:`strongroom.cli.age_files`, which the console script
(:mod:`strongroom.cli.entry`) also calls directly, without loading Typer.
Keep the options here and the parser there in step (``tests/cli/test_entry.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


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
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.encrypt(recipient, output, input_path)


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
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.decrypt(identity, output, input_path)


def keygen(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write the new key here, mode 0600 (default: stdout)"),
    ] = None,
) -> None:
    """Generate an X25519 identity, printed like age-keygen."""
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.keygen(output)


def register(app: typer.Typer) -> None:
    """Add ``encrypt``, ``decrypt`` and ``keygen`` to ``app``."""
    app.command("encrypt")(encrypt)
    app.command("decrypt")(decrypt)
    app.command("keygen")(keygen)

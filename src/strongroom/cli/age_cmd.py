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
    passphrase: Annotated[
        bool, typer.Option("--passphrase", "-p",
                           help="encrypt to a passphrase asked on the terminal (scrypt; alone)")
    ] = False,
    armor: Annotated[
        bool, typer.Option("--armor", "-a", help="write ASCII armor (PEM-like text)")
    ] = False,
) -> None:
    """Encrypt a file to age recipients (age1pq1… hybrid or age1… X25519) or a passphrase."""
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.encrypt(recipient, output, input_path, passphrase=passphrase, armor=armor)


def decrypt(
    identity: Annotated[
        list[Path] | None,
        typer.Option("--identity", "-i",
                     help="identity file with AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1… keys "
                          "(repeatable; without it a passphrase is asked for)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here (default: stdout)")
    ] = None,
    input_path: Annotated[
        Path | None, typer.Argument(metavar="[INPUT]", help="age file (default: stdin)")
    ] = None,
) -> None:
    """Decrypt an age file (armored or not) with identity files or its passphrase."""
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.decrypt(identity, output, input_path)


def keygen(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write the new key here, mode 0600 (default: stdout)"),
    ] = None,
    pq: Annotated[
        bool, typer.Option("--pq", help="a hybrid post-quantum key (ML-KEM-768 + X25519, age1pq1…)")
    ] = False,
) -> None:
    """Generate an identity (X25519, or hybrid with --pq), printed like age-keygen."""
    from strongroom.cli import age_files  # the Typer app registers this without loading age

    age_files.keygen(output, pq=pq)


def register(app: typer.Typer) -> None:
    """Add ``encrypt``, ``decrypt`` and ``keygen`` to ``app``."""
    app.command("encrypt")(encrypt)
    app.command("decrypt")(decrypt)
    app.command("keygen")(keygen)

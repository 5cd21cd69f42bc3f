"""``strongroom bundle --to DIR``: an offline wheelhouse for installing strongroom in an airgap.

Runs anywhere (no vault): it packs strongroom and every dependency installed in
this Python into wheels, with ``requirements.txt`` pinned by SHA-256, so the
enclave host installs with no network::

    pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt

``--verify DIR`` checks a wheelhouse against its manifest (and, with
``--signer``, its signature) before it is carried across. The logic is
:mod:`strongroom.supplychain.wheelhouse`; docs/operations.md ("Offline install").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.errors import InvalidInput

__all__ = ["register"]

_out = Console(highlight=False, soft_wrap=True)


def bundle(
    to: Annotated[Path | None, typer.Option("--to", help="new directory for the wheelhouse")] = None,
    wheel: Annotated[Path | None, typer.Option(
        "--wheel", help="strongroom wheel to carry (default: this installation's, built from "
        "the source tree for an editable install)")] = None,
    extra: Annotated[list[str] | None, typer.Option(
        "--extra", help="strongroom extra to include, e.g. torch (repeatable)")] = None,
    identity: Annotated[Path | None, typer.Option(
        "--identity", help="sign the manifest with this strongroom identity file")] = None,
    verify: Annotated[Path | None, typer.Option(
        "--verify", help="check this wheelhouse against its manifest instead")] = None,
    signer: Annotated[Path | None, typer.Option(
        "--signer", help="with --verify: the public key file its signature must verify under")
                      ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Write an offline wheelhouse (strongroom + dependencies, hash-pinned) for an airgapped host."""
    from strongroom.keys.identity import Identity, PublicIdentity
    from strongroom.supplychain import wheelhouse

    if (to is None) == (verify is None):
        raise InvalidInput("give --to DIR (make a wheelhouse) or --verify DIR (check one)",
                           obj="bundle")
    if verify is not None:
        manifest = wheelhouse.verify_wheelhouse(
            verify, PublicIdentity.load(signer) if signer else None)
        if json_out:
            render.print_json(manifest)
            return
        _out.print(f"{verify}: {len(manifest['files'])} files match the manifest"
                   f"{' and its signature' if signer else ''} (strongroom "
                   f"{manifest['strongroom']}, {manifest['python']}, {manifest['platform']})")
        return
    assert to is not None
    report = wheelhouse.build_wheelhouse(
        to, wheel=wheel, extras=frozenset(extra or ()),
        signer=Identity.load(identity) if identity else None)
    if json_out:
        render.print_json({"directory": str(report.directory), "pins": report.pins,
                           "wheels": report.wheels, "signed_by": report.signed_by})
        return
    _out.print(f"wrote {len(report.wheels)} wheels to {report.directory} (strongroom "
               f"{report.pins['strongroom']}){', signed by ' + report.signed_by if report.signed_by else ''}")
    _out.print(f"install offline with:\n  {wheelhouse.install_command(report.directory)}")


def register(app: typer.Typer) -> None:
    """Add ``bundle`` to the main app."""
    app.command("bundle")(bundle)

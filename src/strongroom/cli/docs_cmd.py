"""``strongroom docs add|ls|read``: secret documents, encrypted like weights.

``read`` goes through the release gate with the reader's Grant and prints the
plaintext to stdout: the only place it ever appears. Redirect it only where
the document may live.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["docs_app", "register"]

docs_app = typer.Typer(help="Secret documents: add, list, read (through the release gate).",
                       no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)


@docs_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="the document file")],
    name: Annotated[str, typer.Option("--name", help="document name")],
    classification: Annotated[str, typer.Option("--classification", help="public .. top-secret")],
    compartment: Annotated[list[str] | None, typer.Option("--compartment",
                                                          help="compartment (repeatable)")] = None,
    new_version: Annotated[bool, typer.Option("--new-version", help="add a version")] = False,
) -> None:
    """Encrypt a document into the vault with its classification and compartments."""
    from strongroom.cli.access_cmd import identity
    from strongroom.runtime.services import open_vault
    from strongroom.vault.documents import add_document

    with open_vault(identity=identity()) as vault:
        m = add_document(vault, path, name=name, classification=classification,
                         compartments=compartment or [], new_version=new_version)
    _out.print(f"added {m.ref} ({classification}; compartments: "
               f"{', '.join(m.compartments) or 'none'}); the file on disk is yours to delete")


@docs_app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Documents with classification and compartments (no content)."""
    from strongroom.cli import render
    from strongroom.cli.placement import service

    with service() as svc:
        render.documents(svc.docs_ls(), as_json)


@docs_app.command("read")
def read(
    name: Annotated[str, typer.Argument(help="document name")],
    version: Annotated[int | None, typer.Option("--version")] = None,
) -> None:
    """Print the document to stdout, if your Grant and the gate allow it (audited)."""
    from strongroom.cli.access_cmd import identity
    from strongroom.runtime.services import open_vault
    from strongroom.vault.documents import read_document

    with open_vault(identity=identity()) as vault:
        data = read_document(vault, name, version)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add ``docs`` to the main app."""
    app.add_typer(docs_app, name="docs")

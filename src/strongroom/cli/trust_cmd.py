"""``strongroom trust``: the servers' manifest keys this machine pinned on first use.

A client pins a server's manifest key the first time it sees it (with a
notice) and refuses a different key later (``ServerKeyChanged``). These
commands inspect the pins and replace or forget one once the new key has been
compared out of band (``strongroom keys public --manifest`` on the vault host).
"""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli import remote

trust_app = typer.Typer(help="Pinned server keys: list, set, forget.", no_args_is_help=True)


@trust_app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
       ) -> None:
    """List the servers whose manifest key is pinned here, with key ids."""
    remote.trust_ls(as_json)


@trust_app.command("set")
def set_(
    url: Annotated[str, typer.Argument(help="the server URL, as in STRONGROOM_URL")],
    key: Annotated[str, typer.Argument(help="its manifest key (base64 raw Ed25519), "
                                           "compared out of band")],
) -> None:
    """Pin KEY for URL in place of what was pinned."""
    remote.trust_set(url, key)


@trust_app.command("rm")
def rm(url: Annotated[str, typer.Argument(help="the server URL")]) -> None:
    """Forget URL's pin (the next use pins the key it offers, with a notice)."""
    remote.trust_set(url, None)


def register(app: typer.Typer) -> None:
    """Add ``trust`` to the root app."""
    app.add_typer(trust_app, name="trust")

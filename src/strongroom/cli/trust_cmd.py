"""``strongroom trust``: the servers' manifest keys this machine pinned on first use.

A client pins a server's manifest key the first time it sees it (with a
notice) and refuses a different key later (``ServerKeyChanged``). These
commands inspect the pins and replace or forget one once the new key has been
compared out of band (``strongroom keys public --manifest`` on the vault host).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strongroom.service.remote import known_server_pins, pin_server_key

trust_app = typer.Typer(help="Pinned server keys: list, set, forget.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)


@trust_app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
       ) -> None:
    """List the servers whose manifest key is pinned here, with key ids."""
    path, pins = known_server_pins()
    if as_json:
        print(json.dumps(pins))
        return
    if not pins:
        _out.print(f"no server keys are pinned ({path})")
        return
    table = Table("server", "manifest key id", "key (base64)", title=path)
    for p in pins:
        table.add_row(p["url"], p["key_id"], p["key"])
    _out.print(table)


@trust_app.command("set")
def set_(
    url: Annotated[str, typer.Argument(help="the server URL, as in STRONGROOM_URL")],
    key: Annotated[str, typer.Argument(help="its manifest key (base64 raw Ed25519), "
                                           "compared out of band")],
) -> None:
    """Pin KEY for URL in place of what was pinned."""
    path, had = pin_server_key(url, key)
    _out.print(f"{'replaced' if had else 'pinned'} {url.rstrip('/')}'s manifest key in {path}")


@trust_app.command("rm")
def rm(url: Annotated[str, typer.Argument(help="the server URL")]) -> None:
    """Forget URL's pin (the next use pins the key it offers, with a notice)."""
    pin_server_key(url, None)
    _out.print(f"forgot {url.rstrip('/')}: its key is pinned again, with a notice, on next use")


def register(app: typer.Typer) -> None:
    """Add ``trust`` to the root app."""
    app.add_typer(trust_app, name="trust")

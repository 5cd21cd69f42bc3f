"""``strongroom console register-token|pending|endorse``: security keys for the web console.

A person makes a one-time registration token with their identity
(``STRONGROOM_IDENTITY``) and registers a security key in the console with it;
the key stays pending until security officers sign an updated enrollment that
lists it (``console endorse``, then ``people cosign`` by the other officers
until k have signed). Only keys in an officer-signed enrollment sign in or
approve; the release gate checks approvals against the enrollment alone.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strongroom.errors import NotFound

__all__ = ["console_app", "register"]

console_app = typer.Typer(help="Web console: security-key registration and endorsement.",
                          no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)


@console_app.command("register-token")
def register_token(
    ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds (max 3600)")] = 900,
) -> None:
    """Print a one-time token to register a security key in the console (signed by you)."""
    from strongroom.access.registration import make_register_token
    from strongroom.cli.access_cmd import identity

    me = identity()
    token = make_register_token(me, ttl_s=ttl)
    _out.print(token, markup=False)


@console_app.command("pending")
def pending_cmd() -> None:
    """Security keys registered in the console, and whether officers enrolled them."""
    from strongroom.access.registration import pending
    from strongroom.cli.access_cmd import open_context

    vault, ctx = open_context()
    with vault:
        directory = ctx.directory()
        table = Table("credential", "person", "algorithm", "origin", "registered", "enrolled")
        for r in pending(vault.store):
            who = directory.principal(r.person_key)
            enrolled = who is not None and any(k.id == r.credential_id for k in who.security_keys)
            when = datetime.fromtimestamp(r.registered_at, UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(r.credential_id[:24], r.name, str(r.alg), r.origin, when,
                          "yes" if enrolled else "pending")
        _out.print(table)


@console_app.command("endorse")
def endorse(
    name: Annotated[str, typer.Argument(help="the person whose key to enroll")],
    credential: Annotated[list[str], typer.Option("--credential",
                                                  help="credential id prefix (8+ characters, "
                                                  "as the console showed the person)")],
) -> None:
    """Sign (as an officer) the person's enrollment with the registered keys added."""
    from strongroom.access.directory import publish
    from strongroom.access.registration import endorsed_enrollment
    from strongroom.cli.access_cmd import open_context

    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        current = ctx.directory().by_name(name)
        if current is None:
            raise NotFound(f"{name} is not enrolled", obj=name,
                           remedy="enroll them first (`strongroom people enroll`)")
        e = endorsed_enrollment(vault.store, current, list(credential), now=time.time())
        digest = publish(vault.store, "enrollment", e.sign(*keys, pq=ctx.officer_pq()))  # type: ignore[arg-type]
        vault.record("people.enroll", name, "allow", key_id=current.key_id, serial=e.serial,
                     statement=digest, security_keys=len(e.security_keys))
        _out.print(f"enrollment {digest[:16]} of {name} (serial {e.serial}, "
                   f"{len(e.security_keys)} security key(s)) signed by {ctx.name}; it counts "
                   f"once {ctx.reader.threshold} officer(s) signed (`strongroom people cosign "
                   f"{digest[:16]}`)")


def register(app: typer.Typer) -> None:
    """Add ``console`` to the main app."""
    app.add_typer(console_app, name="console")

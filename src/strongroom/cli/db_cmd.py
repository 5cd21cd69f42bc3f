"""``strongroom db upgrade [--check]``: the one explicit way an existing database migrates.

``serve``, its workers, the key agent and the vault-host commands refuse a
database whose schema is older or newer than the installed code
(:mod:`strongroom.store.schema`); ``strongroom init`` gives a new database its
schema. After installing a new strongroom release an operator takes a backup,
stops ``serve`` and runs ``strongroom db upgrade``; ``--check`` (exit 1 when an
upgrade is pending, 0 when current) lets a deployment script or a systemd
``ExecStartPre`` ask first. docs/operations.md ("Upgrades").
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.errors import ConfigError

__all__ = ["register"]

db_app = typer.Typer(help="The database's schema: check and upgrade it explicitly.",
                     no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)


@db_app.command("upgrade")
def upgrade(
    check: Annotated[bool, typer.Option(
        "--check", help="only report: exit 1 when an upgrade is pending, 0 when current")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Apply the schema migrations this strongroom brings (prints from and to revisions)."""
    from strongroom.datadir import require_vault
    from strongroom.runtime.agent import AgentClient
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    home = settings.resolved_home
    require_vault(home, settings.database_url)  # a stray directory gets no database
    store = Store.open(settings.resolved_database_url, schema="unchecked")
    try:
        state = store.schema_state()
        state.refuse_newer(store.url)
        if state.new:
            state.require(store.url)  # no schema: `strongroom init` makes a vault, not this
        report = {"from": sorted(state.at), "to": sorted(state.heads), "pending": state.pending,
                  "database": store.url}
        if check or not state.pending:
            _report(report, json_out, "pending" if state.pending else "current")
            if check and state.pending:
                raise typer.Exit(1)
            return
        agent = AgentClient(home, start=False)
        try:
            if agent.running():
                raise ConfigError(
                    "a key agent (or strongroom serve) runs on this data directory", obj=str(home),
                    remedy="stop serve (or `strongroom seal`) on every host sharing the database, "
                    "then run `strongroom db upgrade`")
        finally:
            agent.close()
        store.migrate()
        _report({**report, "pending": False}, json_out, "upgraded")
    finally:
        store.close()


def _report(report: dict[str, object], json_out: bool, verdict: str) -> None:
    if json_out:
        render.print_json({**report, "result": verdict})
        return
    frm = ", ".join(report["from"]) if isinstance(report["from"], list) else ""
    to = ", ".join(report["to"]) if isinstance(report["to"], list) else ""
    if verdict == "current":
        _out.print(f"database schema is current: {to} ({report['database']})")
    elif verdict == "pending":
        _out.print(f"upgrade pending: {frm} -> {to} ({report['database']}); "
                   "run `strongroom db upgrade`")
    else:
        _out.print(f"upgraded the database schema: {frm} -> {to} ({report['database']})")


def register(app: typer.Typer) -> None:
    """Add ``db`` to the main app."""
    app.add_typer(db_app, name="db")

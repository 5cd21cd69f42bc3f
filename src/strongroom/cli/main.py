"""The ``strongroom`` command: one Typer app, one module per command group."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from strongroom.cli import (
    access_cmd,
    age_cmd,
    attest_cmd,
    audit_cmd,
    audit_export_cmd,
    backup_cmd,
    bundle_cmd,
    console_cmd,
    db_cmd,
    docs_cmd,
    gateway_cmd,
    keys_cmd,
    keyserver_cmd,
    monitor_cmd,
    people_cmd,
    placement,
    posture_cmd,
    redteam_cmd,
    serve_cmd,
    supplychain_cmd,
    trust_cmd,
    weights_cmd,
    witness_cmd,
)
from strongroom.cli.entry import print_error
from strongroom.errors import StrongroomError

__all__ = ["app", "main"]

#: What the environment changes, shown under ``strongroom --help`` (docs/cli.md has them all).
ENVIRONMENT = """\b
Environment:
  STRONGROOM_URL        a server to work against (signed HTTP); unset: the local vault
  STRONGROOM_IDENTITY   your identity file (keys new-identity); signs requests and statements
  STRONGROOM_HOME       the local data directory (default ./.strongroom)
  STRONGROOM_DATABASE_URL  PostgreSQL/SQLite URL (default: SQLite in STRONGROOM_HOME)
  STRONGROOM_MANIFEST_KEY  the vault's manifest key, pinned (else pinned on first use)
  STRONGROOM_HOST_ID    this server host's name in the audit log (default: hostname)"""

app = typer.Typer(
    name="strongroom",
    help="Keep model weights and algorithmic secrets encrypted, approved, audited and metered.",
    epilog=ENVIRONMENT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from strongroom import __version__

        print(f"strongroom {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="print the version and exit"),
) -> None:
    """Keep model weights and algorithmic secrets encrypted, approved, audited and metered."""

for module in (
    age_cmd,
    attest_cmd,
    keys_cmd,
    weights_cmd,
    audit_cmd,
    audit_export_cmd,
    witness_cmd,
    supplychain_cmd,
    gateway_cmd,
    monitor_cmd,
    people_cmd,
    access_cmd,
    docs_cmd,
    serve_cmd,
    console_cmd,
    redteam_cmd,
    posture_cmd,
    trust_cmd,
    backup_cmd,
    db_cmd,
    bundle_cmd,
    keyserver_cmd,
):
    module.register(app)

_err = Console(stderr=True, highlight=False)


def command_path(args: list[str]) -> str:
    """The command ``args`` name (``"weights ls"``), as far as the groups resolve it."""
    import typer.main

    cmd: object = typer.main.get_command(app)
    path: list[str] = []
    for token in args:
        subs = getattr(cmd, "commands", None)
        if not subs or token not in subs:
            break
        path.append(token)
        cmd = subs[token]
    return " ".join(path)


def main() -> None:
    """Entry point: run the app, print strongroom errors without a traceback."""
    try:
        if os.environ.get("STRONGROOM_URL") and "--help" not in sys.argv[1:]:
            placement.check(command_path(sys.argv[1:]))  # help runs nothing: never refused
        # Without standalone mode click *returns* the code of a typer.Exit raised in a
        # command instead of exiting with it: pass it on, or `raise typer.Exit(1)` exits 0.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except StrongroomError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err.print("interrupted")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as exc:
        sys.exit(getattr(exc, "exit_code", 1))
    except Exception as exc:
        if not _settings_error(exc):
            _usage_error(exc)
            raise
        for problem in exc.errors():  # type: ignore[attr-defined]
            name = "STRONGROOM_" + "_".join(str(p) for p in problem["loc"]).upper()
            _err.print(f"[bold red]error:[/] {escape(name)}: {escape(problem['msg'])} "
                       "(remedy: fix or unset the environment variable)", markup=True,
                       soft_wrap=True)
        sys.exit(2)


def _settings_error(exc: Exception) -> bool:
    """Whether ``exc`` is pydantic's complaint about a ``STRONGROOM_*`` variable.

    pydantic is imported only by the commands that read settings, so it is
    looked up, not imported, here: if it was never loaded, it raised nothing.
    """
    pydantic = sys.modules.get("pydantic")
    return (pydantic is not None and isinstance(exc, pydantic.ValidationError)
            and exc.title.endswith("Settings"))


def _usage_error(exc: Exception) -> None:
    """Show a usage error and exit with its code; return for any other exception.

    Usage errors: click's ClickException, or the copy typer >= 0.20 vendors
    (typer._click), which click's class does not match.
    """
    show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
    if callable(show) and isinstance(code, int):
        show()
        sys.exit(code)

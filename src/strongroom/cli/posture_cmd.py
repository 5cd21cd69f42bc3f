"""``strongroom posture assess``: score this deployment against RAND SL1–SL5.

Reads live evidence (keyring status through the running key agent — it is
not started for this —, the directory, grants against the caps, the audit
log and witnesses, egress caps and time-to-exfiltrate, canaries, the
dependency lock, the latest ``strongroom redteam run``) plus an optional
declaration file for what software cannot see. Prints a summary, or JSON with
``--json``; ``--html FILE`` writes the self-contained report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

posture_app = typer.Typer(help="Security posture against RAND's security levels.",
                          no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)


@posture_app.command("assess")
def assess_cmd(
    declare: Annotated[Path | None, typer.Option("--declare", help="declaration YAML (facility, "
                                                 "vetting depth, network isolation)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="write the HTML report here")] = None,
) -> None:
    """Score the deployment per control family and overall."""
    from strongroom.cli.placement import service

    with service() as svc:
        out = svc.posture(declare)
    report = out["report"]
    if html is not None:
        write_private(html, out["html"])
    if as_json:
        print(json.dumps(report, indent=1, sort_keys=True, default=str))
        return
    _out.print(f"[bold]{escape(report['overall']['name'])}[/] (the lowest family level)")
    for f in report["families"]:
        _out.print(f"  SL{f['level']}  {f['title']:34} next: {escape(f['to_reach_next'])[:110]}")
    if html is not None:
        _out.print(f"report written to {html}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) via a temporary file and a rename."""
    from strongroom.outputs import write_output

    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, text.encode("utf-8"))


def register(app: typer.Typer) -> None:
    """Attach ``posture`` to the main app."""
    app.add_typer(posture_app, name="posture")

"""``strongroom redteam run|list``: attack a deployment with the shipped scenarios and grade it.

``run`` builds a throw-away embedded deployment in a temporary directory (a
real key ceremony, an imported model, enrolled people) unless ``--target URL``
names a live server, runs the scenarios, grades each blocked / detected /
missed from the audit log and the alert store, and stores the results under
the data directory (``<home>/redteam/latest.json``) for ``strongroom posture
assess``. Exit status: 1 when anything is missed, 2 when nothing was missed
but some scenarios could not run against the target.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

redteam_app = typer.Typer(help="Continuous red-team scenarios against a deployment.",
                          no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)
_COLOURS = {"blocked": "green", "detected": "green", "missed": "bold red",
            "unsupported": "yellow"}


@redteam_app.command("list")
def list_cmd() -> None:
    """List the shipped scenarios."""
    from strongroom.redteam.schema import load_builtin

    for sc in load_builtin():
        _out.print(f"{sc.id:14} {sc.group:20} {escape(sc.title)}")


@redteam_app.command("run")
def run_cmd(
    target: Annotated[str | None, typer.Option("--target", help="URL of a live server "
                                               "(default: a throw-away embedded deployment)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    scenario: Annotated[list[str] | None, typer.Option("--scenario", help="run only this id "
                                                       "(repeatable)")] = None,
) -> None:
    """Run the scenarios, grade them from evidence, store the results."""
    from strongroom.redteam.runner import results_path, run_suite, save_results
    from strongroom.redteam.schema import load_builtin
    from strongroom.redteam.target import EmbeddedTarget, UrlTarget
    from strongroom.settings import Settings

    scenarios = load_builtin(scenario or ())
    tgt = UrlTarget(target) if target else EmbeddedTarget.build()
    try:
        if not as_json:
            _out.print(f"target: {tgt.description}; {len(scenarios)} scenarios")
        report = run_suite(tgt, scenarios, on_result=None if as_json else _show)
    finally:
        tgt.close()
    path = results_path(Settings().resolved_home)
    save_results(path, report)
    if as_json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True))
    else:
        counts = {o: sum(1 for r in report.results if r.outcome == o)
                  for o in ("blocked", "detected", "missed", "unsupported")}
        _out.print(", ".join(f"{n} {o}" for o, n in counts.items())
                   + f" in {report.duration_s:.1f} s; results in {path}")
    # sys.exit, not typer.Exit: main() runs click with standalone_mode=False, where
    # click turns Exit into a return value and the process would exit 0.
    if report.missed:
        sys.exit(1)
    if report.unsupported:
        sys.exit(2)


def _show(r: object) -> None:
    from strongroom.redteam.runner import ScenarioResult

    assert isinstance(r, ScenarioResult)
    colour = _COLOURS.get(r.outcome, "white")
    first = next((e for e in r.evidence if e.get("kind") not in ("missing",)), None)
    if r.outcome in ("missed", "unsupported"):
        first = next((e for e in r.evidence), first)
    ref = ""
    if first is not None:
        ident = f"#{first['id']} " if "id" in first else ""
        ref = f"{first.get('kind')} {ident}{first.get('reason') or first.get('message') or first.get('detail') or ''}"
    _out.print(f"[{colour}]{r.outcome:9}[/] {r.id:14} {escape(r.title)}\n"
               f"          [dim]{escape(ref[:160])}[/]")


def register(app: typer.Typer) -> None:
    """Attach ``redteam`` to the main app."""
    app.add_typer(redteam_app, name="redteam")

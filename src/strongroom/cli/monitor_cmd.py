"""``strongroom alerts ls|ack`` and ``strongroom monitor eval|egress|budget``.

``alerts ls`` and ``monitor egress`` only read the database; ``alerts ack``
and ``monitor budget`` change state and are audited, so they need an unsealed
vault (the audit log's key agent). ``monitor eval`` touches no state at all:
it runs the detectors over a synthetic lab.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.cli.placement import service

# SQLAlchemy, numpy and the monitor modules are imported inside the commands:
# importing them here would slow every `strongroom` command.

alerts_app = typer.Typer(help="Insider-risk and egress alerts.", no_args_is_help=True)
monitor_app = typer.Typer(help="Egress budgets and detector evaluation.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@alerts_app.command("ls")
def alerts_ls(
    all_: Annotated[bool, typer.Option("--all", help="include acknowledged alerts")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, newest first (unacknowledged only unless --all)."""
    with service() as svc:
        render.alerts(svc.alerts_ls(include_acked=all_, limit=limit), as_json)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int,
    by: Annotated[str, typer.Option("--by", help="who handled it")],
    note: Annotated[str, typer.Option("--note", help="what was found")] = "",
) -> None:
    """Acknowledge an alert (audited as alert.ack; remote: as the signing identity)."""
    with service() as svc:
        stored = svc.alerts_ack(alert_id, by=by, note=note)
    _out.print(f"alert #{stored['id']} acknowledged by {stored['acked_by']}", markup=False)


@monitor_app.command("eval")
def monitor_eval(
    seed: Annotated[int, typer.Option("--seed", help="generator seed")] = 1,
    people: Annotated[int, typer.Option("--people", min=50, help="people in the lab")] = 500,
    days: Annotated[int, typer.Option("--days", min=40, help="days simulated")] = 60,
    seeds: Annotated[int, typer.Option("--seeds", min=1,
                                       help="evaluate SEED..SEED+N-1; report min/mean")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Run the detectors over a synthetic lab with scripted insiders; report recall and noise."""
    from strongroom.monitor.evaluation import evaluate, sweep

    if seeds > 1:
        result = sweep(range(seed, seed + seeds), people=people, days=days)
        summary = result.summary()
        if as_json:
            typer.echo(json.dumps(summary))
            return
        for r in result.reports:
            _out.print(f"seed {r.seed:3}: recall {r.recall:.3f}, {r.false_alert_rate:.2f} false "
                       f"alerts per 1,000 person-days  " + " ".join(
                           f"{row['recall']:.1f}" for row in r.scenarios.values()), markup=False)
        for name, row in summary["scenarios"].items():
            _out.print(f"  {name:34} recall min {row['min']:.2f} mean {row['mean']:.2f}",
                       markup=False)
        rec, rate = summary["recall"], summary["false_alerts_per_1000_person_days"]
        _out.print(f"recall min {rec['min']:.3f} mean {rec['mean']:.3f}; false alerts per 1,000 "
                   f"person-days max {rate['max']:.2f} mean {rate['mean']:.2f}; on target "
                   f"(recall >= 0.9 at <= 1): {len(summary['on_target'])} of {seeds} seeds")
        return
    report = evaluate(seed=seed, people=people, days=days)
    if as_json:
        typer.echo(json.dumps(report.summary()))
        return
    _out.print(f"synthetic lab: seed {seed}, {report.people} people, {report.days} days, "
               f"{report.events:,} events, {report.person_days:,} scored person-days "
               f"({report.seconds:.1f} s)")
    for name, row in report.scenarios.items():
        _out.print(f"  {name:34} recall {row['recall']:.2f} "
                   f"({row['detected']}/{row['instances']})", markup=False)
    _out.print(f"overall recall {report.recall:.3f}; false alerts {report.false_alerts} "
               f"= {report.false_alert_rate:.2f} per 1,000 person-days "
               f"(target: recall >= 0.9 at <= 1)")


@monitor_app.command("egress")
def monitor_egress(
    compression: Annotated[float, typer.Option("--compression", min=0.01,
                                               help="original / compressed size")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Budgets in force and how long stealing each artifact would take under them."""
    with service() as svc:
        report = svc.egress_report(compression)
    render.egress(report["budgets"], report["artifacts"], compression, as_json)


@monitor_app.command("budget")
def monitor_budget(
    scope: Annotated[str, typer.Argument(help="principal, artifact or lab")],
    subject: Annotated[str, typer.Argument(help="a principal, an artifact name, or *")],
    cap_gib: Annotated[float, typer.Argument(help="cap in GiB", min=0)],
    window_h: Annotated[int, typer.Option("--window-h", min=1, help="window, hours")] = 24,
) -> None:
    """Set (or replace) an egress budget; audited as monitor.budget."""
    from strongroom.monitor.egress import Budget, EgressMeter
    from strongroom.service.embedded import open_log

    budget = Budget(scope, subject, window_h * 3600, int(cap_gib * 2**30))  # type: ignore[arg-type]
    with open_log() as log:
        log.append(actor="operator", action="monitor.budget", obj=f"{scope}:{subject}",
                   decision="allow", details={"window_s": budget.window_s,
                                              "cap_bytes": budget.cap_bytes})
        EgressMeter(log.store).set_budget(budget)
    _out.print(f"budget {scope} {subject}: {render.human_bytes(budget.cap_bytes)} per "
               f"{render.duration(budget.window_s)}",
               markup=False)


def register(app: typer.Typer) -> None:
    """Add ``alerts`` and ``monitor`` to the main app."""
    from strongroom.cli.alert_routes_cmd import add_commands

    add_commands(alerts_app)
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(monitor_app, name="monitor")

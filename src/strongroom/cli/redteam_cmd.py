"""``strongroom redteam run|list|schedule``: attack a deployment with the shipped scenarios, grade it.

``run`` builds a throw-away embedded deployment in a temporary directory (a
real key ceremony, an imported model, enrolled people) unless ``--target URL``
names a live server, runs the scenarios, grades each blocked / detected /
missed from the audit log and the alert store, and stores the results under
the data directory (``<home>/redteam/latest.json``) for ``strongroom posture
assess``. Exit status: 1 when anything is missed, 2 when nothing was missed
but some scenarios could not run against the target.

``schedule`` runs the same on an interval (``--every 1d``) or once per
invocation (``--once``, for ``contrib/systemd/strongroom-redteam.timer``);
with ``--identity`` (required there) each run's scorecard, signed by the
red-team identity, is appended to the vault host's audit log as
``redteam.result``, which ``posture assess`` scores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from strongroom.keys.identity import Identity
    from strongroom.redteam.runner import SuiteReport

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


TargetOpt = Annotated[str | None, typer.Option(
    "--target", help="URL of a live server (default: a throw-away embedded deployment)")]
IdentityOpt = Annotated[Path | None, typer.Option(
    "--identity", help="the red-team identity the operator issued: signs the run's scorecard, "
    "appended to this vault host's audit log as redteam.result")]
DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", help="with --target: the deployment's database with a DBA's credentials "
    "(adds the DBA-insider scenarios)")]
BucketOpt = Annotated[str | None, typer.Option(
    "--blob-bucket", help="with --target: read access to the blob store, as a thief has it: "
    "the local store's directory, or s3 (the bucket STRONGROOM_S3_* name)")]
ApproverOpt = Annotated[list[Path] | None, typer.Option(
    "--approver-identity", help="with --target and --identity: an enrolled approver the "
    "operator lends the red team (repeatable; as many as the model's load rule needs): they "
    "approve, issue and revoke the run's Grants")]
OfficerOpt = Annotated[list[Path] | None, typer.Option(
    "--officer-identity", help="with --target and --identity: a security officer pinned in "
    "the keyring whom the operator lends the red team (repeatable; as many as the officer "
    "threshold): they re-issue the red team's enrollment and the model's label for a "
    "scenario, put back as they were after it")]
HostHomeOpt = Annotated[Path | None, typer.Option(
    "--host-home", help="with --target and --identity: the serving host's data directory, "
    "as a red team given a shell on that host has it (its settings, database and key agent)")]
GatewayOpt = Annotated[str | None, typer.Option(
    "--gateway", help="with --target and --identity: URL of a running `strongroom gateway "
    "serve` of the deployment (adds the gateway scenarios; needs --gateway-caller)")]
CallerOpt = Annotated[list[Path] | None, typer.Option(
    "--gateway-caller", help="with --gateway: an enrolled caller the operator lends, holding "
    "an infer Grant on the gateway's model (repeatable; one per gateway scenario)")]
ArtifactOpt = Annotated[str | None, typer.Option(
    "--artifact", help="with --target: the model to attack (default: the first listed)")]
ScenarioOpt = Annotated[list[str] | None, typer.Option(
    "--scenario", help="run only this id (repeatable)")]


@redteam_app.command("run")
def run_cmd(
    target: TargetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    scenario: ScenarioOpt = None,
    identity: IdentityOpt = None,
    database_url: DatabaseOpt = None,
    artifact: ArtifactOpt = None,
    blob_bucket: BucketOpt = None,
    approver_identity: ApproverOpt = None,
    officer_identity: OfficerOpt = None,
    host_home: HostHomeOpt = None,
    gateway: GatewayOpt = None,
    gateway_caller: CallerOpt = None,
) -> None:
    """Run the scenarios, grade them from evidence, store the results."""
    report = _run_once(target, scenario, identity, as_json, database_url, artifact, blob_bucket,
                       approver_identity, officers=officer_identity, host_home=host_home,
                       gateway=gateway, callers=gateway_caller)
    if as_json:
        print(json.dumps(report.to_json(), indent=1, sort_keys=True))
    # sys.exit, not typer.Exit: main() runs click with standalone_mode=False, where
    # click turns Exit into a return value and the process would exit 0.
    sys.exit(_status(report))


@redteam_app.command("schedule")
def schedule_cmd(
    identity: Annotated[Path, typer.Option(
        "--identity", help="the red-team identity the operator issued (signs every scorecard)")],
    target: TargetOpt = None,
    every: Annotated[str | None, typer.Option(
        "--every", help="run again after this long (90s, 30m, 6h, 1d) until stopped")] = None,
    once: Annotated[bool, typer.Option(
        "--once", help="one run, then exit with its status (for a systemd timer)")] = False,
    scenario: ScenarioOpt = None,
    database_url: DatabaseOpt = None,
    artifact: ArtifactOpt = None,
    blob_bucket: BucketOpt = None,
    approver_identity: ApproverOpt = None,
    officer_identity: OfficerOpt = None,
    host_home: HostHomeOpt = None,
    gateway: GatewayOpt = None,
    gateway_caller: CallerOpt = None,
) -> None:
    """Run the suite on a schedule; each run's signed scorecard goes into the audit log."""
    from strongroom.cli.access_cmd import parse_duration
    from strongroom.errors import InvalidInput

    if once == (every is not None):
        raise InvalidInput("say how often: --every DURATION, or --once for a systemd timer",
                           obj="redteam schedule",
                           remedy="e.g. strongroom redteam schedule --identity rt.id --every 1d")
    interval = parse_duration(every, "--every") if every is not None else 0
    while True:
        report = _run_once(target, scenario, identity, False, database_url, artifact,
                           blob_bucket, approver_identity, officers=officer_identity,
                           host_home=host_home, gateway=gateway, callers=gateway_caller)
        if once:
            sys.exit(_status(report))
        _out.print(f"next run in {every}")
        time.sleep(interval)


def _run_once(target: str | None, scenario: list[str] | None, identity: Path | None,
              as_json: bool, database_url: str | None = None,
              artifact: str | None = None, blob_bucket: str | None = None,
              approvers: list[Path] | None = None, *, officers: list[Path] | None = None,
              host_home: Path | None = None, gateway: str | None = None,
              callers: list[Path] | None = None) -> SuiteReport:
    """One run: attack, grade, store latest.json and, with an identity, the signed result."""
    from strongroom.errors import InvalidInput
    from strongroom.keys.identity import Identity
    from strongroom.redteam.live import LiveTarget
    from strongroom.redteam.runner import results_path, run_suite, save_results
    from strongroom.redteam.schema import load_builtin
    from strongroom.redteam.target import EmbeddedTarget
    from strongroom.settings import Settings

    if not target and (database_url or artifact or blob_bucket or approvers or officers
                       or host_home or gateway or callers):
        raise InvalidInput("--database-url, --blob-bucket, --approver-identity, "
                           "--officer-identity, --host-home, --gateway, --gateway-caller and "
                           "--artifact describe a live deployment",
                           obj="redteam run", remedy="add --target URL")
    who = Identity.load(identity) if identity is not None else None  # refused before attacking
    scenarios = load_builtin(scenario or ())
    lent = tuple(Identity.load(p) for p in approvers or ())
    chiefs = tuple(Identity.load(p) for p in officers or ())
    lent_callers = tuple(Identity.load(p) for p in callers or ())
    tgt = LiveTarget.connect(target, who, database_url=database_url, artifact=artifact,
                             blob_bucket=blob_bucket, approvers=lent, officers=chiefs,
                             host_home=host_home, gateway=gateway,
                             gateway_callers=lent_callers) if target else EmbeddedTarget.build()
    try:
        if not as_json:
            _out.print(f"target: {tgt.description}; {len(scenarios)} scenarios")
        report = run_suite(tgt, scenarios, on_result=None if as_json else _show)
    finally:
        tgt.close()
    path = results_path(Settings().resolved_home)
    save_results(path, report)
    entry = _record(report, who) if who is not None else None
    if not as_json:
        counts = {o: sum(1 for r in report.results if r.outcome == o)
                  for o in ("blocked", "detected", "missed", "unsupported")}
        _out.print(", ".join(f"{n} {o}" for o, n in counts.items())
                   + f" in {report.duration_s:.1f} s; results in {path}"
                   + (f"; signed result: audit entry {entry}" if entry is not None else ""))
    return report


def _record(report: SuiteReport, who: Identity) -> int:
    """Append the signed scorecard to this vault host's audit log (agent must be unsealed)."""
    from strongroom.redteam.runner import record_result
    from strongroom.service.embedded import open_log

    with open_log() as log:
        return record_result(log, report, who)


def _status(report: SuiteReport) -> int:
    """1 when anything is missed, 2 when nothing was but some scenario could not run, else 0."""
    if report.missed:
        return 1
    return 2 if report.unsupported else 0


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

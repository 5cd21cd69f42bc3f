"""The end of ``make demo``: a red-team scorecard and the posture report.

Call it while the demo's vault is still unsealed (so the posture sees the
barrier, the directory and the audit log)::

    from strongroom.demo.redteam import run_scorecard
    report = run_scorecard(console, home)
    if report.missed: raise SystemExit(1)

The scenarios run against a throw-away embedded deployment built next to the
demo's data directory (``<home>-redteam``, deleted afterwards): they tamper
with their target's audit log and plant decoys, which must never happen to the
demo's own vault. The results are stored under ``<home>/redteam/latest.json``
and the posture of the demo's deployment is written to ``<home>/posture.html``
and ``<home>/posture.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from strongroom.redteam.runner import SuiteReport, results_path, run_suite, save_results

__all__ = ["run_scorecard"]

_STYLE = {"blocked": "green", "detected": "green", "missed": "bold red", "unsupported": "yellow"}


def _evidence_ref(evidence: list[dict[str, object]]) -> str:
    for item in evidence:
        kind = item.get("kind")
        if kind in ("audit", "audit-alert"):
            why = item.get("reason") or item.get("message") or item.get("detail") or ""
            return f"audit #{item.get('id')}: {why}"
        if kind == "alert":
            return f"alert #{item.get('id')} {item.get('detector')}: {item.get('message')}"
    first = evidence[0] if evidence else {}
    return f"{first.get('kind', '')}: {first.get('detail', '')}"


def run_scorecard(console: Console, home: Path) -> SuiteReport:
    """Run every scenario on a throw-away target, print the scorecard, write the posture."""
    from strongroom.redteam.schema import load_builtin
    from strongroom.redteam.target import EmbeddedTarget

    scenarios = load_builtin()
    root = home.parent / (home.name + "-redteam")
    shutil.rmtree(root, ignore_errors=True)
    console.print(f"{len(scenarios)} attack scenarios against a throw-away deployment "
                  f"({root.name}: real ceremony, imported model, enrolled people)")
    target = EmbeddedTarget.build(root)
    # The fork scenario makes the target's witness log a warning; the scorecard reports it.
    witness_log = logging.getLogger("strongroom.audit.witness")
    level = witness_log.level
    witness_log.setLevel(logging.ERROR)
    try:
        report = run_suite(target, scenarios)
    finally:
        witness_log.setLevel(level)
        target.close()
        shutil.rmtree(root, ignore_errors=True)
    save_results(results_path(home), report)
    table = Table("scenario", "RAND group", "outcome", "evidence", title="red-team scorecard")
    for r in report.results:
        table.add_row(r.id, r.group, f"[{_STYLE.get(r.outcome, 'white')}]{r.outcome}[/]",
                      escape(_evidence_ref(r.evidence)[:90]))
    console.print(table)
    counts = {o: sum(1 for r in report.results if r.outcome == o)
              for o in ("blocked", "detected", "missed")}
    console.print(f"{counts['blocked']} blocked, {counts['detected']} detected, "
                  f"[{'bold red' if counts['missed'] else 'green'}]{counts['missed']} missed[/] "
                  f"in {report.duration_s:.1f} s (run {report.run_id})")
    for r in report.results:
        if r.outcome == "missed":
            why = next((e.get("detail") for e in r.evidence if e.get("kind") in
                        ("missing", "error")), "")
            console.print(f"  [red]missed[/] {r.id} {escape(r.title)}: {escape(str(why))}")
    write_posture(console, home)
    return report


def write_posture(console: Console, home: Path) -> None:
    """Assess the deployment in ``home`` and write posture.html and posture.json there."""
    from strongroom.cli.posture_cmd import write_private
    from strongroom.posture.assess import LEVEL_NAMES, assess
    from strongroom.posture.facts import collect_live
    from strongroom.posture.report import render_html
    from strongroom.settings import Settings

    settings = Settings(home=home)
    result = assess(collect_live(home, settings.resolved_database_url))
    write_private(home / "posture.html", render_html(result))
    write_private(home / "posture.json",
                  json.dumps(result.to_json(), indent=1, sort_keys=True, default=str))
    console.print(f"posture: [bold]{escape(LEVEL_NAMES[result.level])}[/] overall "
                  f"(no declaration given: facility, vetting and network count as absent)")
    for f in result.families:
        console.print(f"  SL{f.level}  {f.title}")
    console.print(f"report: {home / 'posture.html'} (and posture.json)")

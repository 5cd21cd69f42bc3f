"""``strongroom posture assess`` on a data directory set up through the CLI (a real key agent)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_fixtures import unseal_home

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "posture-declaration.example.yaml"


def test_assess_an_evaluation_install(tmp_path: Path) -> None:
    run, _ = unseal_home(tmp_path / "home", None)
    try:
        out = run("posture", "assess", "--json", "--declare", EXAMPLE,
                  "--html", tmp_path / "report.html")
        doc = json.loads(out.stdout)
        keys = next(f for f in doc["families"] if f["key"] == "keys")
        statuses = {c["id"]: c["status"] for c in keys["controls"]}
        assert statuses["K-1"] == "met" and statuses["K-2"] == "met"
        # the bootstrap officer of an evaluation install is one person: not SL3
        assert statuses["K-3"] == "not met" and keys["level"] == 2
        assert doc["overall"]["level"] <= 2
        assert doc["evidence"]["keyring"]["threshold"] == 2
        assert doc["declaration"]["claims"]["vetting"]["depth"] == "enhanced"
        html = (tmp_path / "report.html").read_text()
        assert html.startswith("<!doctype html>") and "<svg" in html
        assert oct((tmp_path / "report.html").stat().st_mode & 0o777) == "0o600"
        bad = tmp_path / "bad.yaml"
        bad.write_text("network: {isolated: true}\n")
        refused = run("posture", "assess", "--declare", bad, ok=False)
        assert refused.returncode == 2 and "network" in refused.stderr
    finally:
        run("seal", ok=False)

"""``strongroom redteam schedule``: each run's signed scorecard in the audit log, scored by posture.

A real vault (CLI init/unseal, key agent) on each database; the red-team
identity is enrolled by the officer as an operator issues it. Posture must read
the newest ``redteam.result`` entry, check its DSSE signature against the
directory, show the trend, and fall back to ``latest.json`` only while the log
holds no run. Staleness and misses are scored on plain facts below.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from strongroom.keys.identity import Identity
from strongroom.posture.controls import CONTROLS
from strongroom.posture.declaration import Declaration
from strongroom.posture.facts import Facts
from strongroom.timefmt import utc_stamp

from cli_fixtures import unseal_home


def _redteam(doc: dict[str, Any]) -> dict[str, str]:
    fam = next(f for f in doc["families"] if f["key"] == "redteam")
    return {c["id"]: f"{c['status']}: {c['evidence']}" for c in fam["controls"]}


def test_scheduled_runs_are_signed_audit_entries_posture_scores(tmp_path: Path,
                                                                 db_url: str) -> None:
    run, _ = unseal_home(tmp_path / "home", db_url)
    try:
        red = Identity.generate("redteam")
        red.save(tmp_path / "red.id")
        (tmp_path / "red.pub").write_text(red.public.to_text())
        run("people", "enroll", "redteam", "--key", tmp_path / "red.pub",
            "--vetting-expires", "2099-01-01", "--role", "auditors")
        stranger = Identity.generate("redteam")  # same name, a key nobody enrolled
        stranger.save(tmp_path / "stranger.id")

        run("redteam", "run", "--scenario", "RT-CRED-001")  # no identity: the file only
        doc = json.loads(run("posture", "assess", "--json").stdout)
        assert doc["evidence"]["redteam"]["source"] == "file"
        assert "unsigned local file" in _redteam(doc)["R-2"]

        refused = run("redteam", "schedule", "--identity", tmp_path / "red.id", ok=False)
        assert refused.returncode != 0 and "--every" in refused.stderr

        out = run("redteam", "schedule", "--once", "--identity", tmp_path / "red.id",
                  "--scenario", "RT-CRED-001", "--scenario", "RT-EXF-003").stdout
        assert "signed result: audit entry" in out
        doc = json.loads(run("posture", "assess", "--json").stdout)
        rt = doc["evidence"]["redteam"]
        assert rt["source"].startswith("audit entry") and rt["verified"] is True
        assert rt["outcomes"] == {"RT-CRED-001": "blocked", "RT-EXF-003": "detected"}
        assert _redteam(doc)["R-2"].startswith("met:") and "signed by redteam" in \
            _redteam(doc)["R-2"]

        run("redteam", "schedule", "--once", "--identity", tmp_path / "stranger.id",
            "--scenario", "RT-CRED-001")
        doc = json.loads(run("posture", "assess", "--json").stdout)
        rt = doc["evidence"]["redteam"]
        assert rt["verified"] is False and len(rt["trend"]) == 2
        assert [t["verified"] for t in rt["trend"]] == [False, True]
        r2 = _redteam(doc)["R-2"]
        assert r2.startswith("not met:") and "none enrolled" in r2, r2
        assert "runs in the log, newest first" in _redteam(doc)["R-1"]
        assert "verified" in run("audit", "verify").stdout.lower()
    finally:
        run("seal", ok=False)


def _score(control_id: str, run: dict[str, Any] | None) -> tuple[str, str]:
    facts = Facts(redteam=run, redteam_runs=[run] if run else [])
    control = next(c for c in CONTROLS if c.id == control_id)
    return control.evaluate(facts, Declaration({}))


def _run(age_days: float, outcomes: dict[str, str], *, verified: bool = True) -> dict[str, Any]:
    return {"run_id": "rt000001", "started": utc_stamp(time.time() - age_days * 86400),
            "source": "audit entry 7", "audit_index": 7, "verified": verified, "signed_by": "redteam",
            "verify_detail": "" if verified else "bad signature",
            "missed": sum(o == "missed" for o in outcomes.values()),
            "results": [{"id": i, "group": "credentials", "outcome": o}
                        for i, o in outcomes.items()]}


def test_stale_missed_or_unverified_runs_score_lower() -> None:
    clean = {"RT-CRED-001": "blocked", "RT-EXF-003": "detected"}
    assert _score("R-2", _run(1, clean))[0] == "met"
    status, text = _score("R-2", _run(8, clean))
    assert status == "not met" and "stale" in text
    assert _score("R-1", _run(8, clean))[0] == "met"  # ran within 30 days: level 1 kept
    status, text = _score("R-2", _run(1, {**clean, "RT-ABS-001": "missed"}))
    assert status == "not met" and "RT-ABS-001" in text
    status, text = _score("R-2", _run(1, clean, verified=False))
    assert status == "not met" and "bad signature" in text
    assert _score("R-2", None)[0] == "not met"

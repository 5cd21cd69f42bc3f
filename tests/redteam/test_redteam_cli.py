"""``strongroom redteam run``: the JSON shape, the exit status, the stored results."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cli_fixtures import strongroom_exe


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_HOME"] = str(tmp_path / "home")
    return subprocess.run([strongroom_exe(), "redteam", "run", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_json_output_and_exit_status(tmp_path: Path) -> None:
    ok = _run(tmp_path, "--json", "--scenario", "RT-CRED-001", "--scenario", "RT-EXF-003")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert set(doc) == {"scenarios", "missed"} and doc["missed"] == 0
    assert [s["id"] for s in doc["scenarios"]] == ["RT-CRED-001", "RT-EXF-003"]
    assert {s["outcome"] for s in doc["scenarios"]} == {"blocked", "detected"}
    stored = json.loads((tmp_path / "home" / "redteam" / "latest.json").read_text())
    assert stored["missed"] == 0 and len(stored["results"]) == 2


def test_a_miss_exits_non_zero(tmp_path: Path) -> None:
    # RT-BG-002 is a known gap (no break-glass alert yet): the command must say so by its status.
    missed = _run(tmp_path, "--json", "--scenario", "RT-BG-002")
    doc = json.loads(missed.stdout)
    assert doc["missed"] == (1 if doc["scenarios"][0]["outcome"] == "missed" else 0)
    assert missed.returncode == (1 if doc["missed"] else 0)


def test_url_target_says_what_it_cannot_run(tmp_path: Path) -> None:
    res = _run(tmp_path, "--target", "http://127.0.0.1:9", "--scenario", "RT-CRED-001")
    assert res.returncode == 2
    assert "not supported against a live server" in res.stdout

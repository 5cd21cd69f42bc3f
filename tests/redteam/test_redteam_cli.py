"""``strongroom redteam run``: the JSON shape, the exit status, the stored results."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import cli_zygote
from cli_fixtures import strongroom_exe


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_HOME"] = str(tmp_path / "home")
    return cli_zygote.run([strongroom_exe(), "redteam", "run", *args], env,
                          timeout=120)  # a forked process


def test_json_output_and_exit_status(tmp_path: Path) -> None:
    ok = _run(tmp_path, "--json", "--scenario", "RT-CRED-001", "--scenario", "RT-EXF-003")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert set(doc) == {"scenarios", "missed"} and doc["missed"] == 0
    assert [s["id"] for s in doc["scenarios"]] == ["RT-CRED-001", "RT-EXF-003"]
    assert {s["outcome"] for s in doc["scenarios"]} == {"blocked", "detected"}
    stored = json.loads((tmp_path / "home" / "redteam" / "latest.json").read_text())
    assert stored["missed"] == 0 and len(stored["results"]) == 2


def test_a_miss_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from strongroom.cli import redteam_cmd
    from strongroom.redteam.target import EmbeddedTarget

    detected = _run(tmp_path, "--json", "--scenario", "RT-BG-002")  # break-glass is alerted
    assert detected.returncode == 0 and json.loads(detected.stdout)["missed"] == 0
    build = EmbeddedTarget.build.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(EmbeddedTarget, "build", classmethod(
        lambda cls, root=None, **kw: build(cls, root, weaken={"evidence": "noop"})))
    monkeypatch.setenv("STRONGROOM_HOME", str(tmp_path / "weak"))
    app = typer.Typer()
    redteam_cmd.register(app)
    result = CliRunner().invoke(app, ["redteam", "run", "--json", "--scenario", "RT-CRED-001"])
    doc = json.loads(result.output)
    assert doc["missed"] == 1 and result.exit_code == 1  # a gate that lets anyone through


def test_url_target_says_what_it_cannot_run(tmp_path: Path) -> None:
    res = _run(tmp_path, "--target", "http://127.0.0.1:9", "--scenario", "RT-CRED-001")
    assert res.returncode == 2  # not run, never passed: without an identity it lacks an insider
    assert "not run: needs insider" in res.stdout

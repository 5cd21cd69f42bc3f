"""The console script's exit status: usage errors and typer.Exit codes are not swallowed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_fixtures import strongroom_exe


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STRONGROOM_HOME=str(tmp_path / "home"))
    env.pop("STRONGROOM_DATABASE_URL", None)
    return subprocess.run([strongroom_exe(), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_unknown_command_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    r = _run(tmp_path, "no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr and "Traceback" not in r.stderr


def test_doctor_exits_non_zero_on_unsafe_settings(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==0.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    r = _run(tmp_path, "doctor", "--lock", str(lock))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "unsafe settings found" in r.stdout and "Traceback" not in r.stderr


def test_a_bad_setting_names_the_variable_without_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_var = "STRONGROOM_AUDIT_COMMIT_DELAY_MS"
    monkeypatch.setenv(env_var, "500")
    r = _run(tmp_path, "doctor")
    assert r.returncode == 2, r.stdout + r.stderr
    assert env_var in r.stderr and "less than or equal to 50" in r.stderr
    assert "Traceback" not in r.stderr

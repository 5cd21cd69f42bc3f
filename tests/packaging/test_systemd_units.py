"""The systemd units under contrib/systemd/ parse cleanly and carry the hardening docs promise.

``systemd-analyze verify`` (Debian's systemd) runs on each unit with the
install prefix ``/opt/strongroom`` pointed at this checkout's console script (verify
checks that ExecStart's program exists). verify exits 0 on an unknown key or a
bad value (it only warns), so any output at all fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cli_fixtures import strongroom_exe
from testsupport import REPO_ROOT, need_tool

UNITS = REPO_ROOT / "contrib" / "systemd"
PREFIX = "/opt/strongroom/bin/strongroom"
#: What every strongroom unit must set (docs/operations.md, "Install").
HARDENING = {
    "LimitCORE": "0", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectSystem": "strict",
    "MemoryDenyWriteExecute": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
    "UMask": "0077",
}


def _copy_units(into: Path) -> None:
    """Every unit, its install prefix pointed at this checkout's console script."""
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.timer")]:
        text = unit.read_text(encoding="utf-8")
        (into / unit.name).write_text(text.replace(PREFIX, strongroom_exe()), encoding="utf-8")


def _service(unit: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", ["strongroom.service", "strongroom-witness.service",
                                  "strongroom-redteam.service"])
def test_unit_verifies_and_is_hardened(name: str, tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    text = (UNITS / name).read_text(encoding="utf-8")
    assert PREFIX in text
    _copy_units(tmp_path)  # a unit that Requires= another is verified beside it
    done = subprocess.run([tool, "verify", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr)

    service = _service(UNITS / name)
    for key, want in HARDENING.items():
        assert service.get(key) == [want], (name, key, service.get(key))
    assert service.get("EnvironmentFile"), name
    state = service["StateDirectory"][0]
    assert service["ReadWritePaths"] == [f"/var/lib/{state}"]
    assert "User" in service or service.get("DynamicUser") == ["yes"]


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening key and a missing program are reported."""
    tool = need_tool("systemd-analyze")
    text = (UNITS / "strongroom.service").read_text(encoding="utf-8")
    unit = tmp_path / "broken.service"
    unit.write_text(text.replace("LimitCORE=0", "LimitCOREE=0"), encoding="utf-8")
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert "LimitCOREE" in done.stderr and "not executable" in done.stderr


def test_serve_unit_checks_the_schema_before_serving() -> None:
    service = _service(UNITS / "strongroom.service")
    assert service["ExecStartPre"] == [f"{PREFIX} db upgrade --check"]
    assert service["ExecStart"][0].startswith(f"{PREFIX} serve ")


def test_redteam_timer_verifies_and_runs_the_suite_once(tmp_path: Path) -> None:
    """The timer and its service parse together; the service signs each run with the credential."""
    tool = need_tool("systemd-analyze")
    _copy_units(tmp_path)
    done = subprocess.run([tool, "verify", str(tmp_path / "strongroom-redteam.timer")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr)
    service = _service(UNITS / "strongroom-redteam.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [
        f"{PREFIX} redteam schedule --once --identity %d/redteam.identity"]
    assert service["LoadCredential"][0].startswith("redteam.identity:")

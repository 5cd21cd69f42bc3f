"""The SBOM lists what is installed; doctor finds lock drift and unsafe settings; the CLI faces."""

from __future__ import annotations

import json
import os
import pickle
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from strongroom.audit.config import AuditSettings
from strongroom.cli import supplychain_cmd
from strongroom.errors import InvalidInput
from strongroom.keys.config import KeysSettings
from strongroom.keys.keyring import KeyringStatus
from strongroom.supplychain.doctor import parse_lock, run_doctor
from strongroom.supplychain.sbom import build_sbom, dependency_closure

from vault_fixtures import make_model

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def test_sbom_is_cyclonedx_with_the_real_closure() -> None:
    bom = build_sbom()
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5"
    assert bom["metadata"]["component"]["name"] == "strongroom"
    names = {c["name"].lower(): c for c in bom["components"]}
    for dep in ("cryptography", "numpy", "sqlalchemy", "typer"):
        assert names[dep]["version"] == metadata.version(dep)
        assert names[dep]["purl"] == f"pkg:pypi/{dep}@{metadata.version(dep)}"
    refs = {c["bom-ref"] for c in bom["components"]} | {bom["metadata"]["component"]["bom-ref"]}
    assert all(d in refs for dep in bom["dependencies"] for d in dep["dependsOn"])
    assert "pytest" not in names  # a dev extra, not a runtime dependency


def _lock_for(pins: dict[str, str]) -> str:
    return "".join(f"{n}=={v} \\\n    --hash=sha256:{'0' * 64}\n" for n, v in pins.items())


def _status(sealed: bool, backend: str = "shamir") -> KeyringStatus:
    return KeyringStatus(initialized=True, sealed=sealed, backend=backend)


def test_doctor_reports_drift_and_unsafe_settings(tmp_path: Path) -> None:
    closure = {n: d.version for n, d in dependency_closure().items() if n != "strongroom"}
    pins = dict(closure)
    pins["numpy"] = "0.0.1"
    pins["not-installed-pkg"] = "1.0"
    del pins["typer"]
    lock = tmp_path / "requirements.lock"
    lock.write_text(_lock_for(pins))
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    report = run_doctor(
        lock=lock, status=_status(sealed=True),
        keys_settings=KeysSettings(key_backend="shamir", hsm_token="tok"),
        audit_settings=AuditSettings(witnesses="", witness_quorum=0),
        home=home, environ={"STRONGROOM_HSM_PIN": "1234"},
    )  # fmt: skip
    text = "\n".join(f"{f.check}: {f.message}" for f in report.findings)
    assert not report.ok
    for expected in ("numpy is", "the lock pins 0.0.1", "not-installed-pkg==1.0 is locked but not installed",
                     "typer", "sealed", "software keys", "HSM PIN", "no audit witnesses",
                     "group or others"):
        assert expected in text, text
    home.chmod(0o700)
    lock.write_text(_lock_for(closure))
    clean = run_doctor(lock=lock, status=_status(sealed=False),
                       keys_settings=KeysSettings(key_backend="shamir", hsm_token=None),
                       audit_settings=AuditSettings(witnesses="http://w k", witness_quorum=1),
                       home=home, environ={})
    assert clean.ok and clean.findings == []


def test_lock_pins_must_carry_hashes() -> None:
    with pytest.raises(InvalidInput, match="without --hash"):
        parse_lock("numpy==2.0\n")


def test_repository_lock_matches_this_environment() -> None:
    if not LOCK.is_file():
        pytest.fail("requirements.lock is missing from the repository")
    pins = parse_lock(LOCK.read_text())
    for name in ("cryptography", "numpy", "picklescan", "modelscan", "packaging"):
        assert name in pins, name


def _app() -> typer.Typer:
    app = typer.Typer()
    supplychain_cmd.register(app)
    return app


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("id",))


def test_cli_scan_and_sbom(tmp_path: Path) -> None:
    runner = CliRunner()
    make_model(tmp_path / "model.safetensors")
    ok = runner.invoke(_app(), ["scan", str(tmp_path)])
    assert ok.exit_code == 0 and "1 file(s) passed" in ok.output
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Evil(), protocol=3))
    bad = runner.invoke(_app(), ["scan", str(tmp_path)])
    assert bad.exit_code != 0 and "posix.system" in str(bad.exception)
    out = tmp_path / "sbom.json"
    assert runner.invoke(_app(), ["sbom", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["bomFormat"] == "CycloneDX"

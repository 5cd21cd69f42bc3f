"""``strongroom attest verify``: the real console script, and the same command over forged roots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from strongroom.attest import evidence
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.sevsnp import POLICY_DEBUG
from strongroom.cli.main import main

from cli_fixtures import strongroom_exe


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Milan")


@pytest.fixture(scope="module")
def chip(vendor: ForgedVendor) -> ForgedChip:
    return vendor.chip()


def _files(tmp_path: Path, chip: ForgedChip, report: bytes) -> tuple[Path, Path, Path]:
    rep, vcek, ask = tmp_path / "report.bin", tmp_path / "vcek.pem", tmp_path / "ask.pem"
    rep.write_bytes(report)
    vcek.write_bytes(chip.vcek_pem())
    ask.write_bytes(chip.ask.public_bytes(serialization.Encoding.PEM))
    return rep, vcek, ask


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([strongroom_exe(), "attest", "verify", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_console_script_refuses_forged_and_truncated_evidence(tmp_path: Path,
                                                              chip: ForgedChip) -> None:
    rep, vcek, ask = _files(tmp_path, chip, chip.report())
    forged = _cli(rep, "--vcek", vcek, "--collateral", ask, "--json")
    assert forged.returncode == 6 and "Traceback" not in forged.stderr
    assert json.loads(forged.stdout) == {**json.loads(forged.stdout), "verified": False,
                                         "check": "chain"}
    assert "chain:" in forged.stderr
    rep.write_bytes(chip.report()[:1000])
    short = _cli(rep, "--vcek", vcek)
    assert short.returncode == 6 and "size: an SEV-SNP report is 1184 bytes" in short.stderr


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *args: str | Path) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["strongroom", "attest", "verify", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_prints_facts_and_names_each_failed_check(
        tmp_path: Path, vendor: ForgedVendor, chip: ForgedChip,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The command as shipped, over a registry whose sev-snp trusts the forged vendor.
    monkeypatch.setattr(evidence, "PLATFORMS", {"sev-snp": vendor.platform})
    good = chip.report(measurement=b"\x42" * 48, report_data=b"\x07" * 64)
    rep, vcek, ask = _files(tmp_path, chip, good)
    code, out, _ = _run(monkeypatch, capsys, rep, "--vcek", vcek, "--collateral", ask, "--json")
    facts = json.loads(out)
    assert code == 0 and facts["verified"] is True
    assert facts["measurement"] == "42" * 48 and facts["report_data"] == "07" * 64
    assert facts["chip_id"] == chip.chip_id.hex() and facts["tcb"]["snp"] == 8
    code, out, _ = _run(monkeypatch, capsys, rep, "--vcek", vcek, "--collateral", ask)
    assert code == 0 and "measurement  " + "42" * 48 in out

    cases = {
        "signature": bytes([good[0]]) + good[1:0x95] + b"\x00" + good[0x96:],
        "debug": chip.report(policy=0x30000 | POLICY_DEBUG),
        "size": good[:-1],
    }
    for check, data in cases.items():
        rep.write_bytes(data)
        code, out, err = _run(monkeypatch, capsys, rep, "--vcek", vcek, "--collateral", ask,
                              "--json")
        assert code == 6 and json.loads(out)["check"] == check, (check, err)
        assert f"{check}:" in err
    code, _, err = _run(monkeypatch, capsys, tmp_path / "nope.bin")
    assert code == 2 and "cannot read" in err
    code, _, err = _run(monkeypatch, capsys, rep, "--platform", "sev-snp-test")
    assert code != 0 and "test-only" in err
    rep.write_bytes(good)
    other = ForgedVendor.create("Milan").chip()
    vcek.write_bytes(other.vcek_pem())
    code, out, _ = _run(monkeypatch, capsys, rep, "--vcek", vcek, "--collateral", ask, "--json")
    assert code == 6 and json.loads(out)["check"] == "chain"

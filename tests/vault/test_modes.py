"""Which payload mode stored files are in, as ``strongroom doctor`` and the posture report say it
(a real vault on SQLite and PostgreSQL, both modes imported)."""

from __future__ import annotations

from pathlib import Path

from strongroom.audit.config import AuditSettings
from strongroom.crypto import age
from strongroom.keys.config import KeysSettings
from strongroom.posture.controls import CONTROLS
from strongroom.posture.declaration import Declaration
from strongroom.posture.facts import Facts
from strongroom.supplychain.doctor import run_doctor
from strongroom.vault.modes import UNVERIFIED, payload_modes, summarize
from strongroom.vault.vault import Vault

from vault_fixtures import make_model


def _two_modes(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    make_model(src)
    vault.import_weights(src, "fips", cipher=age.AES_256_GCM)
    vault.import_weights(src, "plain")


def test_payload_modes_lists_each_file_under_its_cipher(vault: Vault, tmp_path: Path) -> None:
    _two_modes(vault, tmp_path)
    for key in (None, vault.manifest_key):
        modes = payload_modes(vault.store, key)
        assert modes[age.AES_256_GCM] == ["fips@1/m.safetensors"]
        assert modes[age.CHACHA20_POLY1305] == ["plain@1/m.safetensors"]
        assert UNVERIFIED not in modes
    assert summarize(modes) == "1 file in chacha20-poly1305, 1 file in aes-256-gcm"


def test_doctor_reports_the_modes_and_warns_where_the_vault_requires_aes(
        vault: Vault, tmp_path: Path) -> None:
    _two_modes(vault, tmp_path)
    modes = payload_modes(vault.store)
    common = {"lock": None, "status": None, "keys_settings": KeysSettings(),
              "audit_settings": AuditSettings(), "home": vault.settings.resolved_home,
              "environ": {}, "payload_modes": modes}
    relaxed = [f for f in run_doctor(**common).findings if f.check == "payload"]
    assert [f.level for f in relaxed] == ["info"]
    assert "1 file in aes-256-gcm" in relaxed[0].message
    strict = [f for f in run_doctor(**common, cipher=age.AES_256_GCM).findings
              if f.check == "payload"]
    assert [f.level for f in strict] == ["info", "warning"]
    assert "plain@1/m.safetensors" in strict[1].message
    assert "--cipher aes-256-gcm" in strict[1].remedy


def test_posture_evidence_names_the_modes() -> None:
    control = next(c for c in CONTROLS if getattr(c.rule, "__name__", "") == "_encrypted")
    facts = Facts(keyring={"initialized": True, "sealed": False}, artifacts=[
        {"name": "a", "verified": True, "ciphers": [age.AES_256_GCM]},
        {"name": "b", "verified": True, "ciphers": [age.CHACHA20_POLY1305]},
        {"name": "c", "verified": True}])
    status, evidence = control.evaluate(facts, Declaration(values={}))
    assert status == "met"
    assert "1 with aes-256-gcm (FIPS-approved), 2 with chacha20-poly1305 (age)" in evidence

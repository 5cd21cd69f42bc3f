"""Canaries: real encrypted decoys; any key request names who asked, at the gate and in the log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from strongroom.demo.monitor import demo_monitor
from strongroom.errors import AccessDenied
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.canaries import CanaryRegistry
from strongroom.monitor.detectors import AuditScanner, RiskEngine
from strongroom.release import ReleaseRequest

if TYPE_CHECKING:
    from strongroom.vault.vault import Vault


def _request(principal: str, artifact: str) -> ReleaseRequest:
    return ReleaseRequest(principal, b"", artifact, "model.safetensors", "blob", 1, "load", "")


def test_planted_canaries_are_real_artifacts_and_alarm_at_the_gate(vault: Vault) -> None:
    alerts = AlertManager(vault.store, audit=vault.audit)
    registry = CanaryRegistry(vault.store, alerts)
    weights = registry.plant_weights(vault, seed=7)
    doc = registry.plant_document(vault, seed=7)
    assert registry.names() == {weights.name, doc.name}
    assert "canary" not in weights.name and "canary" not in doc.name
    assert any(f.path.endswith(".md") for f in doc.files)
    loaded = vault.open_weights(weights.name)  # real encryption: it decrypts like any model
    assert any(name.startswith("model.layers.") for name in loaded)
    loaded.close()
    # The gate itself alarmed when the vault's own identity loaded the decoy above.
    loader = vault.identity.public.principal
    assert [a.subject for a in alerts.recent() if a.rule == "SR-CANARY"] == [loader]
    assert registry.check(_request("mallory", weights.ref)) is True
    assert registry.check(_request("mallory", "minilm@1")) is False
    canary = [a for a in alerts.recent() if a.rule == "SR-CANARY" and a.subject == "mallory"]
    assert len(canary) == 1 and canary[0].severity == "critical"
    assert canary[0].subject == "mallory" and "mallory" in canary[0].message
    with pytest.raises(AccessDenied):
        CanaryRegistry(vault.store, alerts, deny=True).check(_request("eve", doc.ref))


def test_the_detector_is_a_backstop_over_the_audit_log(vault: Vault) -> None:
    alerts = AlertManager(vault.store, audit=vault.audit)
    registry = CanaryRegistry(vault.store, alerts)
    decoy = registry.plant_weights(vault, seed=3)
    vault.open_weights(decoy.name).close()  # a key release nobody hooked
    raised = AuditScanner(vault.audit, RiskEngine(canaries=registry.names), alerts).scan()
    assert [a.rule for a in raised] == ["SR-CANARY"]
    assert raised[0].subject == vault.identity.public.principal


def test_demo_loop_is_stopped_at_the_cap(vault: Vault, tmp_path: object) -> None:
    from pathlib import Path

    from vault_fixtures import make_model

    root = Path(str(tmp_path)) / "shards"
    root.mkdir()
    for i in range(4):
        make_model(root / f"model-{i:05d}.safetensors", seed=i, prefix=f"s{i}.")
    vault.import_weights(root, "sharded")
    console = Console(record=True, width=200)
    assert demo_monitor(vault, console, artifact="sharded") is True
    text = console.export_text()
    assert "stopped at" in text and "SR-EGRESS-CAP" in text
    # the detectors then replay the real audit log, peers from the signed directory
    assert "detectors replayed" in text and "peer group" in text
    raised = [e for e in vault.audit.tail(200) if e.action == "alert.raise"]
    assert any("SR-EGRESS-CAP" in (e.reason + str(e.details) + e.object) for e in raised)


def test_demo_splits_a_single_file_model(vault: Vault, tmp_path: object) -> None:
    from pathlib import Path

    from vault_fixtures import make_model

    src = Path(str(tmp_path)) / "one.safetensors"
    make_model(src, big=True)
    vault.import_weights(src, "single")
    console = Console(record=True, width=200)
    assert demo_monitor(vault, console, artifact="single") is True
    text = console.export_text()
    assert "single-sharded in 6 shards" in text and "stopped at model-0000" in text

"""doctor's post-quantum check: custodians and transfer keys that are classical X25519 only."""

from __future__ import annotations

from pathlib import Path

from strongroom.audit.config import AuditSettings
from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.keys.config import KeysSettings
from strongroom.supplychain.doctor import run_doctor
from strongroom.supplychain.pq_wraps import Wraps, deployment_wraps, pq_summary
from strongroom.vault.vault import Vault


def test_classical_custodians_and_transfer_keys_are_named(vault: Vault, tmp_path: Path) -> None:
    hybrid = str(HybridIdentity.generate().recipient)
    classical = str(X25519Identity.generate().recipient)
    vault.record("transfer.export", "b-hybrid", "allow", enclave="enclave-b", recipient=hybrid)
    vault.record("transfer.export", "b-classical", "allow", enclave="enclave-c", recipient=classical)
    vault.record("transfer.export", "b-denied", "deny", enclave="enclave-d", recipient=classical)

    wraps = deployment_wraps(vault.store)
    # The fixture's ceremony deals one custodian a hybrid key and two classical ones.
    assert len(wraps.custodians) == 3 and len(wraps.classical_custodians) == 2
    assert [t[0] for t in wraps.transfers] == ["b-hybrid", "b-classical"]
    assert wraps.classical_transfers == [("b-classical", "enclave-c", classical)]
    message, remedy = pq_summary(wraps)
    assert "2 of 3 custodians' shares are wrapped to classical X25519" in message
    assert "1 transfer bundle(s)" in message and "enclave-c" in message
    assert "strongroom rekey" in remedy and "strongroom transfer keygen" in remedy

    report = run_doctor(lock=None, status=None, keys_settings=KeysSettings(),
                        audit_settings=AuditSettings(witnesses="", witness_quorum=0),
                        home=tmp_path / "nowhere", environ={}, wraps=wraps)
    (finding,) = [f for f in report.findings if f.check == "post-quantum"]
    assert finding.level == "warning" and finding.message == message


def test_all_hybrid_is_quiet() -> None:
    key = str(HybridIdentity.generate().recipient)
    assert pq_summary(Wraps(custodians=[key, key], transfers=[("b", "e", key)])) == ("", "")


def test_classical_officers_are_named(tmp_path: Path) -> None:
    """doctor names officers with no ML-DSA-65 key pinned, by key id; hybrid ones are quiet."""
    from strongroom.keys.identity import Identity
    from strongroom.keys.officers import Officers

    key = str(HybridIdentity.generate().recipient)
    wraps = Wraps(custodians=[key], transfers=[])
    hybrid, classical = Identity.generate(pq=True).public, Identity.generate().public
    assert hybrid.mldsa_key is not None
    officers = Officers({hybrid.key_id: hybrid.public_key, classical.key_id: classical.public_key},
                        {hybrid.key_id: hybrid.mldsa_key})
    message, remedy = pq_summary(wraps, officers)
    assert f"1 of 2 security officers sign with Ed25519 alone (key ids {classical.key_id})" \
        in message and hybrid.key_id not in message
    assert "keys new-identity --pq" in remedy
    report = run_doctor(lock=None, status=None, keys_settings=KeysSettings(),
                        audit_settings=AuditSettings(witnesses="", witness_quorum=0),
                        home=tmp_path / "nowhere", environ={}, wraps=wraps, officers=officers)
    (finding,) = [f for f in report.findings if f.check == "post-quantum"]
    assert finding.level == "warning" and finding.message == message
    only_hybrid = Officers({hybrid.key_id: hybrid.public_key}, {hybrid.key_id: hybrid.mldsa_key})
    assert pq_summary(wraps, only_hybrid) == ("", "")

"""The release gate with attestation: a label saying ``attested: <policy>`` keeps keys in enclaves.

A real unsealed keyring and audit log (SQLite and PostgreSQL); the key-custody
evidence rule of the other gate tests, with the label's verdict added as the
deployment's GrantEvidence adds it (``attested`` in the accepted details).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from strongroom.access.directory import ResourceLabel
from strongroom.attest.admission import AdmissionDesk, AttestationService, AttestedClaim, binding
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.policy import AttestationPolicy
from strongroom.attest.sevsnp import POLICY_DEBUG
from strongroom.crypto.age import X25519Identity
from strongroom.errors import AttestationRefused
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseGate, ReleaseRequest, sign_release_evidence
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store

from keyring_fixtures import unsealed_service

PLATFORM = "sev-snp-test"
GOOD = b"\x3c" * 48


class Labelled:
    """The key-custody evidence rule, plus the label's ``attested`` as GrantEvidence reports it."""

    def __init__(self, inner: Any, attested: str) -> None:
        self.inner, self.attested = inner, attested

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        return {**self.inner.verify(request, now), "attested": self.attested}


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Genoa")


@pytest.fixture(scope="module")
def chip(vendor: ForgedVendor) -> ForgedChip:
    return vendor.chip()


@pytest.fixture
def world(store: Store, tmp_path: Path, vendor: ForgedVendor
          ) -> Iterator[tuple[ReleaseGate, Identity, AdmissionDesk]]:
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        svc.wrap_file_key("blob-1", os.urandom(16))
        base = svc._gate
        assert base is not None
        desk = AdmissionDesk({PLATFORM: vendor.platform()})
        policy = AttestationPolicy(name="inference", serial=1, platforms=(PLATFORM,),
                                   measurements=frozenset({GOOD.hex()}))
        service = AttestationService(desk, {"inference": policy}.get)
        gate = ReleaseGate(base.keyring, base.audit, evidence=Labelled(base.evidence, "inference"),
                           egress=base.egress, sizes=base.sizes, attestation=service)
        yield gate, officer, desk
    finally:
        svc.seal()


def _request(officer: Identity) -> ReleaseRequest:
    ev = sign_release_evidence(officer.private_key, artifact="m@1", shard="w.safetensors",
                               blob_id="blob-1", purpose="load")
    return ReleaseRequest(principal=officer.public.principal,
                          principal_key=officer.public.public_bytes, artifact="m@1",
                          shard="w.safetensors", blob_id="blob-1", nbytes=1000, purpose="load",
                          evidence=ev)


def _claim(desk: AdmissionDesk, chip: ForgedChip, **report: Any) -> tuple[X25519Identity,
                                                                          AttestedClaim]:
    identity = X25519Identity.generate()
    nonce = desk.challenge()
    data = binding(identity.recipient.public_bytes, nonce)
    evidence = chip.report(report_data=data, **{"measurement": GOOD, **report})
    return identity, AttestedClaim(identity.recipient, PLATFORM, evidence, chip.collateral(), nonce)


def _last(gate: ReleaseGate) -> Any:
    return gate.audit.tail(1)[0]


def test_labelled_artifact_goes_only_into_an_attested_enclave(
        world: tuple[ReleaseGate, Identity, AdmissionDesk], chip: ForgedChip) -> None:
    gate, officer, desk = world
    with pytest.raises(AttestationRefused, match="labelled attested: inference") as info:
        gate.release(_request(officer))
    assert info.value.check == "evidence"
    assert _last(gate).decision == "deny"

    identity, claim = _claim(desk, chip)
    stanza = gate.release_attested(_request(officer), claim)
    file_key = identity.unwrap([stanza])
    assert file_key is not None and len(file_key) == 16
    entry = _last(gate)
    assert entry.decision == "allow"
    assert entry.details["attestation"]["measurement"] == GOOD.hex()
    assert entry.details["attestation"]["chip_id"] == chip.chip_id.hex()
    assert entry.details["attestation"]["policy"] == "inference"

    # The same ephemeral key again: its admission stands, no evidence needed.
    again = gate.release_attested(_request(officer), AttestedClaim(identity.recipient))
    assert identity.unwrap([again]) == file_key
    # Another key without evidence: refused.
    stranger = X25519Identity.generate().recipient
    with pytest.raises(AttestationRefused) as info:
        gate.release_attested(_request(officer), AttestedClaim(stranger))
    assert info.value.check == "evidence"


@pytest.mark.parametrize(("report", "check"), [
    ({"measurement": b"\x00" * 48}, "measurement"),
    ({"policy": 0x30000 | POLICY_DEBUG}, "debug"),
])
def test_refusals_are_audited_and_release_nothing(
        world: tuple[ReleaseGate, Identity, AdmissionDesk], chip: ForgedChip,
        report: dict[str, Any], check: str) -> None:
    gate, officer, desk = world
    _, claim = _claim(desk, chip, **report)
    with pytest.raises(AttestationRefused) as info:
        gate.release_attested(_request(officer), claim)
    assert info.value.check == check
    entry = _last(gate)
    assert entry.decision == "deny" and check in entry.reason


def test_replayed_claim_with_another_key(world: tuple[ReleaseGate, Identity, AdmissionDesk],
                                         chip: ForgedChip) -> None:
    gate, officer, desk = world
    _, claim = _claim(desk, chip)
    thief = X25519Identity.generate()
    stolen = AttestedClaim(thief.recipient, claim.platform, claim.evidence, claim.collateral,
                           claim.nonce)
    with pytest.raises(AttestationRefused) as info:
        gate.release_attested(_request(officer), stolen)
    assert info.value.check == "binding"


def test_label_statement_carries_attested() -> None:
    label = ResourceLabel(resource="m", classification=3, attested="inference")
    st = label.to_statement()
    assert st["attested"] == "inference"
    assert ResourceLabel.from_statement(st).attested == "inference"
    plain = ResourceLabel(resource="m", classification=3).to_statement()
    assert "attested" not in plain and ResourceLabel.from_statement(plain).attested == ""


def test_unlabelled_release_is_unchanged(store: Store, tmp_path: Path) -> None:
    svc: LocalKeyService
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        key = os.urandom(16)
        svc.wrap_file_key("blob-1", key)
        assert bytes(svc.release(_request(officer))) == key
    finally:
        svc.seal()

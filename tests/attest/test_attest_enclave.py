"""The workload's side: evidence sources, the SEV-SNP certificate table, the test chip file."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from strongroom.attest.admission import AdmissionDesk, binding
from strongroom.attest.enclave import (
    TEST_CHIP_ENV,
    ConfigfsTsm,
    Enclave,
    evidence_source,
    sev_snp_certificates,
)
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.policy import AttestationPolicy
from strongroom.errors import ConfigError, InvalidInput

VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")


def test_certificate_table_gives_known_certificates_in_order() -> None:
    entries = [(VCEK, b"vcek-der"), (uuid.uuid4(), b"other"), (ASK, b"ask-der")]
    head = 24 * (len(entries) + 1)
    table, body = b"", b""
    for guid, blob in entries:
        table += guid.bytes_le + struct.pack("<II", head + len(body), len(blob))
        body += blob
    table += bytes(24)
    assert sev_snp_certificates(table + body) == [b"vcek-der", b"ask-der"]
    # an entry pointing past the end is skipped, not read
    bad = VCEK.bytes_le + struct.pack("<II", 48, 4096) + bytes(24)
    assert sev_snp_certificates(bad) == []


def test_no_tee_is_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_CHIP_ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        ConfigfsTsm("tdx", root=tmp_path / "absent")
    assert "no tdx evidence" in info.value.message and "/dev/tdx_guest" in info.value.message
    with pytest.raises(InvalidInput):
        evidence_source("sev-snp-test")


def test_test_chip_round_trips_and_its_evidence_is_admitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = ForgedVendor.create("Milan")
    path = tmp_path / "chip.json"
    vendor.chip().save(path, b"\x42" * 48)
    monkeypatch.setenv(TEST_CHIP_ENV, str(path))
    enclave = Enclave(evidence_source("sev-snp"))
    desk = AdmissionDesk({"sev-snp-test": vendor.platform()})
    nonce = desk.challenge()
    claim = enclave.claim(nonce)
    policy = AttestationPolicy(
        name="p",
        serial=1,
        platforms=("sev-snp-test",),
        measurements=frozenset({(b"\x42" * 48).hex()}),
    )
    adm = desk.admit(
        policy, claim.platform, claim.evidence, claim.collateral, claim.recipient, claim.nonce
    )
    assert adm.evidence.report_data == binding(enclave.identity.recipient.public_bytes, nonce)
    key = bytes(range(16))
    assert enclave.open(desk.wrap(key, adm)) == bytearray(key)
    path.write_text("{}")
    with pytest.raises(InvalidInput, match="test chip"):
        ForgedChip.load(path)

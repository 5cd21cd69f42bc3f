"""Intel TDX through dcap-qvl: refusals that need no sample, and Phala's public sample quote.

The sample quote and collateral published with dcap-qvl (``sample/tdx_quote``,
``sample/tdx_quote_collateral.json``, ``sample/tdx_quote_outdated*``) are not
shipped in this repository; the tests that use them run when
``STRONGROOM_DCAP_QVL_SAMPLES`` names a directory holding them (docs/attestation.md).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from strongroom.attest.evidence import Collateral, platform_named
from strongroom.attest.forge import ForgedVendor
from strongroom.errors import AttestationRefused

pytest.importorskip("dcap_qvl")

SAMPLES = os.environ.get("STRONGROOM_DCAP_QVL_SAMPLES", "")
#: Inside the sample collateral's validity (TCB info issued 2025-06-19, next update 2025-07-19).
SAMPLE_NOW = datetime(2025, 7, 1, tzinfo=UTC)
SAMPLE_MRTD = ("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
               "de03ae6dc5f87f27428b2538873118b7")


def _refused(evidence: bytes, collateral: Collateral, now: datetime = SAMPLE_NOW) -> str:
    with pytest.raises(AttestationRefused) as info:
        platform_named("tdx").verify(evidence, collateral, now=now)
    return info.value.check


def test_unreadable_quotes_are_refused() -> None:
    assert _refused(b"", Collateral()) == "quote"
    assert _refused(os.urandom(600), Collateral()) == "quote"
    snp_report = ForgedVendor.create("Milan").chip().report()
    assert _refused(snp_report, Collateral()) == "quote"


@pytest.fixture
def sample() -> tuple[bytes, Collateral]:
    folder = Path(SAMPLES)
    if not SAMPLES or not (folder / "tdx_quote").exists():
        pytest.skip("STRONGROOM_DCAP_QVL_SAMPLES does not name dcap-qvl's sample directory")
    return ((folder / "tdx_quote").read_bytes(),
            Collateral.from_pem((folder / "tdx_quote_collateral.json").read_bytes()))


def test_public_sample_quote_verifies_to_intels_root(sample: tuple[bytes, Collateral]) -> None:
    quote, collateral = sample
    ev = platform_named("tdx").verify(quote, collateral, now=SAMPLE_NOW)
    assert ev.platform == "tdx" and ev.measurement == SAMPLE_MRTD
    assert ev.details["status"] == "UpToDate" and ev.details["fmspc"] == "B0C06F000000"
    assert len(ev.report_data) == 64 and not ev.debug


def test_sample_refusals(sample: tuple[bytes, Collateral]) -> None:
    quote, collateral = sample
    assert _refused(quote, Collateral()) == "collateral"
    assert _refused(quote, collateral, datetime(2026, 12, 1, tzinfo=UTC)) == "expired"
    assert _refused(quote, collateral, datetime(2024, 1, 1, tzinfo=UTC)) == "expired"
    for offset in (48 + 20, 48 + 184, 600, 1000):  # TD report fields, QE report
        bad = bytearray(quote)
        bad[offset] ^= 1
        assert _refused(bytes(bad), collateral) == "signature", offset
    assert _refused(quote[:600], collateral) == "quote"
    outdated = Path(SAMPLES) / "tdx_quote_outdated"
    if outdated.exists():
        old = Collateral.from_pem((Path(SAMPLES) / "tdx_quote_outdated_collateral.json")
                                  .read_bytes())
        assert _refused(outdated.read_bytes(), old, datetime(2026, 3, 1, tzinfo=UTC)) in (
            "tcb", "chain")

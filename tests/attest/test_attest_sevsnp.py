"""SEV-SNP verification: AMD's shipped roots, forged vendors' reports, and every way to break one."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from strongroom.attest.evidence import Collateral, platform_named
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.sevsnp import POLICY_DEBUG, REPORT_SIZE, SevSnp
from strongroom.errors import AttestationRefused, ConfigError

NOW = datetime.now(UTC)
MEASUREMENT = bytes(range(48))

#: SHA-256 of the DER of AMD's ARKs as AMD's KDS serves them (cert_chain of each product line).
AMD_ARK_SHA256 = {
    "Milan": "69d063b45344d26a",
    "Genoa": "4c6598d19c18719c",
    "Turin": "1f084161a44bb6d9",
}


@pytest.fixture(scope="module")
def milan() -> ForgedVendor:
    return ForgedVendor.create("Milan")


@pytest.fixture(scope="module")
def genoa() -> ForgedVendor:
    return ForgedVendor.create("Genoa")


@pytest.fixture(scope="module")
def chip(milan: ForgedVendor) -> ForgedChip:
    return milan.chip()


def refused(platform: SevSnp, report: bytes, collateral: Collateral, *,
            now: datetime = NOW) -> str:
    with pytest.raises(AttestationRefused) as info:
        platform.verify(report, collateral, now=now)
    return info.value.check


def test_amd_roots_ship_for_three_product_lines_and_are_amds() -> None:
    snp = SevSnp.with_amd_roots()
    assert snp.products == ("Genoa", "Milan", "Turin")
    for product, prefix in AMD_ARK_SHA256.items():
        ark = snp._roots[product].ark
        der = ark.public_bytes(serialization.Encoding.DER)
        assert hashlib.sha256(der).hexdigest().startswith(prefix), product
        assert ark.not_valid_after_utc.year >= 2045
    assert platform_named("sev-snp").name == "sev-snp"


def test_test_platform_cannot_be_selected() -> None:
    with pytest.raises(ConfigError, match="test-only"):
        platform_named("sev-snp-test")
    with pytest.raises(ConfigError, match="unknown"):
        platform_named("sgx")


def test_forged_vendor_is_not_trusted_by_amd_roots(chip: ForgedChip) -> None:
    snp = SevSnp.with_amd_roots()
    assert refused(snp, chip.report(), chip.collateral()) == "chain"


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_good_report_verifies_and_reports_its_facts(product: str, version: int,
                                                    milan: ForgedVendor) -> None:
    vendor = milan if product == "Milan" else ForgedVendor.create(product)
    chip = vendor.chip()
    report = chip.report(measurement=MEASUREMENT, report_data=b"\xab" * 64, version=version)
    ev = vendor.platform().verify(report, chip.collateral(), now=NOW)
    assert ev.platform == "sev-snp-test"
    assert ev.measurement == MEASUREMENT.hex()
    assert ev.report_data == b"\xab" * 64
    assert ev.tcb == chip.tcb
    assert ev.chip_id == chip.chip_id.hex()
    assert ev.details["product"] == product and ev.details["version"] == version
    assert ev.as_json()["verified"] is True


def test_every_byte_flipped_is_refused(milan: ForgedVendor, chip: ForgedChip) -> None:
    platform, collateral = milan.platform(), chip.collateral()
    report = chip.report(measurement=MEASUREMENT)
    checks = set()
    for i in range(REPORT_SIZE):
        bad = bytearray(report)
        bad[i] ^= 0x01
        checks.add(refused(platform, bytes(bad), collateral))
    assert checks <= {"version", "signature-algorithm", "signing-key", "signature", "size"}
    assert "signature" in checks


@pytest.mark.parametrize("size", [0, 1, 0x2A0, REPORT_SIZE - 1, REPORT_SIZE + 1])
def test_truncated_or_padded_report_is_refused(size: int, milan: ForgedVendor,
                                               chip: ForgedChip) -> None:
    report = chip.report()
    data = (report + b"\0")[:size]
    assert refused(milan.platform(), data, chip.collateral()) == "size"


def test_report_signed_by_another_chips_key(milan: ForgedVendor, chip: ForgedChip) -> None:
    other = milan.chip()
    report = chip.report(key=other.key)
    assert refused(milan.platform(), report, chip.collateral()) == "signature"


def test_another_chips_vcek_for_this_chip_id(milan: ForgedVendor, chip: ForgedChip) -> None:
    other = milan.chip()
    report = other.report(chip_id=chip.chip_id)
    assert refused(milan.platform(), report, other.collateral()) == "chip-id"


def test_reported_tcb_other_than_the_vcek_was_issued_for(milan: ForgedVendor,
                                                         chip: ForgedChip) -> None:
    lower = bytes([2, 0, 0, 0, 0, 0, 8, 115])
    assert refused(milan.platform(), chip.report(reported_tcb=lower), chip.collateral()) == "tcb"


def test_debug_policy_is_refused(milan: ForgedVendor, chip: ForgedChip) -> None:
    report = chip.report(policy=0x30000 | POLICY_DEBUG)
    assert refused(milan.platform(), report, chip.collateral()) == "debug"


def test_unsigned_and_vlek_reports_need_their_key(milan: ForgedVendor, chip: ForgedChip) -> None:
    assert refused(milan.platform(), chip.report(signing_key=7), chip.collateral()) == "signing-key"
    assert refused(milan.platform(), chip.report(signing_key=1), chip.collateral()) == "chain"


def test_vcek_missing_from_collateral(milan: ForgedVendor, chip: ForgedChip) -> None:
    assert refused(milan.platform(), chip.report(), Collateral((chip.ask,))) == "chain"


def test_chain_mixing_product_lines_is_refused(milan: ForgedVendor, genoa: ForgedVendor) -> None:
    platform = milan.platform(genoa)
    # A VCEK that says Milan but was issued by Genoa's ASK.
    mixed = genoa.chip(product_name="Milan-B0")
    assert refused(platform, mixed.report(), mixed.collateral()) == "product-line"
    # A Milan VCEK whose report's CPUID says Genoa.
    chip = milan.chip()
    assert refused(platform, chip.report(cpuid=(0x19, 0x11, 0x01)), chip.collateral()) == (
        "product-line")
    # Genoa's ASK offered for a Milan VCEK: the Milan ASK is required.
    assert refused(platform, chip.report(), Collateral((chip.vcek, genoa.ask))) == "chain"


def test_product_without_installed_root(genoa: ForgedVendor, milan: ForgedVendor) -> None:
    chip = genoa.chip()
    assert refused(milan.platform(), chip.report(), chip.collateral()) == "root"


def test_substituted_ark_in_collateral_is_refused(milan: ForgedVendor, chip: ForgedChip) -> None:
    rogue = ForgedVendor.create("Milan")
    collateral = Collateral((chip.vcek, chip.ask, rogue.ark))
    assert refused(milan.platform(), chip.report(), collateral) == "root"


def test_expired_vcek_is_refused(milan: ForgedVendor) -> None:
    chip = milan.chip(days=30)
    report = chip.report()
    milan.platform().verify(report, chip.collateral(), now=NOW)
    assert refused(milan.platform(), report, chip.collateral(),
                   now=NOW + timedelta(days=40)) == "expired"


def _crl(vendor: ForgedVendor, revoked: x509.Certificate | None, *,
         next_update: datetime) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(vendor.ark.subject)
               .last_update(NOW - timedelta(days=1)).next_update(next_update))
    if revoked is not None:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(revoked.serial_number)
            .revocation_date(NOW - timedelta(hours=1)).build())
    return builder.sign(vendor.ark_key, hashes.SHA384(),
                        rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48))


def test_revoked_ask_and_stale_or_forged_crl(milan: ForgedVendor, chip: ForgedChip) -> None:
    platform, report = milan.platform(), chip.report()
    good_crl = _crl(milan, None, next_update=NOW + timedelta(days=7))
    platform.verify(report, Collateral((chip.vcek, chip.ask), (good_crl,)), now=NOW)
    revoked = _crl(milan, chip.ask, next_update=NOW + timedelta(days=7))
    assert refused(platform, report, Collateral((chip.vcek, chip.ask), (revoked,))) == "revoked"
    stale = _crl(milan, None, next_update=NOW - timedelta(days=1))
    assert refused(platform, report, Collateral((chip.vcek, chip.ask), (stale,))) == "expired"
    rogue = ForgedVendor.create("Milan")
    forged = _crl(rogue, None, next_update=NOW + timedelta(days=7))
    assert refused(platform, report, Collateral((chip.vcek, chip.ask), (forged,))) == "revoked"


def test_collateral_reads_pem_bundles_and_der(chip: ForgedChip) -> None:
    pem = chip.vcek_pem() + chip.ask.public_bytes(serialization.Encoding.PEM)
    assert len(Collateral.from_pem(pem).certificates) == 2
    der = chip.vcek.public_bytes(serialization.Encoding.DER)
    assert Collateral.from_pem(der).certificates == (chip.vcek,)

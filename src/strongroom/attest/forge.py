"""Throwaway SEV-SNP vendors and chips for tests, benchmarks and red-team drills.

AMD's ARKs are the only roots a deployment trusts; this module makes *other*
roots, shaped like AMD's (RSA-PSS/SHA-384 ARK -> ASK -> P-384 VCEK with AMD's
extensions), and signs reports with them, as go-sev-guest does for its tests::

    vendor = ForgedVendor.create("Milan")
    chip = vendor.chip()
    report = chip.report(measurement=m, report_data=binding)
    ev = vendor.platform().verify(report, chip.collateral(), now=now)

The platform it returns is named ``sev-snp-test``: :func:`platform_named`
refuses that name and an attestation policy cannot list it, so a deployment
cannot be pointed at these roots. Nothing here is used by the gate itself.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from strongroom.attest.evidence import TEST_SUFFIX, Collateral
from strongroom.attest.sevsnp import (
    _OID,
    _TCB_OIDS,
    OID_HWID,
    OID_PRODUCT_NAME,
    REPORT_SIZE,
    SIGNED_SIZE,
    ProductRoots,
    SevSnp,
)
from strongroom.datadir import create_private_file
from strongroom.errors import InvalidInput

__all__ = ["DEFAULT_POLICY", "ForgedChip", "ForgedVendor"]

#: A production-like guest policy: ABI 0.0, SMT allowed, reserved bit 17 set, no debug.
DEFAULT_POLICY = 0x30000
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strongroom test vendor"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: str, public: object, not_before: datetime,
             days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
            .not_valid_before(not_before).not_valid_after(not_before + timedelta(days=days)))


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return bytes([0x02, len(body)]) + body


@dataclass
class ForgedChip:
    """One forged chip: its VCEK key and certificate, and the ASK that issued it."""

    product: str
    key: ec.EllipticCurvePrivateKey
    vcek: x509.Certificate
    ask: x509.Certificate
    chip_id: bytes
    tcb: dict[str, int]

    def vcek_pem(self) -> bytes:
        """The VCEK certificate as PEM (what --vcek takes)."""
        return self.vcek.public_bytes(serialization.Encoding.PEM)

    def collateral(self) -> Collateral:
        """The VCEK and its ASK, as an extended report's certificate table gives them."""
        return Collateral((self.vcek, self.ask))

    def report(self, *, measurement: bytes = b"\x11" * 48, report_data: bytes = b"",
               policy: int = DEFAULT_POLICY, version: int = 3, vmpl: int = 0,
               reported_tcb: bytes | None = None, chip_id: bytes | None = None,
               signing_key: int = 0, key: ec.EllipticCurvePrivateKey | None = None,
               cpuid: tuple[int, int, int] | None = None) -> bytes:
        """A signed report with these fields (others as a real guest would see them)."""
        raw = bytearray(REPORT_SIZE)
        struct.pack_into("<IIQ", raw, 0, version, 1, policy)
        struct.pack_into("<II", raw, 0x30, vmpl, 1)
        tcb = reported_tcb if reported_tcb is not None else self.encoded_tcb()
        raw[0x38:0x40] = tcb
        struct.pack_into("<I", raw, 0x48, signing_key << 2)
        raw[0x50:0x90] = report_data.ljust(64, b"\0")
        raw[0x90:0xC0] = measurement
        raw[0x140:0x160] = os.urandom(32)
        raw[0x180:0x188] = tcb
        if version >= 3:
            raw[0x188:0x18B] = bytes(cpuid or _CPUID[self.product])
        raw[0x1A0:0x1E0] = self.chip_id if chip_id is None else chip_id
        raw[0x1E0:0x1E8] = tcb
        raw[0x1F0:0x1F8] = tcb
        der = (key or self.key).sign(bytes(raw[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        raw[SIGNED_SIZE:SIGNED_SIZE + 72] = r.to_bytes(72, "little")
        raw[SIGNED_SIZE + 72:SIGNED_SIZE + 144] = s.to_bytes(72, "little")
        return bytes(raw)

    def save(self, path: Path, measurement: bytes) -> None:
        """Write this chip (its private key too: a test's) and the image it measures, as JSON.

        What ``STRONGROOM_ATTEST_TEST_CHIP`` names for a test workload
        (:mod:`strongroom.attest.enclave`): never a deployment's.
        """
        key = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        doc = {"test_only": True, "product": self.product, "key": key.decode(),
               "vcek": self.vcek_pem().decode(),
               "ask": self.ask.public_bytes(serialization.Encoding.PEM).decode(),
               "chip_id": self.chip_id.hex(), "tcb": self.tcb, "measurement": measurement.hex()}
        create_private_file(path)
        path.write_text(json.dumps(doc), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> tuple[ForgedChip, bytes]:
        """The chip and measurement :meth:`save` wrote (InvalidInput naming the file otherwise)."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            key = serialization.load_pem_private_key(doc["key"].encode(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or doc.get("test_only") is not True:
                raise ValueError("not a forged chip")
            chip = cls(str(doc["product"]), key, x509.load_pem_x509_certificate(
                doc["vcek"].encode()), x509.load_pem_x509_certificate(doc["ask"].encode()),
                bytes.fromhex(doc["chip_id"]), {str(k): int(v) for k, v in doc["tcb"].items()})
            return chip, bytes.fromhex(doc["measurement"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"cannot read the test chip ({type(exc).__name__})",
                               obj=str(path), remedy="unset STRONGROOM_ATTEST_TEST_CHIP "
                               "(test only)") from None

    def encoded_tcb(self) -> bytes:
        """This chip's TCB as the 8-byte TCB_VERSION of its product line."""
        t = self.tcb
        if self.product == "Turin":
            return bytes([t["fmc"], t["bootloader"], t["tee"], t["snp"], 0, 0, 0, t["microcode"]])
        return bytes([t["bootloader"], t["tee"], 0, 0, 0, 0, t["snp"], t["microcode"]])


@dataclass
class ForgedVendor:
    """A forged product line: ARK and ASK keys and certificates, shaped like AMD's."""

    product: str
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate
    not_before: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=1))

    @classmethod
    def create(cls, product: str = "Milan", *, key_size: int = 2048,
               not_before: datetime | None = None) -> ForgedVendor:
        """A new vendor for ``product`` (2048-bit RSA by default: AMD's 4096 is slow to make)."""
        start = not_before or datetime.now(UTC) - timedelta(days=1)
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        ark = _builder(f"ARK-{product}", f"ARK-{product}", ark_key.public_key(), start, 9000).sign(
            ark_key, hashes.SHA384(), rsa_padding=_PSS)
        ask = _builder(f"SEV-{product}", f"ARK-{product}", ask_key.public_key(), start, 9000).sign(
            ark_key, hashes.SHA384(), rsa_padding=_PSS)
        return cls(product, ark_key, ark, ask_key, ask, start)

    def roots(self) -> dict[str, ProductRoots]:
        """This vendor's ARK as the only root (the ASK travels in each chip's collateral)."""
        return {self.product: ProductRoots(self.product, self.ark)}

    def platform(self, *others: ForgedVendor) -> SevSnp:
        """A verifier trusting this vendor's (and ``others``') roots, named ``sev-snp-test``."""
        roots = self.roots()
        for other in others:
            roots.update(other.roots())
        return SevSnp(roots, name="sev-snp" + TEST_SUFFIX)

    def chip(self, *, tcb: dict[str, int] | None = None, chip_id: bytes | None = None,
             product_name: str | None = None, days: int = 2555) -> ForgedChip:
        """A new chip with a VCEK for ``tcb`` issued by this vendor's ASK."""
        if tcb is None:
            tcb = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
            if self.product == "Turin":
                tcb["fmc"] = 1
        chip_id = chip_id or os.urandom(64)
        key = ec.generate_private_key(ec.SECP384R1())
        builder = _builder("SEV-VCEK", f"SEV-{self.product}", key.public_key(),
                           self.not_before, days)
        name = (product_name or f"{self.product}-B0").encode()
        exts = {_OID + "1": _der_int(0), OID_PRODUCT_NAME: bytes([0x16, len(name)]) + name,
                OID_HWID: chip_id}
        exts.update({_TCB_OIDS[k]: _der_int(v) for k, v in tcb.items()})
        for oid, value in exts.items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
        vcek = builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=_PSS)
        return ForgedChip(self.product, key, vcek, self.ask, chip_id, dict(tcb))


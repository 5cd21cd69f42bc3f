"""AMD SEV-SNP attestation reports: parse (ABI report versions 2-5) and verify offline.

A report is 0x4A0 bytes, little-endian, signed by the chip's VCEK (or the
cloud provider's VLEK) with ECDSA P-384/SHA-384 over bytes ``0..0x2A0``. The
signing key's certificate is given beside the report (the guest's extended
report or AMD's KDS supply it) and must chain, with RSA-PSS/SHA-384, through
the product line's ASK (VCEK) or ASVK (VLEK) to that line's ARK, which ships
with this package (``roots/amd-*.pem``). Use it like this::

    snp = SevSnp.with_amd_roots()
    ev = snp.verify(report_bytes, Collateral.from_pem(vcek_pem, cert_chain_pem), now=now)

Every refusal is an :class:`~strongroom.errors.AttestationRefused` whose
``check`` names what failed: ``size``, ``version``, ``signature-algorithm``,
``signing-key``, ``chain``, ``root``, ``product-line``, ``expired``,
``revoked``, ``signature``, ``chip-id``, ``tcb``, ``debug``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from strongroom.attest.evidence import Collateral, VerifiedEvidence, load_certificates, refuse

__all__ = [
    "PRODUCTS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "ProductRoots",
    "Report",
    "SevSnp",
    "decode_tcb",
    "load_roots",
]

#: Size of an ATTESTATION_REPORT and of its signed part (the signature starts at 0x2A0).
REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
#: Report versions this verifier reads (ABI 1.55: 2; 1.56: 3; 1.57: 4, 5).
VERSIONS = (2, 3, 4, 5)
#: SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only one AMD defines.
ECDSA_P384_SHA384 = 1
#: Policy bit 19: the guest may be debugged (its memory is readable by the host).
POLICY_DEBUG = 1 << 19
#: The product lines whose ARK ships with the package.
PRODUCTS = ("Milan", "Genoa", "Turin")
#: Each ECDSA component is 72 bytes little-endian (zero-extended from 48).
_COMPONENT = 72
_SIG_END = SIGNED_SIZE + 2 * _COMPONENT

#: AMD's VCEK/VLEK certificate extensions (SEV-SNP "Versioned Chip Endorsement Key" spec).
_OID = "1.3.6.1.4.1.3704.1."
OID_PRODUCT_NAME = _OID + "2"
OID_HWID = _OID + "4"
_TCB_OIDS = {"bootloader": _OID + "3.1", "tee": _OID + "3.2", "snp": _OID + "3.3",
             "microcode": _OID + "3.8", "fmc": _OID + "3.9"}


@dataclass(frozen=True)
class Report:
    """The fields of one attestation report, as the firmware laid them out."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid: tuple[int, int, int]
    chip_id: bytes
    committed_tcb: bytes
    launch_tcb: bytes
    signature_r: bytes
    signature_s: bytes

    @classmethod
    def parse(cls, data: bytes) -> Report:
        """Read a report; refuse a wrong size or an unknown version (nothing is trusted yet)."""
        if len(data) != REPORT_SIZE:
            raise refuse("size", f"an SEV-SNP report is {REPORT_SIZE} bytes, this one has "
                                 f"{len(data)} (truncated or not a report)")
        version, svn, policy = struct.unpack_from("<IIQ", data, 0)
        if version not in VERSIONS:
            raise refuse("version", f"report version {version} is not one of {VERSIONS}")
        vmpl, algo = struct.unpack_from("<II", data, 0x30)
        (platform_info,) = struct.unpack_from("<Q", data, 0x40)
        (flags,) = struct.unpack_from("<I", data, 0x48)
        cpuid = (data[0x188], data[0x189], data[0x18A]) if version >= 3 else (0, 0, 0)
        return cls(
            raw=bytes(data), version=version, guest_svn=svn, policy=policy,
            family_id=data[0x10:0x20], image_id=data[0x20:0x30], vmpl=vmpl, signature_algo=algo,
            current_tcb=data[0x38:0x40], platform_info=platform_info, flags=flags,
            report_data=data[0x50:0x90], measurement=data[0x90:0xC0], host_data=data[0xC0:0xE0],
            id_key_digest=data[0xE0:0x110], author_key_digest=data[0x110:0x140],
            report_id=data[0x140:0x160], report_id_ma=data[0x160:0x180],
            reported_tcb=data[0x180:0x188], cpuid=cpuid, chip_id=data[0x1A0:0x1E0],
            committed_tcb=data[0x1E0:0x1E8], launch_tcb=data[0x1F0:0x1F8],
            signature_r=data[SIGNED_SIZE:SIGNED_SIZE + _COMPONENT],
            signature_s=data[SIGNED_SIZE + _COMPONENT:_SIG_END],
        )

    @property
    def signing_key(self) -> str:
        """Which key signed: ``vcek``, ``vlek`` or ``none`` (flags bits 2-4)."""
        return {0: "vcek", 1: "vlek"}.get((self.flags >> 2) & 0b111, "none")

    @property
    def debug(self) -> bool:
        """Whether the guest policy allows debugging."""
        return bool(self.policy & POLICY_DEBUG)

    @property
    def cpuid_product(self) -> str | None:
        """The product line the CPUID fields name (report version 3 and later), else None."""
        family, model, _ = self.cpuid
        if family == 0x19 and model <= 0x0F:
            return "Milan"
        if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
            return "Genoa"
        if family == 0x1A and model <= 0x11:
            return "Turin"
        return None


def decode_tcb(raw: bytes, product: str) -> dict[str, int]:
    """A TCB_VERSION's components by name; Turin moved them and added the FMC."""
    if product == "Turin":
        return {"fmc": raw[0], "bootloader": raw[1], "tee": raw[2], "snp": raw[3],
                "microcode": raw[7]}
    return {"bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


@dataclass(frozen=True)
class ProductRoots:
    """One product line's ARK (the trust anchor) and intermediates known to chain to it."""

    product: str
    ark: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _check_pss(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """``issuer`` signed ``cert`` with RSA-PSS/SHA-384 (AMD's only scheme for ARK/ASK)."""
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS or not isinstance(
            cert.signature_hash_algorithm, hashes.SHA384):
        raise refuse("chain", f"{what} is not signed with RSA-PSS/SHA-384")
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise refuse("chain", f"the issuer of {what} has no RSA key")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes,
                   padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48), hashes.SHA384())
    except InvalidSignature as exc:
        raise refuse("chain", f"the signature on {what} does not verify with "
                              f"{_cn(issuer.subject)!r}") from exc


def load_roots(pem_files: Sequence[bytes]) -> dict[str, ProductRoots]:
    """Product roots from PEM bundles of one self-signed ARK and the certificates it signed."""
    out: dict[str, ProductRoots] = {}
    for blob in pem_files:
        certs = load_certificates(blob, obj="AMD root bundle")
        arks = [c for c in certs if c.subject == c.issuer]
        if len(arks) != 1:
            raise refuse("root", "a root bundle must hold exactly one self-signed ARK")
        ark = arks[0]
        product = _cn(ark.subject).removeprefix("ARK-")
        _check_pss(ark, ark, f"ARK-{product}")
        inter = tuple(c for c in certs if c is not ark)
        for c in inter:
            _check_pss(c, ark, _cn(c.subject))
        out[product] = ProductRoots(product, ark, inter)
    return out


def _ext(cert: x509.Certificate, oid: str) -> bytes | None:
    for e in cert.extensions:
        if e.oid.dotted_string == oid:
            value = e.value
            return value.value if isinstance(value, x509.UnrecognizedExtension) else None
    return None


def _der_small(raw: bytes, tag: int) -> bytes:
    if len(raw) < 2 or raw[0] != tag or raw[1] != len(raw) - 2:
        raise refuse("chain", "the VCEK carries a malformed AMD extension")
    return raw[2:]


def _cert_tcb(leaf: x509.Certificate, product: str) -> dict[str, int]:
    names = ("fmc", "bootloader", "tee", "snp", "microcode") if product == "Turin" else (
        "bootloader", "tee", "snp", "microcode")
    tcb = {}
    for name in names:
        raw = _ext(leaf, _TCB_OIDS[name])
        if raw is None:
            raise refuse("chain", f"the signing key's certificate has no {name} SPL extension")
        tcb[name] = int.from_bytes(_der_small(raw, 0x02), "big", signed=True)
    return tcb


class SevSnp:
    """The SEV-SNP platform: a verifier bound to one set of product roots."""

    def __init__(self, roots: Mapping[str, ProductRoots], *, name: str = "sev-snp") -> None:
        self.name = name
        self._roots = dict(roots)

    @classmethod
    def with_amd_roots(cls) -> SevSnp:
        """The verifier over AMD's ARKs for Milan, Genoa and Turin shipped in ``roots/``."""
        folder = resources.files("strongroom.attest") / "roots"
        blobs = [folder.joinpath(f"amd-{p.lower()}.pem").read_bytes() for p in PRODUCTS]
        return cls(load_roots(blobs))

    @property
    def products(self) -> tuple[str, ...]:
        """The product lines this verifier has a root for."""
        return tuple(sorted(self._roots))

    def verify(self, evidence: bytes, collateral: Collateral, *, now: datetime) -> VerifiedEvidence:
        """Verify ``evidence`` (one report) with its signing key's chain in ``collateral``."""
        report = Report.parse(evidence)
        if report.signature_algo != ECDSA_P384_SHA384:
            raise refuse("signature-algorithm", f"SIGNATURE_ALGO {report.signature_algo} is not "
                                                "ECDSA P-384 with SHA-384 (1)")
        if report.signing_key == "none":
            raise refuse("signing-key", "the report says no key signed it")
        if any(report.raw[_SIG_END:]):
            raise refuse("signature", "the signature's reserved bytes are not zero")
        leaf, product = self._chain(report.signing_key, collateral, now)
        self._signature(report, leaf)
        return self._facts(report, leaf, product)

    # -- the certificate chain ------------------------------------------------------

    def _chain(self, kind: str, collateral: Collateral,
               now: datetime) -> tuple[x509.Certificate, str]:
        leaf_cn = f"SEV-{kind.upper()}"
        leaves = [c for c in collateral.certificates if _cn(c.subject) == leaf_cn]
        if not leaves:
            raise refuse("chain", f"no {kind.upper()} certificate (CN={leaf_cn}) was given beside "
                                  "the report; pass it with --vcek or in --collateral")
        leaf = leaves[0]
        raw_name = _ext(leaf, OID_PRODUCT_NAME)
        if raw_name is None:
            raise refuse("chain", f"the {kind.upper()} names no product line")
        product = _der_small(raw_name, 0x16).decode("ascii", "replace").split("-")[0]
        roots = self._roots.get(product)
        if roots is None:
            raise refuse("root", f"no root is installed for product line {product!r} "
                                 f"(have: {', '.join(self.products)})")
        expected_issuer = f"SEV-{product}" if kind == "vcek" else f"SEV-VLEK-{product}"
        if _cn(leaf.issuer) != expected_issuer:
            raise refuse("product-line", f"a {product} {kind.upper()} must be issued by "
                                         f"{expected_issuer!r}, not {_cn(leaf.issuer)!r}")
        for given in collateral.certificates:
            if given.subject == given.issuer == roots.ark.subject and given != roots.ark:
                raise refuse("root", f"the {_cn(given.subject)} given is not the installed one")
        candidates = [c for c in (*collateral.certificates, *roots.intermediates)
                      if c.subject == leaf.issuer and c.subject != c.issuer]
        if not candidates:
            raise refuse("chain", f"no {expected_issuer} certificate was given or installed")
        inter = candidates[0]
        _check_pss(inter, roots.ark, expected_issuer)
        _check_pss(leaf, inter, leaf_cn)
        for cert in (leaf, inter, roots.ark):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise refuse("expired", f"{_cn(cert.subject)} is valid "
                                        f"{cert.not_valid_before_utc:%Y-%m-%d} to "
                                        f"{cert.not_valid_after_utc:%Y-%m-%d}, not at {now:%Y-%m-%d}")
        self._revocation(collateral, (leaf, inter), (inter, roots.ark), now)
        return leaf, product

    @staticmethod
    def _revocation(collateral: Collateral, subjects: Sequence[x509.Certificate],
                    issuers: Sequence[x509.Certificate], now: datetime) -> None:
        for crl in collateral.crls:
            issuer = next((i for i in issuers if i.subject == crl.issuer), None)
            if issuer is None:
                continue
            key = issuer.public_key()
            if not isinstance(key, rsa.RSAPublicKey) or not crl.is_signature_valid(key):
                raise refuse("revoked", f"the CRL from {_cn(crl.issuer)} does not verify")
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise refuse("expired", f"the CRL from {_cn(crl.issuer)} expired "
                                        f"{crl.next_update_utc:%Y-%m-%d}")
            for cert in subjects:
                if cert.issuer == crl.issuer and crl.get_revoked_certificate_by_serial_number(
                        cert.serial_number) is not None:
                    raise refuse("revoked", f"{_cn(cert.subject)} is revoked by "
                                            f"{_cn(crl.issuer)}'s CRL")

    # -- the report's own checks ----------------------------------------------------

    @staticmethod
    def _signature(report: Report, leaf: x509.Certificate) -> None:
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise refuse("chain", "the signing key is not an ECDSA P-384 key")
        r, s = report.signature_r, report.signature_s
        if any(r[48:]) or any(s[48:]):
            raise refuse("signature", "a signature component is longer than 48 bytes")
        der = encode_dss_signature(int.from_bytes(r, "little"), int.from_bytes(s, "little"))
        try:
            key.verify(der, report.raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
        except InvalidSignature as exc:
            raise refuse("signature", "the report's signature does not verify with the "
                                      f"{report.signing_key.upper()} given (a byte was changed, "
                                      "or another chip signed it)") from exc

    def _facts(self, report: Report, leaf: x509.Certificate, product: str) -> VerifiedEvidence:
        cpu = report.cpuid_product
        if report.version >= 3 and cpu is not None and cpu != product:
            raise refuse("product-line", f"the report's CPUID names {cpu}, its signing key "
                                         f"is for {product}")
        if report.signing_key == "vcek":
            hwid = _ext(leaf, OID_HWID) or b""
            if len(hwid) == 66 and hwid[:2] == b"\x04\x40":
                hwid = hwid[2:]
            if hwid != report.chip_id:
                raise refuse("chip-id", "the report's CHIP_ID is not the VCEK's hwID "
                                        "(the VCEK is another chip's)")
        tcb = decode_tcb(report.reported_tcb, product)
        if _cert_tcb(leaf, product) != tcb:
            raise refuse("tcb", "the report's REPORTED_TCB is not the TCB its signing key "
                                "was issued for")
        if report.debug:
            raise refuse("debug", "the guest policy allows debugging (policy bit 19): its "
                                  "memory is open to the host")
        details: dict[str, Any] = {
            "product": product, "version": report.version, "signing_key": report.signing_key,
            "policy": f"{report.policy:#x}", "vmpl": report.vmpl, "guest_svn": report.guest_svn,
            "family_id": report.family_id.hex(), "image_id": report.image_id.hex(),
            "host_data": report.host_data.hex(), "id_key_digest": report.id_key_digest.hex(),
            "author_key_digest": report.author_key_digest.hex(),
            "report_id": report.report_id.hex(),
            "current_tcb": decode_tcb(report.current_tcb, product),
            "committed_tcb": decode_tcb(report.committed_tcb, product),
            "launch_tcb": decode_tcb(report.launch_tcb, product),
        }
        return VerifiedEvidence(
            platform=self.name, measurement=report.measurement.hex(),
            report_data=report.report_data, tcb=tcb,
            chip_id=report.chip_id.hex() if any(report.chip_id) else "", debug=False,
            details=details,
        )

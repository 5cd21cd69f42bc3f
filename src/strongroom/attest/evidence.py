"""What every kind of confidential-computing evidence reduces to, and how a platform plugs in.

A *platform* (AMD SEV-SNP, Intel TDX, NVIDIA GPU CC, Arm CCA, ...) is anything
with a ``name`` and a ``verify`` method that takes the raw evidence bytes, the
collateral given beside them (certificates, CRLs, TCB info as files: nothing is
fetched at run time) and the time, and returns a :class:`VerifiedEvidence` or
raises :class:`~strongroom.errors.AttestationRefused` naming the failed check::

    platform = platform_named("sev-snp")
    ev = platform.verify(report, Collateral.from_pem(vcek_and_chain), now=datetime.now(UTC))
    ev.measurement, ev.report_data, ev.tcb

The gate and the attestation policy only ever see :class:`VerifiedEvidence`,
so a new platform is one more entry of :data:`PLATFORMS` (or a constructed
object handed to the gate's wiring) and never touches the gate.

Test platforms (roots a test made itself) are constructed directly by tests
and are *not* in :data:`PLATFORMS`: :func:`platform_named` cannot return one,
and a policy refuses any platform name ending in ``-test`` (see policy.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from strongroom.errors import AttestationRefused, ConfigError, InvalidInput

__all__ = [
    "PLATFORMS",
    "TEST_SUFFIX",
    "Collateral",
    "Platform",
    "VerifiedEvidence",
    "platform_named",
    "refuse",
]

#: Platform names ending in this suffix are test-only: never selectable, never in a policy.
TEST_SUFFIX = "-test"


def refuse(check: str, message: str, *, obj: str = "evidence") -> AttestationRefused:
    """The error for a failed check (``raise refuse("signature", "...")``)."""
    return AttestationRefused(check, message, obj=obj)


@dataclass(frozen=True)
class VerifiedEvidence:
    """Evidence whose signature, chain and platform checks passed: the facts a policy judges."""

    platform: str
    #: The launch measurement (SEV-SNP MEASUREMENT, TDX MRTD), lower-case hex.
    measurement: str
    #: The 64 bytes of report data the workload chose (binds its ephemeral key and nonce).
    report_data: bytes
    #: TCB component versions by name (e.g. {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}).
    tcb: Mapping[str, int]
    #: The chip (or platform instance) that signed, lower-case hex; empty when masked.
    chip_id: str
    #: Whether the guest can be debugged (such evidence is refused before it gets here).
    debug: bool = False
    #: Platform-specific facts shown to operators (product, policy bits, vmpl, version...).
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The JSON `strongroom attest verify --json` prints."""
        return {
            "platform": self.platform,
            "measurement": self.measurement,
            "report_data": self.report_data.hex(),
            "tcb": dict(self.tcb),
            "chip_id": self.chip_id,
            "debug": self.debug,
            "details": dict(self.details),
            "verified": True,
        }


@dataclass(frozen=True)
class Collateral:
    """What is given beside evidence: certificates, CRLs, and JSON documents (TDX collateral)."""

    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    #: JSON collateral as given (Intel's TCB info, QE identity and CRLs in dcap-qvl's form).
    documents: tuple[bytes, ...] = ()

    @classmethod
    def from_pem(cls, *blobs: bytes, obj: str = "collateral") -> Collateral:
        """Parse each blob: a JSON document, or PEM (or single DER) certificates and CRLs."""
        certs: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        docs: list[bytes] = []
        for blob in blobs:
            if blob.lstrip().startswith(b"{"):
                docs.append(blob)
                continue
            certs.extend(load_certificates(blob, obj=obj))
            crls.extend(_load_crls(blob, obj=obj))
        return cls(tuple(certs), tuple(crls), tuple(docs))


def load_certificates(blob: bytes, *, obj: str) -> list[x509.Certificate]:
    """Certificates in ``blob`` (PEM bundle or one DER certificate).

    AMD issues VCEKs with serial number 0, which RFC 5280 disallows and
    ``cryptography`` warns about; the warning is silenced here (the chain and
    the signature are what this package relies on, not the serial).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if b"-----BEGIN CERTIFICATE-----" in blob:
                return list(x509.load_pem_x509_certificates(blob))
            if b"-----BEGIN" in blob:
                return []
            return [x509.load_der_x509_certificate(blob)] if blob else []
        except ValueError as exc:
            raise InvalidInput(f"not a readable X.509 certificate ({exc})", obj=obj,
                               remedy="give PEM or DER certificates") from exc


def _load_crls(blob: bytes, *, obj: str) -> list[x509.CertificateRevocationList]:
    marker = b"-----BEGIN X509 CRL-----"
    out = []
    start = blob.find(marker)
    while start >= 0:
        end = blob.find(b"-----END X509 CRL-----", start)
        if end < 0:
            raise InvalidInput("unterminated X509 CRL block", obj=obj)
        end += len(b"-----END X509 CRL-----")
        try:
            out.append(x509.load_pem_x509_crl(blob[start:end]))
        except ValueError as exc:
            raise InvalidInput(f"not a readable CRL ({exc})", obj=obj) from exc
        start = blob.find(marker, end)
    return out


@runtime_checkable
class Platform(Protocol):
    """A kind of evidence and its verifier."""

    #: The name policies and the CLI use ("sev-snp", "tdx", ...).
    name: str

    def verify(self, evidence: bytes, collateral: Collateral, *, now: datetime) -> VerifiedEvidence:
        """Check ``evidence`` against the vendor's roots; raise AttestationRefused naming the check."""
        ...


def _sev_snp() -> Platform:
    from strongroom.attest.sevsnp import SevSnp

    return SevSnp.with_amd_roots()


def _tdx() -> Platform:
    from strongroom.attest.tdx import Tdx

    return Tdx()


#: The platforms a deployment can select, by name: a factory each, built on first use.
PLATFORMS: Mapping[str, Callable[[], Platform]] = {"sev-snp": _sev_snp, "tdx": _tdx}


def platform_named(name: str) -> Platform:
    """The deployable platform called ``name``; test platforms are never returned."""
    factory = PLATFORMS.get(name)
    if factory is None:
        known = ", ".join(sorted(PLATFORMS))
        if name.endswith(TEST_SUFFIX):
            raise ConfigError(f"{name!r} is a test-only platform and cannot be selected",
                              obj="attestation platform", remedy=f"use one of: {known}")
        raise ConfigError(f"unknown attestation platform {name!r}", obj="attestation platform",
                          remedy=f"use one of: {known}")
    return factory()

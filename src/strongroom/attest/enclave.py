"""The workload's side of an attested release: its ephemeral key and its evidence source.

A workload running in a confidential VM (the inference gateway, ``gateway serve
--attest sev-snp|tdx``) makes an ephemeral hybrid ML-KEM-768 + X25519 key at
start, asks the gate for a nonce, and asks its platform for evidence whose
report data binds the two (:func:`~strongroom.attest.admission.binding`)::

    enclave = Enclave(evidence_source("sev-snp"))      # ConfigError when the host has none
    claim = enclave.claim(keys.attest_nonce())          # the first release: evidence
    stanza = keys.release_attested(request, claim)
    file_key = enclave.open(stanza)                     # only this process can
    claim = enclave.claim(None)                         # while admitted: the key alone

Evidence comes from the Linux configfs-tsm interface
(``/sys/kernel/config/tsm/report``, kernel 6.7+), which both SEV-SNP
(``sev_guest``) and TDX (``tdx_guest``) guests expose: the report data goes in
``inblob``, the signed report (or quote) comes out of ``outblob``, and the
host-supplied certificates (SEV-SNP's VCEK and chain) out of ``auxblob``.
Collateral the guest cannot get that way (a VCEK fetched from AMD's KDS, TDX
TCB info and QE identity) is given as files.

**Test only.** ``STRONGROOM_ATTEST_TEST_CHIP`` names a JSON file describing a
forged chip and the image it "measures" (:meth:`ForgedChip.save`); the source
then signs reports with it and reports the platform ``sev-snp-test``, which only
a gate trusting test roots verifies and no officer-signed policy for a
deployment can list.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from strongroom.attest.admission import LIFETIME_S, AttestedClaim, binding
from strongroom.attest.evidence import TEST_SUFFIX, Collateral
from strongroom.crypto.age import Stanza
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.errors import ConfigError, InvalidInput

__all__ = ["TEST_CHIP_ENV", "TSM_REPORT", "ConfigfsTsm", "Enclave", "EvidenceSource",
           "evidence_source", "sev_snp_certificates"]

#: The configfs-tsm report directory of a confidential guest.
TSM_REPORT = Path("/sys/kernel/config/tsm/report")
#: TEST ONLY: a forged chip (JSON) to sign this workload's reports with (``sev-snp-test``).
TEST_CHIP_ENV = "STRONGROOM_ATTEST_TEST_CHIP"
#: The kernel's provider name for each deployable platform.
_PROVIDERS = {"sev-snp": "sev_guest", "tdx": "tdx_guest"}
#: The guest devices, named in the error when nothing can give evidence.
_DEVICES = {"sev-snp": "/dev/sev-guest", "tdx": "/dev/tdx_guest"}
#: GUIDs of the SEV-SNP certificate table (GHCB spec): VCEK, VLEK, ASK, ARK.
_CERT_GUIDS = frozenset(uuid.UUID(g) for g in (
    "63da758d-e664-4564-adc5-f4b93be8accd", "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782", "c0b406a4-a803-4952-9743-3fb6014cd0ae"))


class EvidenceSource(Protocol):
    """Something that makes this workload's evidence over 64 bytes of report data."""

    #: The platform the gate verifies the evidence on (``sev-snp``, ``tdx``, ``sev-snp-test``).
    platform: str

    def evidence(self, report_data: bytes) -> tuple[bytes, Collateral]:
        """The signed report (or quote) and the collateral to send beside it."""


def sev_snp_certificates(table: bytes) -> list[bytes]:
    """The DER certificates of an SEV-SNP certificate table (``auxblob``), VCEK first."""
    out: list[bytes] = []
    for off in range(0, len(table) - 23, 24):
        guid = uuid.UUID(bytes_le=table[off:off + 16])
        start, length = struct.unpack_from("<II", table, off + 16)
        if guid.int == 0:
            break
        if guid in _CERT_GUIDS and length > 0 and start + length <= len(table):
            out.append(table[start:start + length])
    return out


class ConfigfsTsm:
    """Evidence from the kernel's configfs-tsm interface (SEV-SNP or TDX guests)."""

    def __init__(self, platform: str, collateral: Sequence[bytes] = (), *,
                 root: Path = TSM_REPORT) -> None:
        if platform not in _PROVIDERS:
            raise InvalidInput(f"no evidence source for platform {platform!r}", obj="--attest",
                               remedy="use sev-snp or tdx")
        self.platform = platform
        self.root = root
        self._collateral = list(collateral)
        if not root.is_dir():
            raise ConfigError(
                f"this host gives no {platform} evidence: {root} is absent (and "
                f"{_DEVICES[platform]} with it, or the kernel predates configfs-tsm)",
                obj="--attest",
                remedy=f"run the workload in an {platform} confidential VM (Linux 6.7+ guest "
                       "with configfs mounted), or drop --attest (docs/attestation.md)")

    def evidence(self, report_data: bytes) -> tuple[bytes, Collateral]:
        entry = self.root / f"strongroom-{os.getpid()}-{time.monotonic_ns()}"
        try:
            entry.mkdir()
        except OSError as exc:
            raise ConfigError(f"cannot make a configfs-tsm report ({exc.strerror})",
                              obj=str(self.root), remedy="run as a user allowed to write "
                              "it (root, or the group the image grants)") from exc
        try:
            provider = (entry / "provider").read_text().strip()
            if provider != _PROVIDERS[self.platform]:
                raise ConfigError(f"this guest's evidence provider is {provider}, not "
                                  f"{_PROVIDERS[self.platform]}", obj="--attest",
                                  remedy=f"start with --attest matching the VM ({provider})")
            (entry / "inblob").write_bytes(report_data)
            report = (entry / "outblob").read_bytes()
            blobs = list(self._collateral)
            aux = entry / "auxblob"
            if self.platform == "sev-snp" and aux.exists():
                blobs = sev_snp_certificates(aux.read_bytes()) + blobs
            return report, Collateral.from_pem(*blobs, obj="attestation collateral")
        except OSError as exc:
            raise ConfigError(f"the guest refused a report ({exc.strerror})",
                              obj=str(entry), remedy="check the guest's kernel log") from exc
        finally:
            entry.rmdir()


class _ForgedChipSource:
    """TEST ONLY: reports signed by a forged chip (platform ``sev-snp-test``)."""

    platform = "sev-snp" + TEST_SUFFIX

    def __init__(self, path: Path) -> None:
        from strongroom.attest.forge import ForgedChip

        self.chip, self.measurement = ForgedChip.load(path)

    def evidence(self, report_data: bytes) -> tuple[bytes, Collateral]:
        return (self.chip.report(measurement=self.measurement, report_data=report_data),
                self.chip.collateral())


def evidence_source(platform: str, collateral: Sequence[bytes] = ()) -> EvidenceSource:
    """This host's evidence source for ``platform``, or a ConfigError saying what is missing.

    With ``STRONGROOM_ATTEST_TEST_CHIP`` set (test only) and ``platform`` sev-snp,
    the forged chip it names (platform ``sev-snp-test``).
    """
    test_chip = os.environ.get(TEST_CHIP_ENV)
    if test_chip and platform == "sev-snp":
        return _ForgedChipSource(Path(test_chip))
    return ConfigfsTsm(platform, collateral)


class Enclave:
    """This process's ephemeral key and evidence source; the file keys it receives open here only."""

    def __init__(self, source: EvidenceSource, *, lifetime_s: float = LIFETIME_S) -> None:
        self.source = source
        self.identity = HybridIdentity.generate()
        self._lifetime = lifetime_s
        self._admitted_until = 0.0

    @property
    def platform(self) -> str:
        """The platform the gate verifies this enclave's evidence on."""
        return self.source.platform

    def needs_evidence(self) -> bool:
        """Whether the next release must carry evidence (no standing admission)."""
        return time.monotonic() >= self._admitted_until

    def claim(self, nonce: bytes | None) -> AttestedClaim:
        """Evidence bound to this key and ``nonce``; with no nonce, the key alone (admitted)."""
        if nonce is None:
            return AttestedClaim(recipient=self.identity.recipient)
        report, collateral = self.source.evidence(
            binding(self.identity.recipient.public_bytes, nonce))
        return AttestedClaim(recipient=self.identity.recipient, platform=self.source.platform,
                             evidence=report, collateral=collateral, nonce=nonce)

    def admitted(self, started: float) -> None:
        """The gate admitted evidence sent at ``started`` (monotonic): it stands a while."""
        self._admitted_until = started + self._lifetime * 0.9

    def lapsed(self) -> None:
        """The gate no longer knows this key: send evidence again."""
        self._admitted_until = 0.0

    def open(self, stanza: Stanza) -> bytearray:
        """The file key in ``stanza`` (wrapped to this enclave's key); the caller zeroes it."""
        from strongroom.errors import IntegrityError

        key = self.identity.unwrap([stanza])
        if key is None:
            raise IntegrityError("the released key is not wrapped to this enclave's key",
                                 obj="attested release")
        return bytearray(key)

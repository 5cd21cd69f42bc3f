"""Confidential-computing evidence: verify it offline and release keys only into attested enclaves.

- :mod:`~strongroom.attest.evidence`: the :class:`Platform` interface every kind of
  evidence implements and :class:`VerifiedEvidence`, all a policy ever judges.
- :mod:`~strongroom.attest.sevsnp`: AMD SEV-SNP reports (versions 2-5), VCEK/VLEK
  -> ASK/ASVK -> ARK for Milan, Genoa and Turin, with AMD's ARKs shipped in ``roots/``.

docs/attestation.md explains the flow for operators.
"""

from strongroom.attest.evidence import (
    PLATFORMS,
    Collateral,
    Platform,
    VerifiedEvidence,
    platform_named,
)

__all__ = ["PLATFORMS", "Collateral", "Platform", "VerifiedEvidence", "platform_named"]

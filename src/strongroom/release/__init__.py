"""Key release: the request and its evidence, the gate's ports, and the gate.

* :mod:`strongroom.release.request` — :class:`ReleaseRequest`, signing and
  checking release evidence, spent nonces (depends only on ``crypto``; the
  vault and the access rules import it);
* :mod:`strongroom.release.ports` — the protocols the gate composes (evidence
  rule, egress meter, shard sizes and locator, canary check, state guard);
* :mod:`strongroom.release.gate` — :class:`ReleaseGate`, the one code path that
  unwraps a shard's file key.

The names below are re-exported here, so ``from strongroom.release import
ReleaseGate, ReleaseRequest`` works; code below the gate imports
:mod:`strongroom.release.request` directly.
"""

from strongroom.release.gate import ReleaseGate
from strongroom.release.ports import (
    AuditedEgressPort,
    CanaryCheck,
    EgressPort,
    EvidenceVerifier,
    LedgerBudgetedEvidence,
    LocatedShard,
    ShardLocator,
    ShardSizes,
    StateGuard,
)
from strongroom.release.request import (
    EVIDENCE_PAYLOAD_TYPE,
    LOAD_EVIDENCE_PAYLOAD_TYPE,
    MAX_EVIDENCE_LIFETIME_S,
    MAX_LOAD_SHARDS,
    PublicKeys,
    ReleaseRequest,
    Shard,
    UsedNonces,
    VerifiedEvidence,
    build_request,
    check_release_signature,
    sign_load_evidence,
    sign_release_evidence,
)

__all__ = [
    "EVIDENCE_PAYLOAD_TYPE",
    "LOAD_EVIDENCE_PAYLOAD_TYPE",
    "MAX_EVIDENCE_LIFETIME_S",
    "MAX_LOAD_SHARDS",
    "AuditedEgressPort",
    "CanaryCheck",
    "EgressPort",
    "EvidenceVerifier",
    "LedgerBudgetedEvidence",
    "LocatedShard",
    "PublicKeys",
    "ReleaseGate",
    "ReleaseRequest",
    "Shard",
    "ShardLocator",
    "ShardSizes",
    "StateGuard",
    "UsedNonces",
    "VerifiedEvidence",
    "build_request",
    "check_release_signature",
    "sign_load_evidence",
    "sign_release_evidence",
]

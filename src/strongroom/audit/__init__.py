"""The tamper-evident audit log: Merkle tree, signed checkpoints, witnesses.

Every decision strongroom makes is appended to :class:`AuditLog` before it
takes effect (fail closed with ``AuditUnavailable``); checkpoints are C2SP
signed notes cosigned by C2SP tlog-witnesses; anyone holding the log's
verifier key can check an :class:`InclusionProof` offline::

    from strongroom.audit import AuditLog
    log = AuditLog(store, signer=Ed25519Signer(origin, key))
    idx = log.append(actor="alice", action="weights.read", obj="minilm@1", decision="allow")
    print(log.prove(idx).to_text())

See :mod:`strongroom.audit.log` for the guarantees and
:mod:`strongroom.audit.witness` for running a witness.
"""

from strongroom.audit.checkpoint import (
    Checkpoint,
    OpenedCheckpoint,
    open_checkpoint,
    sign_checkpoint,
)
from strongroom.audit.config import AuditSettings
from strongroom.audit.log import AuditEvent, AuditLog, InclusionProof, VerifyReport
from strongroom.audit.merkle import InvalidProof
from strongroom.audit.redaction import Redactor, Secret
from strongroom.audit.witness import (
    Witness,
    WitnessClient,
    WitnessConflict,
    WitnessError,
    create_app,
)

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditSettings",
    "Checkpoint",
    "InclusionProof",
    "InvalidProof",
    "OpenedCheckpoint",
    "Redactor",
    "Secret",
    "VerifyReport",
    "Witness",
    "WitnessClient",
    "WitnessConflict",
    "WitnessError",
    "create_app",
    "open_checkpoint",
    "sign_checkpoint",
]

"""The API's request and response bodies (pydantic), which ``/openapi.json`` publishes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from strongroom.release.request import MAX_LOAD_SHARDS

__all__ = [
    "AlertAck",
    "AlertOut",
    "ArtifactOut",
    "AuditEntryOut",
    "AuditVerifyIn",
    "AuditVerifyOut",
    "BreakGlassOut",
    "BudgetOut",
    "CapsOut",
    "CheckpointOut",
    "CompartmentOut",
    "ConsistencyOut",
    "DocumentOut",
    "EgressOut",
    "Envelope",
    "ErrorOut",
    "GrantOut",
    "KeyReleaseIn",
    "KeyReleaseManyIn",
    "KeyReleaseManyItem",
    "KeyReleaseManyOut",
    "KeyReleaseOut",
    "ManifestOut",
    "PrincipalOut",
    "ProofOut",
    "RequestOut",
    "SealStatusOut",
    "StatementIn",
    "StatementOut",
    "StoredOut",
    "UnsealIn",
    "WhoAmIOut",
]

_B64 = r"^[A-Za-z0-9+/]*={0,2}$"


class ErrorOut(BaseModel):
    """Every refusal: what failed, about what, and what to do."""

    error: str
    object: str | None = None
    remedy: str | None = None
    type: str | None = Field(default=None, description="the strongroom.errors class")


class VersionOut(BaseModel):
    """The server's strongroom version and API major and minor version (no signature needed)."""

    version: str
    api: int
    api_minor: int


class SealStatusOut(BaseModel):
    """The keyring's status (no secret)."""

    initialized: bool
    sealed: bool
    backend: str
    vault_id: str | None = None
    generation: int = 0
    threshold: int = 0
    shares: int = 0
    progress: int = 0
    ceremony: str | None = None
    nonce: str | None = None
    ceremony_recipient: str | None = None
    submitted: list[int] = Field(default_factory=list)
    kek_versions: list[int] = Field(default_factory=list)
    retired_versions: list[int] = Field(default_factory=list)
    rekey_ready: bool = False
    officer_threshold: int = 0


class UnsealIn(BaseModel):
    """One custodian's share, age-encrypted to the ceremony's one-time recipient (base64)."""

    submission: str = Field(min_length=4, max_length=65536, pattern=_B64)


class WhoAmIOut(BaseModel):
    """The caller the signature proved."""

    key_id: str
    name: str
    officer: bool


class PrincipalOut(BaseModel):
    """An enrolled, unrevoked principal as k officers signed it (``people ls --json``)."""

    name: str
    kind: str
    key_id: str
    roles: list[str]
    clearance: str
    compartments: list[str]
    vetting: str
    vetting_expires: str = Field(description="UTC stamp")
    employment: str
    current: bool = Field(description="vetting current and employment active")


class CompartmentOut(BaseModel):
    """A compartment: who is read in, which resources need it (``compartments ls --json``)."""

    compartment: str
    people: list[str]
    resources: list[str]


class StatementOut(BaseModel):
    """A stored signed statement (to cosign it, or to sign one that names it)."""

    digest: str
    kind: str
    envelope: str
    signers: list[str] = Field(description="key ids that signed it (unverified)")


class StatementIn(BaseModel):
    """An officer-signed directory statement to publish (or cosign)."""

    kind: str = Field(pattern=r"^(enrollment|label|revocation)$")
    envelope: str = Field(min_length=2, max_length=262144)


class Envelope(BaseModel):
    """A DSSE envelope signed by the caller (request, approval, denial, grant, ...)."""

    envelope: str = Field(min_length=2, max_length=262144)


class StoredOut(BaseModel):
    """A statement stored under its payload digest (``signatures``: how many it holds now)."""

    digest: str
    kind: str
    signatures: int = 0
    #: A revocation on a server with key servers: each one's answer to the push, by name
    #: (``{"stored", "held", "refused"}`` or ``{"error", "remedy"}``); None without key servers.
    key_servers: dict[str, dict[str, Any]] | None = None


class ArtifactOut(BaseModel):
    """One artifact version."""

    name: str
    version: int
    kind: str
    files: int
    total_size: int
    created: str


class DocumentOut(BaseModel):
    """One secret document version (``docs ls --json``; no content)."""

    name: str
    version: int
    classification: str
    compartments: list[str]
    bytes: int
    created: str = Field(description="UTC stamp")


class ManifestOut(BaseModel):
    """A verified manifest, the signed envelope it came from, and the key that signed it.

    A client must not trust ``manifest_key`` as sent: it pins it
    (``STRONGROOM_MANIFEST_KEY`` or trust on first use) and verifies ``envelope``.
    """

    ref: str
    manifest: dict[str, Any]
    envelope: str
    manifest_key: str = Field(description="the vault's manifest public key, raw Ed25519, base64")


class PublicKeysOut(BaseModel):
    """The vault's public signing keys (raw Ed25519, base64): pin them on the clients."""

    manifest: str
    manifest_key_id: str
    checkpoint: str


class KeyReleaseIn(BaseModel):
    """Release evidence the caller signed for one shard (``strongroom.access.evidence``)."""

    artifact: str = Field(min_length=3, max_length=256, description="name@version")
    shard: str = Field(min_length=1, max_length=1024)
    purpose: str = Field(min_length=1, max_length=512)
    evidence: str = Field(min_length=2, max_length=262144)


class KeyReleaseOut(BaseModel):
    """The shard's file key (base64): hold it in memory only and zero it after use."""

    artifact: str
    shard: str
    blob: str
    file_key: str


class KeyReleaseManyIn(BaseModel):
    """One load evidence (``strongroom.access.evidence.make_load_evidence``) for several shards.

    Each shard is released as by ``/v1/keys/release`` with this evidence: the gate
    decides, charges and audits each one on its own.
    """

    artifact: str = Field(min_length=3, max_length=256, description="name@version")
    shards: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=MAX_LOAD_SHARDS, json_schema_extra={"uniqueItems": True},
        description="shard paths, each once, in the order to answer")
    purpose: str = Field(min_length=1, max_length=512)
    evidence: str = Field(min_length=2, max_length=786432)

    @field_validator("shards")
    @classmethod
    def _each_once(cls, shards: list[str]) -> list[str]:
        if len(set(shards)) != len(shards):
            raise ValueError("a shard is named more than once")
        return shards


class KeyReleaseManyItem(BaseModel):
    """One shard's answer: its file key (base64; zero it after use), or its refusal."""

    shard: str
    blob: str
    file_key: str | None = None
    error: ErrorOut | None = Field(default=None,
                                   description="the refusal, as the API's error body")


class KeyReleaseManyOut(BaseModel):
    """Each named shard's answer, in the order of the request."""

    artifact: str
    keys: list[KeyReleaseManyItem]


class AttestNonceOut(BaseModel):
    """A single-use nonce the gate issued (base64); bind it in the enclave's report data."""

    nonce: str


class AttestedReleaseIn(KeyReleaseIn):
    """Release evidence plus the enclave's: report data = sha256(recipient key || nonce)."""

    recipient: str = Field(min_length=10, max_length=4096,
                           description="ephemeral age1pq1... (hybrid) or age1... key")
    platform: str = Field(default="", max_length=64)
    report: str = Field(default="", max_length=1048576, description="base64 evidence")
    collateral: list[str] = Field(default_factory=list, max_length=16,
                                  description="base64 PEM certificates/CRLs or JSON")
    nonce: str = Field(default="", max_length=128, description="base64 nonce from the gate")


class AttestedReleaseOut(BaseModel):
    """The file key as an age stanza only the enclave's ephemeral key opens."""

    artifact: str
    shard: str
    blob: str
    stanza_type: str
    stanza_args: list[str]
    stanza_body: str


class RequestOut(BaseModel):
    """An access request with the approvals stored for it."""

    digest: str
    requester: str
    action: str
    resource: str
    purpose: str
    approvals: list[str]
    denied: bool
    envelope: str
    approval_envelopes: list[str]
    duration_s: int = 0
    byte_budget: int = 0
    rule: str = ""


class GrantOut(BaseModel):
    """A grant that verifies now."""

    grant_id: str
    holder: str
    action: str
    resource: str
    approvers: list[str]
    issued: int
    expires: int
    byte_budget: int
    issuer: str


class GrantStateOut(GrantOut):
    """A stored grant whose signatures verify, with its state as the gate derives it."""

    #: ``active``, ``revoked``, ``expired`` or ``budget spent``
    state: str
    revoked_by: str | None
    spent: int


class AuditEntryOut(BaseModel):
    """One audit-log entry as recorded."""

    index: int
    time: str
    actor: str
    action: str
    object: str
    decision: str
    reason: str
    details: dict[str, Any]
    shard: str | None = None
    nbytes: int | None = None
    request_id: str | None = None


class ProofOut(BaseModel):
    """An inclusion proof (``strongroom audit verify-proof`` text form)."""

    index: int
    proof: str


class AuditPageEntryOut(BaseModel):
    """One entry of a page: its index and exact bytes (base64)."""

    index: int
    body: str


class AuditPageProofOut(BaseModel):
    """Hashes binding entries ``[from, end)`` to the checkpoint: the compact range left of
    the page and a consistency proof from ``end`` to the checkpoint's size (base64 each)."""

    end: int
    left: list[str]
    consistency: list[str]


class AuditEntriesOut(BaseModel):
    """A page of entries as stored, the latest signed checkpoint and the proof of the part
    it covers (:mod:`strongroom.audit.pages`); a reader recomputes every hash itself."""

    origin: str
    size: int
    checkpoint: str | None
    entries: list[AuditPageEntryOut]
    proof: AuditPageProofOut | None


class CheckpointOut(BaseModel):
    """The latest signed checkpoint (a C2SP signed note) and the log size."""

    size: int
    checkpoint: str | None


class ConsistencyOut(BaseModel):
    """Consistency proof hashes between two tree sizes (base64)."""

    old: int
    new: int
    hashes: list[str]


class AlertOut(BaseModel):
    """A stored alert."""

    id: int
    rule: str
    severity: str
    subject: str
    object: str
    message: str
    count: int
    first_seen: str
    last_seen: str
    acked_at: str | None = None
    acked_by: str | None = None


class AlertAck(BaseModel):
    """An acknowledgement note."""

    note: str = Field(default="", max_length=2000)


class CapsOut(BaseModel):
    """Per artifact and action: holders of valid Grants, and the cap (``access caps --json``)."""

    artifact: str
    holders: dict[str, int]
    caps: dict[str, int | None]


class BreakGlassOut(BaseModel):
    """A break-glass access and its reviews (``access break-glass --pending --json``)."""

    break_glass: str
    principal: str
    resource: str
    reason: str
    reviewed_by: list[str]
    reviewed: bool


class BudgetOut(BaseModel):
    """An egress budget in force."""

    scope: str
    subject: str
    window_s: int
    cap_bytes: int


class EgressOut(BaseModel):
    """Budgets and each artifact's time to exfiltrate (``monitor egress --json``)."""

    budgets: list[BudgetOut]
    artifacts: list[dict[str, Any]]


class AuditVerifyIn(BaseModel):
    """Checkpoints the caller kept outside the database (signed-note text; may be empty)."""

    checkpoints: list[str] = Field(max_length=64)


class AuditVerifyOut(BaseModel):
    """The log replayed: its summary, how many outside marks it extends, the latest checkpoint."""

    summary: str
    kept_outside: int
    latest_checkpoint: str | None = None

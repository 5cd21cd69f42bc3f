"""The release gate: the one code path that unwraps a shard's file key.

Every weight load goes through :meth:`ReleaseGate.release`, which runs, in order:

1. **seal** — the keyring must be unsealed (:class:`~strongroom.errors.Sealed`);
2. **locate** — the blob's wrapped file key must exist under a usable KEK version;
3. **evidence** — verified here from signatures and keys pinned in the barrier,
   never from a database row (:class:`~strongroom.errors.AccessDenied`);
4. **egress** — the principal's budget is charged (:class:`~strongroom.errors.BudgetExceeded`);
5. **audit** — the allow decision is appended durably (:class:`~strongroom.errors.AuditUnavailable`
   refuses, nothing is unwrapped). With the monitor's meter on the audit log's
   database, steps 4 and 5 are one transaction (:class:`AuditedEgressMeter`):
   the charge is decided inside the audit group commit, so an acknowledged
   release is charged and a failed one is not. An evidence rule with byte
   budgets (:class:`LedgerBudgetedEvidence`, i.e. Grants) then has its budget
   charged there too, shared by every gate on the database;
6. **unwrap** — only now is the file key decrypted and returned (caller zeroes it).

Every refusal after step 1 is audited as ``deny``. The evidence and egress
rules are narrow interfaces with interim rules (``docs/release-gate.md``): until
the access issue's Grants land, evidence is a DSSE statement signed by an
*officer* pinned at ``init``; until the egress issue lands, a per-principal cap
over a sliding 24 h window. Each is replaced, not bypassed, when its issue lands.

Use it like this::

    gate = ReleaseGate(keyring, audit_log)
    evidence = sign_release_evidence(officer_key, artifact="minilm@1", shard="model.safetensors",
                                     blob_id=blob_id, purpose="load")
    key = gate.release(ReleaseRequest(principal="officer", principal_key=pub_raw,
                                      artifact="minilm@1", shard="model.safetensors",
                                      blob_id=blob_id, nbytes=size, purpose="load",
                                      evidence=evidence))
    try: ... finally: key[:] = bytes(len(key))

Do not call :meth:`Keyring.unwrap` anywhere else, and do not cache released keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto.age import Stanza
from strongroom.crypto.dsse import key_id, sign_statement, verify_statement
from strongroom.errors import (
    AccessDenied,
    AuditUnavailable,
    BudgetExceeded,
    IntegrityError,
    InvalidInput,
    NotFound,
    StrongroomError,
)

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.keys.keyring import Keyring
    from strongroom.store.db import Store

__all__ = [
    "EVIDENCE_PAYLOAD_TYPE",
    "MAX_EVIDENCE_LIFETIME_S",
    "AuditedEgressMeter",
    "CanaryCheck",
    "EgressMeter",
    "EvidenceVerifier",
    "LedgerBudgetedEvidence",
    "OfficerEvidence",
    "PublicKeys",
    "ReleaseGate",
    "ReleaseRequest",
    "ShardSizes",
    "StateGuard",
    "UsedNonces",
    "check_release_signature",
    "default_meter",
    "sign_release_evidence",
]

EVIDENCE_PAYLOAD_TYPE = "application/vnd.strongroom.release-evidence+json"
#: Longest validity an evidence statement may claim (``expires - now``), seconds.
MAX_EVIDENCE_LIFETIME_S = 3600
#: The interim egress window.
EGRESS_WINDOW_S = 24 * 3600
ACTION = "key.release"


@dataclass(frozen=True)
class ReleaseRequest:
    """Who wants which shard's file key, why, and the signed evidence that allows it."""

    principal: str
    principal_key: bytes
    artifact: str
    shard: str
    blob_id: str
    nbytes: int
    purpose: str
    evidence: str
    stanzas: tuple[Stanza, ...] = ()
    #: The client's host (hostname, or the HTTP client's address at the server); recorded in
    #: the audit details as ``host`` for the insider detectors (SR-NEWHOST). Not evidence.
    host: str | None = None

    @property
    def obj(self) -> str:
        """How the audit log names the shard: ``<artifact>/<shard>``."""
        return f"{self.artifact}/{self.shard}"


def _host(request: ReleaseRequest) -> dict[str, str]:
    """``{"host": ...}`` for the audit details when the request names its client host."""
    return {"host": request.host[:255]} if request.host else {}


def sign_release_evidence(
    key: Ed25519PrivateKey,
    *,
    artifact: str,
    shard: str,
    blob_id: str,
    purpose: str,
    ttl_s: int = 300,
    nonce: str | None = None,
    now: float | None = None,
) -> str:
    """A DSSE envelope by ``key`` over {artifact, shard, blob_id, purpose, nonce, expires}."""
    expires = int((time.time() if now is None else now) + ttl_s)
    statement = {"artifact": artifact, "shard": shard, "blob_id": blob_id, "purpose": purpose,
                 "nonce": nonce or secrets.token_hex(16), "expires": expires}
    return sign_statement(statement, EVIDENCE_PAYLOAD_TYPE, key)


class EvidenceVerifier(Protocol):
    """Decides from signatures alone whether the evidence allows the request."""

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Return audit details of the accepted evidence; raise AccessDenied otherwise."""
        ...


@runtime_checkable
class LedgerBudgetedEvidence(EvidenceVerifier, Protocol):
    """An evidence rule with byte budgets that the egress ledger can charge (GrantEvidence).

    The details of every release it accepts name the budget: ``request_digest``
    (a Grant) or ``break_glass`` as the id, ``grant_bytes`` or
    ``break_glass_bytes`` as the lifetime cap; a release without them is
    refused (nothing would bound it).
    """

    def verify_unreserved(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Like ``verify``, but the byte budget is only pre-checked: the ledger charges it."""
        ...

    def charged(self, budget_id: str, nbytes: int) -> None:
        """The ledger charged ``nbytes`` to ``budget_id`` (warms the rule's pre-check)."""
        ...

    def observe(self, budget_id: str, used: int) -> None:
        """The ledger holds ``used`` bytes under ``budget_id`` (it refused a charge)."""
        ...


def _budget_of(accepted: Mapping[str, Any]) -> tuple[str, int] | None:
    """The (id, lifetime cap) of the byte budget accepted evidence names, if any."""
    bid = accepted.get("request_digest") or accepted.get("break_glass")
    cap = accepted.get("grant_bytes") if accepted.get("request_digest") \
        else accepted.get("break_glass_bytes")
    if isinstance(bid, str) and bid and isinstance(cap, int) and not isinstance(cap, bool):
        return bid, cap
    return None


class EgressMeter(Protocol):
    """Charges released bytes against a principal's budget."""

    def charge(
        self,
        principal: str,
        nbytes: int,
        now: float,
        *,
        artifact: str | None = None,
        charge_id: str | None = None,
    ) -> None:
        """Record the bytes or raise BudgetExceeded (then nothing is recorded)."""
        ...

    def refund(
        self, principal: str, nbytes: int, now: float, *, charge_id: str | None = None
    ) -> None:
        """Undo a charge whose release was refused later (audit failure)."""
        ...


@runtime_checkable
class AuditedEgressMeter(EgressMeter, Protocol):
    """An egress meter that can charge inside the audit append's own transaction."""

    def joins(self, audit: object) -> bool:
        """Whether :meth:`charge_with_event` works with ``audit`` (same database)."""
        ...

    def charge_with_event(
        self,
        audit: AuditLog,
        principal: str,
        nbytes: int,
        now: float,
        *,
        artifact: str | None = None,
        charge_id: str | None = None,
        event: Mapping[str, Any],
        budget: tuple[str, int] | None = None,
    ) -> int:
        """Charge and append ``event`` atomically; its audit index.

        ``budget`` (id, lifetime cap in bytes) is a Grant's byte budget charged
        in the same transaction. Raises BudgetExceeded (nothing appended or
        charged), AccessDenied when ``charge_id`` was already charged or the
        budget is spent, AuditUnavailable when the append failed.
        """
        ...


class ShardSizes(Protocol):
    """The size a shard's file key opens, from signed data (the artifact's signed manifest)."""

    def size(self, request: ReleaseRequest) -> int:
        """Plaintext bytes of the request's shard (its ``nbytes`` is only a hint); AccessDenied
        when the signed manifest does not list that blob as that shard of that artifact."""
        ...


class StateGuard(Protocol):
    """Checks that the restrictive state the gate reads agrees with the verified audit log."""

    def check(self) -> None:
        """Reconcile when due; raise (AuditUnavailable, StorageError) to refuse releases."""
        ...


class CanaryCheck(Protocol):
    """Raises a critical alert (and may refuse) when a request touches a decoy."""

    def check(self, request: ReleaseRequest) -> bool:
        """True when the request was for a canary (the alert is already raised)."""
        ...


def check_release_signature(
    envelope: str, public: Ed25519PublicKey, kid: str, request: ReleaseRequest, now: float
) -> tuple[str, int]:
    """Verify the principal's signed release request; return its (nonce, expiry).

    Checks the signature, that it names exactly this artifact, shard, blob and
    purpose, and that it is unexpired and short-lived. Replay is the caller's
    check (it owns the set of used nonces).
    """
    obj = request.obj
    try:
        st = verify_statement(envelope, EVIDENCE_PAYLOAD_TYPE, {kid: public},
                              obj=f"release evidence for {obj}")
    except IntegrityError as exc:
        raise AccessDenied(f"release evidence does not verify: {exc.message}",
                           obj=obj, remedy="sign the request with your identity") from None
    want = {"artifact": request.artifact, "shard": request.shard,
            "blob_id": request.blob_id, "purpose": request.purpose}
    for name, value in want.items():
        if st.get(name) != value:
            raise AccessDenied(f"the evidence is for another {name}", obj=obj,
                               remedy="sign evidence for exactly this shard and purpose")
    expires, nonce = st.get("expires"), st.get("nonce")
    if not isinstance(expires, int) or not isinstance(nonce, str) or len(nonce) < 16:
        raise AccessDenied("the evidence lacks a valid nonce or expiry", obj=obj)
    if expires <= now:
        raise AccessDenied("the evidence has expired", obj=obj, remedy="sign a fresh request")
    if expires - now > MAX_EVIDENCE_LIFETIME_S:
        raise AccessDenied(f"the evidence claims more than {MAX_EVIDENCE_LIFETIME_S} s of "
                           "validity", obj=obj, remedy="sign with a shorter lifetime")
    return nonce, expires


class UsedNonces:
    """Release nonces already spent, each remembered until its evidence expires (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._expiry: deque[tuple[float, str]] = deque()

    def remember(self, nonce: str, expires: float) -> None:
        """Mark ``nonce`` spent until ``expires``."""
        with self._lock:
            self._seen[nonce] = expires
            self._expiry.append((expires, nonce))

    def check(self, nonce: str, *, obj: str) -> None:
        """Raise AccessDenied when ``nonce`` was already spent."""
        with self._lock:
            if nonce in self._seen:
                raise AccessDenied("the evidence was already used (replay)", obj=obj,
                                   remedy="sign a fresh request for each release")

    def spend(self, nonce: str, expires: float, now: float, *, obj: str) -> None:
        """Spend ``nonce`` or raise AccessDenied (replay); forgets expired nonces first."""
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = self._expiry.popleft()
                if self._seen.get(old, now + 1) <= now:
                    self._seen.pop(old, None)
            if nonce in self._seen:
                raise AccessDenied("the evidence was already used (replay)", obj=obj,
                                   remedy="sign a fresh request for each release")
            self._seen[nonce] = float(expires)
            self._expiry.append((float(expires), nonce))


class PublicKeys:
    """Raw Ed25519 public keys parsed once, with their DSSE key ids (thread-safe, bounded)."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._known: dict[bytes, tuple[Ed25519PublicKey, str]] = {}

    def load(self, raw: bytes) -> tuple[Ed25519PublicKey, str]:
        """The key and its id; raises ValueError when ``raw`` is not an Ed25519 public key."""
        found = self._known.get(raw)
        if found is None:
            public = Ed25519PublicKey.from_public_bytes(raw)
            found = (public, key_id(public))
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[bytes(raw)] = found
        return found


class OfficerEvidence:
    """Interim rule: the principal signs the request and is an officer pinned in the barrier.

    Single use (nonces remembered until they expire, seeded from the audit log),
    bound to artifact, shard, blob and purpose, and valid for at most an hour.
    """

    def __init__(self, officers: Callable[[], Mapping[str, Ed25519PublicKey]]) -> None:
        self._officers = officers
        self._keys = PublicKeys()
        self.nonces = UsedNonces()

    def remember(self, nonce: str, expires: float) -> None:
        """Mark ``nonce`` used until ``expires`` (used to seed from the audit log)."""
        self.nonces.remember(nonce, expires)

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Check signature, officer status, binding, expiry and replay."""
        obj = request.obj
        try:
            public, kid = self._keys.load(request.principal_key)
        except (ValueError, TypeError):
            raise AccessDenied("the principal's public key is malformed", obj=obj) from None
        if kid not in self._officers():
            raise AccessDenied(
                f"principal {request.principal} (key {kid}) is not a security officer",
                obj=obj, remedy="interim rule (docs/release-gate.md): only an officer pinned "
                "at `strongroom init` may release file keys")
        nonce, expires = check_release_signature(request.evidence, public, kid, request, now)
        self.nonces.spend(nonce, expires, now, obj=obj)
        return {"evidence_key": kid, "nonce": nonce, "expires": expires}


def default_meter(
    store: Store,
    audit: AuditLog,
    *,
    alerts: Any = None,
    clock: Callable[[], float] = time.time,
    backfill: bool = True,
) -> EgressMeter:
    """The monitor's durable egress meter with the configured per-principal cap.

    ``STRONGROOM_EGRESS_CAP_BYTES`` caps each principal per 24 h; the artifact and
    lab-wide budgets are the monitor's defaults (see docs/monitoring.md). Alerts
    near and at a cap go to the alert store and the audit log.
    """
    from strongroom.keys.config import KeysSettings
    from strongroom.monitor.alerts import AlertManager
    from strongroom.monitor.egress import DEFAULT_BUDGETS, Budget
    from strongroom.monitor.egress import EgressMeter as DurableMeter

    cap = KeysSettings().egress_cap_bytes
    budgets = [Budget("principal", "*", EGRESS_WINDOW_S, cap), *DEFAULT_BUDGETS[1:]]
    meter = DurableMeter(
        store, budgets=budgets, alerts=alerts or AlertManager(store, audit=audit), clock=clock
    )
    if backfill:
        meter.backfill(audit)
    return meter


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ReleaseGate:
    """Composes keyring, evidence, egress and audit; the only caller of ``Keyring.unwrap``."""

    def __init__(
        self,
        keyring: Keyring,
        audit: AuditLog,
        *,
        evidence: EvidenceVerifier | None = None,
        egress: EgressMeter | None = None,
        canaries: CanaryCheck | None = None,
        sizes: ShardSizes | None = None,
        guard: StateGuard | None = None,
        clock: Callable[[], float] = time.time,
        seed_from_audit: bool = True,
    ) -> None:
        self.keyring = keyring
        self.audit = audit
        self.clock = clock
        officer_rule = OfficerEvidence(keyring.officers)
        self.evidence: EvidenceVerifier = evidence or officer_rule
        if egress is None:
            egress = default_meter(keyring.store, audit, clock=clock, backfill=seed_from_audit)
        self.egress: EgressMeter = egress
        self.canaries = canaries
        if sizes is None:  # the deployment's source: the barrier-signed manifests
            from strongroom.vault.sizes import SignedShardSizes

            sizes = SignedShardSizes(keyring.store,
                                     lambda: keyring.signing_key("manifest").public_key())
        self.sizes: ShardSizes = sizes
        self.guard = guard
        self._join: tuple[object, object, bool] | None = None
        self._ledger_rule: tuple[object, LedgerBudgetedEvidence | None] | None = None
        if seed_from_audit and evidence is None:
            self._seed(officer_rule)

    def _seed(self, rule: OfficerEvidence) -> None:
        """Rebuild the used nonces from the audit log's recent releases."""
        now = self.clock()
        horizon = now - max(EGRESS_WINDOW_S, MAX_EVIDENCE_LIFETIME_S)
        end = self.audit.size()
        page = 2000
        while end > 0:
            start = max(0, end - page)
            events = self.audit.events(start, end)
            oldest = now
            for ev in reversed(events):
                t = _parse_time(ev.time)
                oldest = min(oldest, t)
                if ev.action != ACTION or ev.decision != "allow" or t <= horizon:
                    continue
                nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
                if isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                    rule.remember(nonce, float(expires))
            if oldest <= horizon:
                break
            end = start

    def _deny(self, request: ReleaseRequest, exc: StrongroomError, **details: Any) -> None:
        try:
            self.audit.append(actor=request.principal, action=ACTION, obj=request.obj,
                              decision="deny", reason=exc.message[:500], shard=request.shard,
                              nbytes=request.nbytes,
                              details={"purpose": request.purpose, "blob_id": request.blob_id,
                                       "error": type(exc).__name__, **_host(request),
                                       **details})
        except AuditUnavailable as audit_exc:
            raise audit_exc from exc

    def release(self, request: ReleaseRequest) -> bytearray:
        """Run the gate; return the shard's file key (the caller zeroes it).

        ``request.nbytes`` is a hint: the bytes charged are the shard's size in
        its signed manifest (a file key opens the whole shard).
        """
        if not request.blob_id or not request.principal or not request.artifact:
            raise InvalidInput("release request needs a principal, an artifact and a blob id",
                               obj=request.obj)
        expecting = getattr(self.audit, "expecting", None)
        if not callable(expecting):
            return self._release(request)
        with expecting():  # concurrent releases share one audit commit
            return self._release(request)

    def _release(self, request: ReleaseRequest) -> bytearray:
        self.keyring.require_unsealed()
        intact = getattr(self.audit, "require_intact", None)
        if callable(intact):
            intact()  # AuditUnavailable once the log was found rolled back (SR-AUDIT-ROLLBACK)
        if self.guard is not None:
            try:
                self.guard.check()  # restrictive rows agree with the verified log
            except StrongroomError as exc:
                with contextlib.suppress(StrongroomError):  # the store may be what failed
                    self._deny(request, exc)
                raise
        try:
            located = self.keyring.locate(request.blob_id, request.stanzas)
        except (NotFound, IntegrityError) as exc:
            self._deny(request, exc)
            raise
        request, claimed = self._derive(request)
        now = self.clock()
        meter = self.egress
        # With a joined meter the ledger charges the evidence's byte budget (shared, and
        # only for releases that commit); the rule then only pre-checks it.
        rule = self._budgeted() if self._joined(meter) else None
        try:
            accepted = dict(rule.verify_unreserved(request, now) if rule is not None
                            else self.evidence.verify(request, now))
        except AccessDenied as exc:
            self._deny(request, exc)
            raise
        if self.canaries is not None:
            try:
                self.canaries.check(request)  # a critical alert naming who asked
            except AccessDenied as exc:
                self._deny(request, exc, **accepted)
                raise
        # Keyed by the evidence nonce, as the meter keys audit events it replays,
        # so a release is never charged twice.
        nonce = accepted.get("nonce")
        charge_id = nonce if isinstance(nonce, str) and nonce else None
        event: dict[str, Any] = {"actor": request.principal, "action": ACTION, "obj": request.obj,
                 "decision": "allow", "reason": request.purpose, "shard": request.shard,
                 "nbytes": request.nbytes,
                 "details": {"purpose": request.purpose, "blob_id": request.blob_id,
                             "kek_version": located.version, **_host(request), **claimed,
                             **accepted}}
        if self._joined(meter):
            budget = _budget_of(accepted) if rule is not None else None
            if rule is not None and budget is None:  # unreserved and unbounded: fail closed
                refused = AccessDenied("the accepted evidence names no byte budget",
                                       obj=request.obj, remedy="report this: the evidence "
                                       "rule must name the Grant's budget")
                self._deny(request, refused, **accepted)
                raise refused
            try:
                cast(AuditedEgressMeter, meter).charge_with_event(
                    self.audit, request.principal, request.nbytes, now,
                    artifact=request.artifact, charge_id=charge_id, event=event, budget=budget)
            except (BudgetExceeded, AccessDenied) as exc:
                used = getattr(exc, "used", None)
                if (rule is not None and budget is not None and isinstance(used, int)
                        and getattr(exc, "budget_id", None) == budget[0]):
                    rule.observe(budget[0], used)  # the ledger's total: a warmer pre-check
                self._deny(request, exc, **accepted)
                raise
            if rule is not None and budget is not None:
                rule.charged(budget[0], request.nbytes)
            return self.keyring.unwrap(request.blob_id, located)
        try:
            meter.charge(request.principal, request.nbytes, now, artifact=request.artifact,
                         charge_id=charge_id)
        except BudgetExceeded as exc:
            self._deny(request, exc, **accepted)
            raise
        try:
            self.audit.append(**event)
        except BaseException:
            meter.refund(request.principal, request.nbytes, now, charge_id=charge_id)
            raise
        return self.keyring.unwrap(request.blob_id, located)

    def _derive(self, request: ReleaseRequest) -> tuple[ReleaseRequest, dict[str, int]]:
        """The request with its size from the signed manifest; the client's figure if it differed."""
        try:
            size = self.sizes.size(request)
        except AccessDenied as exc:
            self._deny(request, exc)
            raise
        if size == request.nbytes:
            return request, {}
        claimed = {"claimed_nbytes": request.nbytes}
        return dataclasses.replace(request, nbytes=size), claimed

    def _budgeted(self) -> LedgerBudgetedEvidence | None:
        """The evidence rule if the ledger can charge its byte budgets (cached per rule)."""
        evidence = self.evidence
        cached = self._ledger_rule
        if cached is not None and cached[0] is evidence:
            return cached[1]
        rule = evidence if isinstance(evidence, LedgerBudgetedEvidence) else None
        self._ledger_rule = (evidence, rule)
        return rule

    def _joined(self, meter: EgressMeter) -> bool:
        """Whether ``meter`` charges inside this gate's audit transactions (cached per pair)."""
        cached = self._join
        if cached is not None and cached[0] is meter and cached[1] is self.audit:
            return cached[2]
        joined = isinstance(meter, AuditedEgressMeter) and meter.joins(self.audit)
        self._join = (meter, self.audit, joined)
        return joined

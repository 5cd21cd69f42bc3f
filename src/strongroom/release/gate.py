"""The release gate: the one code path that unwraps a shard's file key.

Every weight load goes through :meth:`ReleaseGate.release`, which runs, in order:

1. **seal** — the keyring must be unsealed (:class:`~strongroom.errors.Sealed`),
   and the audit log intact (``AuditLog.require_intact``: a log found rolled back
   refuses every release, :class:`~strongroom.errors.AuditUnavailable`);
2. **state** — the state guard reconciles the restrictive rows (revocations,
   denials, egress charges) with the verified audit log when due
   (:class:`~strongroom.release.ports.StateGuard`);
3. **locate** — the blob's wrapped file key must exist under a usable KEK version;
4. **size** — the bytes charged are the shard's size in its signed manifest
   (:class:`~strongroom.release.ports.ShardSizes`), never the client's figure;
5. **evidence** — verified from signatures and keys pinned in the barrier, never
   from a database row (:class:`~strongroom.errors.AccessDenied`): in a deployment,
   a Grant or break-glass statement and the principal's fresh signed request
   (:class:`strongroom.access.evidence.GrantEvidence`); then the canary check;
6. **egress and audit** — with the monitor's durable ledger on the audit log's
   database (:class:`~strongroom.release.ports.AuditedEgressPort`), the
   principal's budget and the Grant's byte budget are charged inside the audit
   group commit that appends the allow decision: an acknowledged release is
   charged, a refused or failed one is not, and every gate on the database
   shares the budgets (:class:`~strongroom.errors.BudgetExceeded`). A plain
   :class:`~strongroom.release.ports.EgressPort` is charged first and refunded
   when the append fails;
7. **unwrap** — only now is the file key decrypted and returned (caller zeroes it).

**Attested releases.** When the accepted evidence says ``attested: <policy>`` (the
artifact's officer-signed label, or the Grant's request its approvers signed; when
both name one, both must admit the evidence), :meth:`ReleaseGate.release` refuses, audited, and
only :meth:`ReleaseGate.release_attested` can release: after step 5 the gate's
:class:`~strongroom.attest.admission.AttestationService` admits the enclave's
evidence (bound to its ephemeral X25519 key and a gate nonce) under that policy,
or finds the key's standing admission; the allow entry records the measurement,
chip and policy; and the file key leaves the gate only as an age stanza wrapped to
that ephemeral key (:class:`~strongroom.errors.AttestationRefused` names a failed check).

**Batches.** :meth:`ReleaseGate.release_many` runs steps 1 to 5 for each request
in order (a refusal is audited at once and answers that request only), then step
6 for all admitted ones in one audit batch, one transaction, in which each charge
sees those before it, and step 7 for each once that batch is durable. Reads that
are the same for every request are taken once per batch, when it is run: the
wrapped keys of all its blobs (step 3, one statement; nothing of them is kept for
the next batch) and, when the evidence rule offers a ``batch()`` scope, what it
reads once for all (the access statements' marker: a revocation committed before
the batch is run refuses every request in it). Attested releases are never batched.

Every refusal after step 1 is audited as ``deny``. An optional
:class:`~strongroom.release.ports.ReleaseObserver` counts each decision, its
time and the bytes released, for the deployment's metrics; a refusal is
counted by its class (:func:`refusal_class`), never by its message. The gate builds none of its
collaborators: the runtime composes them at unseal
(:mod:`strongroom.runtime.wiring`, ``LocalKeyService``), and tests hand in their own.

Use it like this::

    gate = ReleaseGate(keyring, audit_log, evidence=rule, egress=meter, sizes=sizes,
                       canaries=canaries, guard=guard)
    evidence = sign_release_evidence(key, artifact="minilm@1", shard="model.safetensors",
                                     blob_id=blob_id, purpose="load")
    key = gate.release(ReleaseRequest(principal="alice", principal_key=pub_raw,
                                      artifact="minilm@1", shard="model.safetensors",
                                      blob_id=blob_id, nbytes=size, purpose="load",
                                      evidence=evidence))
    try: ... finally: key[:] = bytes(len(key))

Do not call :meth:`Keyring.unwrap` anywhere else, and do not cache released keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from strongroom.attest.admission import Admission, AttestationService, AttestedClaim
from strongroom.crypto.age import Stanza
from strongroom.errors import (
    AccessDenied,
    ApprovalRequired,
    AttestationRefused,
    AuditUnavailable,
    BudgetExceeded,
    GrantBudgetSpent,
    IntegrityError,
    InvalidInput,
    NotFound,
    Sealed,
    StorageError,
    StrongroomError,
)
from strongroom.release.ports import (
    AuditedEgressPort,
    CanaryCheck,
    EgressPort,
    EvidenceVerifier,
    LedgerBudgetedEvidence,
    ReleaseObserver,
    ShardSizes,
    StateGuard,
)
from strongroom.release.request import ReleaseRequest

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.keys.kek import Located
    from strongroom.keys.keyring import Keyring

__all__ = ["ACTION", "REFUSAL_CLASSES", "ReleaseGate", "refusal_class"]

#: The audit action of every release decision.
ACTION = "key.release"

#: Refusal classes by error class, most specific first: the only values a metric's
#: ``reason`` label takes (a small fixed set: never a message, a principal or an artifact).
_CLASSES: tuple[tuple[type[StrongroomError], str], ...] = (
    (Sealed, "sealed"), (AuditUnavailable, "audit_unavailable"), (StorageError, "storage"),
    (BudgetExceeded, "budget"), (GrantBudgetSpent, "budget"),
    (ApprovalRequired, "approval_required"), (AccessDenied, "denied"),
    (NotFound, "not_found"), (IntegrityError, "integrity"), (InvalidInput, "invalid_input"))
#: Every value :func:`refusal_class` returns.
REFUSAL_CLASSES = tuple(dict.fromkeys([name for _, name in _CLASSES] + ["error"]))


def refusal_class(exc: StrongroomError) -> str:
    """The fixed class a refused release is counted under (``error`` for anything else)."""
    for cls, name in _CLASSES:
        if isinstance(exc, cls):
            return name
    return "error"


def _host(request: ReleaseRequest, server: str | None = None) -> dict[str, str]:
    """The audit details naming the client's host (``host``) and the releasing server (``server``)."""
    where = {"host": request.host[:255]} if request.host else {}
    if server:
        where["server"] = server[:255]
    return where


def _budget_of(accepted: Mapping[str, Any]) -> tuple[str, int] | None:
    """The (id, lifetime cap) of the byte budget accepted evidence names, if any."""
    bid = accepted.get("request_digest") or accepted.get("break_glass")
    cap = accepted.get("grant_bytes") if accepted.get("request_digest") \
        else accepted.get("break_glass_bytes")
    if isinstance(bid, str) and bid and isinstance(cap, int) and not isinstance(cap, bool):
        return bid, cap
    return None


@dataclasses.dataclass(slots=True)  # not frozen: its __init__ is half the cost, and it is private
class _Prepared:
    """A request that passed steps 1 to 5: what its charge, its entry and its unwrap need."""

    request: ReleaseRequest
    located: Located
    accepted: dict[str, Any]
    event: dict[str, Any]
    charge_id: str | None
    budget: tuple[str, int] | None
    rule: LedgerBudgetedEvidence | None
    admission: Admission | None
    now: float
    joined: bool


class ReleaseGate:
    """Composes keyring, evidence, egress and audit; the only caller of ``Keyring.unwrap``."""

    def __init__(
        self,
        keyring: Keyring,
        audit: AuditLog,
        *,
        evidence: EvidenceVerifier,
        egress: EgressPort,
        sizes: ShardSizes,
        canaries: CanaryCheck | None = None,
        guard: StateGuard | None = None,
        clock: Callable[[], float] = time.time,
        server: str | None = None,
        observer: ReleaseObserver | None = None,
        attestation: AttestationService | None = None,
    ) -> None:
        #: This host's id (``STRONGROOM_HOST_ID``), recorded as ``server`` in each release entry.
        self.server = server
        self.keyring = keyring
        self.audit = audit
        self.clock = clock
        self.evidence = evidence
        self.egress = egress
        self.canaries = canaries
        self.sizes = sizes
        self.guard = guard
        #: Counts decisions for the metrics (``None``: nothing counted).
        self.observer = observer
        #: Admits enclaves' evidence for artifacts labelled ``attested`` (None: none can be).
        self.attestation = attestation
        self._join: tuple[object, object, bool] | None = None
        self._ledger_rule: tuple[object, LedgerBudgetedEvidence | None] | None = None

    def _deny(self, request: ReleaseRequest, exc: StrongroomError, **details: Any) -> None:
        try:
            self.audit.append(actor=request.principal, action=ACTION, obj=request.obj,
                              decision="deny", reason=exc.message[:500], shard=request.shard,
                              nbytes=request.nbytes,
                              details={"purpose": request.purpose, "blob_id": request.blob_id,
                                       "error": type(exc).__name__, **_host(request, self.server),
                                       **details})
        except AuditUnavailable as audit_exc:
            raise audit_exc from exc

    def release(self, request: ReleaseRequest) -> bytearray:
        """Run the gate; return the shard's file key (the caller zeroes it).

        ``request.nbytes`` is a hint: the bytes charged are the shard's size in
        its signed manifest (a file key opens the whole shard).
        """
        return self._observed(request, None)[0]

    def release_attested(self, request: ReleaseRequest, claim: AttestedClaim) -> Stanza:
        """Run the gate for an enclave; return the file key wrapped to ``claim``'s ephemeral key.

        The key is in clear only inside this call (zeroed before it returns): the
        caller gets an age X25519 stanza that only the admitted enclave can open.
        """
        key, admission = self._observed(request, claim)
        try:
            if admission is None or self.attestation is None:  # _attested admitted it
                raise AttestationRefused("evidence", "no admission for this release",
                                         obj=request.obj)
            return self.attestation.desk.wrap(key, admission)
        finally:
            key[:] = bytes(len(key))

    def _observed(self, request: ReleaseRequest,
                  claim: AttestedClaim | None) -> tuple[bytearray, Admission | None]:
        observer = self.observer
        if observer is None:
            key, _, admission = self._checked(request, claim)
            return key, admission
        start = time.perf_counter()
        try:
            key, nbytes, admission = self._checked(request, claim)
        except StrongroomError as exc:
            observer.refused(refusal_class(exc), time.perf_counter() - start)
            raise
        observer.allowed(nbytes, time.perf_counter() - start)
        return key, admission

    def _checked(self, request: ReleaseRequest, claim: AttestedClaim | None = None
                 ) -> tuple[bytearray, int, Admission | None]:
        """The file key, the bytes it opens (as signed) and the enclave's admission, or the refusal."""
        if not request.blob_id or not request.principal or not request.artifact:
            raise InvalidInput("release request needs a principal, an artifact and a blob id",
                               obj=request.obj)
        expecting = getattr(self.audit, "expecting", None)
        if not callable(expecting):
            return self._release(request, claim)
        with expecting():  # concurrent releases share one audit commit
            return self._release(request, claim)

    def _release(self, request: ReleaseRequest,
                 claim: AttestedClaim | None) -> tuple[bytearray, int, Admission | None]:
        p = self._prepare(request, claim)
        request, meter = p.request, self.egress
        if p.joined:
            try:
                cast(AuditedEgressPort, meter).charge_with_event(
                    self.audit, request.principal, request.nbytes, p.now,
                    artifact=request.artifact, charge_id=p.charge_id, event=p.event,
                    budget=p.budget)
            except (BudgetExceeded, AccessDenied) as exc:
                self._charge_refused(p, exc)
                raise
            return self._granted(p)
        try:
            meter.charge(request.principal, request.nbytes, p.now, artifact=request.artifact,
                         charge_id=p.charge_id)
        except BudgetExceeded as exc:
            self._deny(request, exc, **p.accepted)
            raise
        try:
            self.audit.append(**p.event)
        except BaseException:
            meter.refund(request.principal, request.nbytes, p.now, charge_id=p.charge_id)
            raise
        return self._granted(p)

    def _prepare(self, request: ReleaseRequest, claim: AttestedClaim | None,
                 found: Located | StrongroomError | None = None) -> _Prepared:
        """Steps 1 to 5 for one request, each refusal audited; what its charge and entry need.

        ``found``: the batch's read of the request's wrapped key (None: read it here).
        """
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
            if found is None:
                located = self.keyring.locate(request.blob_id, request.stanzas)
            elif isinstance(found, StrongroomError):
                raise found
            else:
                located = found
        except (NotFound, IntegrityError) as exc:
            self._deny(request, exc)
            raise
        request, claimed = self._derive(request)
        now = self.clock()
        joined = self._joined(self.egress)
        # With a joined meter the ledger charges the evidence's byte budget (shared, and
        # only for releases that commit); the rule then only pre-checks it.
        rule = self._budgeted() if joined else None
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
        admission = self._attested(request, claim, accepted)
        if admission is not None:
            ev = admission.evidence
            accepted = {**accepted, "attestation": {
                "policy": admission.policy, "serial": admission.serial,
                **({"grant_policy": accepted["grant_attested"]}
                   if accepted.get("grant_attested") else {}),
                "platform": ev.platform, "measurement": ev.measurement,
                "chip_id": ev.chip_id, "tcb": dict(ev.tcb), "recipient": str(admission.recipient)}}
        # Keyed by the evidence nonce, as the meter keys audit events it replays,
        # so a release is never charged twice.
        nonce = accepted.get("nonce")
        charge_id = nonce if isinstance(nonce, str) and nonce else None
        event: dict[str, Any] = {"actor": request.principal, "action": ACTION, "obj": request.obj,
                 "decision": "allow", "reason": request.purpose, "shard": request.shard,
                 "nbytes": request.nbytes,
                 "details": {"purpose": request.purpose, "blob_id": request.blob_id,
                             "kek_version": located.version, **_host(request, self.server), **claimed,
                             **accepted}}
        budget = _budget_of(accepted) if rule is not None else None
        if rule is not None and budget is None:  # unreserved and unbounded: fail closed
            refused = AccessDenied("the accepted evidence names no byte budget",
                                   obj=request.obj, remedy="report this: the evidence "
                                   "rule must name the Grant's budget")
            self._deny(request, refused, **accepted)
            raise refused
        return _Prepared(request, located, accepted, event, charge_id, budget, rule, admission,
                         now, joined)

    def _charge_refused(self, p: _Prepared, exc: StrongroomError) -> None:
        """Audit a charge the ledger refused (and warm the rule's pre-check with its total)."""
        used = getattr(exc, "used", None)
        if (p.rule is not None and p.budget is not None and isinstance(used, int)
                and getattr(exc, "budget_id", None) == p.budget[0]):
            p.rule.observe(p.budget[0], used)  # the ledger's total: a warmer pre-check
        self._deny(p.request, exc, **p.accepted)

    def _granted(self, p: _Prepared) -> tuple[bytearray, int, Admission | None]:
        """Step 7, once the charge and the allow entry are durable."""
        if p.rule is not None and p.budget is not None:
            p.rule.charged(p.budget[0], p.request.nbytes)
        return self.keyring.unwrap(p.request.blob_id, p.located), p.request.nbytes, p.admission

    def release_many(self, requests: Sequence[ReleaseRequest]
                     ) -> list[bytearray | StrongroomError]:
        """Run the gate for several requests; each gets its file key or its own refusal.

        Every check of :meth:`release` runs for each request, in order; the
        admitted ones are charged and their allow entries appended in one
        audit batch (one transaction), in which each charge sees the ones
        before it (two requests spending one budget: the one passing it is
        refused). A key is unwrapped only once its entry is durable. The
        caller zeroes the keys. Without a meter that joins the audit
        transaction, the requests run one after another as :meth:`release`.
        """
        if not self._joined(self.egress):
            return [self._one(r) for r in requests]
        expecting = getattr(self.audit, "expecting", None)
        with expecting() if callable(expecting) else contextlib.nullcontext():
            return self._many(list(requests))

    def _one(self, request: ReleaseRequest) -> bytearray | StrongroomError:
        try:
            return self.release(request)
        except StrongroomError as exc:
            return exc

    def _many(self, requests: list[ReleaseRequest]) -> list[bytearray | StrongroomError]:
        observer = self.observer
        start = time.perf_counter()
        results: list[bytearray | StrongroomError | None] = [None] * len(requests)
        # The observer counts the batch's releases in one call after the loop (the metrics
        # write each counter once a batch); each release's time is still its own.
        took: list[float] = []
        released = 0

        def refused(i: int, exc: StrongroomError) -> None:
            results[i] = exc
            if observer is not None:
                observer.refused(refusal_class(exc), time.perf_counter() - start)

        prepared: list[tuple[int, _Prepared]] = []
        well_formed: list[int] = []
        for i, request in enumerate(requests):
            if not request.blob_id or not request.principal or not request.artifact:
                refused(i, InvalidInput("release request needs a principal, an artifact and "
                                        "a blob id", obj=request.obj))
                continue
            well_formed.append(i)
        # Reads every request of the batch shares, each taken once, now that the batch is
        # here: the wrapped keys of all its blobs (one statement) and, in the evidence rule's
        # batch scope, the access statements' marker (a revocation committed before this
        # point refuses every request of the batch; one committed later, the next batch).
        found = dict(zip(well_formed, self._locate_all([requests[i] for i in well_formed]),
                         strict=True))
        scope = getattr(self.evidence, "batch", None)
        with scope() if callable(scope) else contextlib.nullcontext():
            for i in well_formed:
                try:
                    prepared.append((i, self._prepare(requests[i], None, found[i])))
                except StrongroomError as exc:
                    refused(i, exc)
        if prepared:
            meter = cast(AuditedEgressPort, self.egress)
            try:
                outcomes: list[int | StrongroomError] = meter.charge_many_with_event(
                    self.audit, [{"principal": p.request.principal, "nbytes": p.request.nbytes,
                                  "now": p.now, "artifact": p.request.artifact,
                                  "charge_id": p.charge_id, "event": p.event,
                                  "budget": p.budget} for _, p in prepared])
            except AuditUnavailable as exc:  # nothing of the batch was charged or appended
                outcomes = [exc] * len(prepared)
            for (i, p), outcome in zip(prepared, outcomes, strict=True):
                if isinstance(outcome, (BudgetExceeded, AccessDenied)):
                    try:
                        self._charge_refused(p, outcome)
                    except AuditUnavailable as audit_exc:
                        refused(i, audit_exc)
                        continue
                if isinstance(outcome, StrongroomError):
                    refused(i, outcome)
                    continue
                try:
                    key, nbytes, _ = self._granted(p)
                except StrongroomError as exc:
                    refused(i, exc)
                    continue
                results[i] = key
                took.append(time.perf_counter() - start)
                released += nbytes
            if observer is not None:
                observer.allowed_many(released, took)
        return cast(list[bytearray | StrongroomError], results)  # every position was filled

    def _locate_all(self, requests: list[ReleaseRequest]
                    ) -> list[Located | StrongroomError | None]:
        """Each request's wrapped key from one read (None each: the keyring reads one by one).

        A keyring without ``locate_many``, or one that refuses the whole read (sealed),
        leaves each request to :meth:`_prepare`, which asks and refuses it in order.
        """
        locate_many = getattr(self.keyring, "locate_many", None)
        if not requests or not callable(locate_many):
            return [None] * len(requests)
        try:
            found: list[Located | StrongroomError] = locate_many(
                [(r.blob_id, r.stanzas) for r in requests])
        except StrongroomError:
            return [None] * len(requests)
        return list(found)

    def _attested(self, request: ReleaseRequest, claim: AttestedClaim | None,
                  accepted: Mapping[str, Any]) -> Admission | None:
        """The enclave's admission when the evidence requires one (or one is offered), else None.

        The label's policy (``attested``) and the Grant's (``grant_attested``, which its
        approvers signed) both apply: when both name one, the evidence must satisfy both.
        """
        label, grant = accepted.get("attested"), accepted.get("grant_attested")
        if not label and not grant and claim is None:
            return None  # the common case: nothing asks for an enclave
        required = [p for p in dict.fromkeys((label, grant)) if p]
        if not required and claim is None:
            return None
        try:
            if claim is None:
                said = "; ".join(
                    ([f"{request.artifact} is labelled attested: {label}"] if label else [])
                    + ([f"the Grant says attested: {grant}"] if grant else []))
                raise AttestationRefused(
                    "evidence", f"{said}; its keys are released only into an attested enclave",
                    obj=request.obj,
                    remedy="load it through an attested workload (docs/attestation.md)")
            if not all(isinstance(p, str) for p in required) or not required:
                raise AttestationRefused(
                    "policy", "neither the artifact's label nor the Grant names an attestation "
                              "policy", obj=request.obj,
                    remedy="ask k officers to label it attested: <policy>")
            if self.attestation is None:
                raise AttestationRefused(
                    "evidence", "this gate verifies no attestation evidence", obj=request.obj,
                    remedy="configure attestation on the key-release host")
            return self.attestation.admit_all([str(p) for p in required], claim)
        except AccessDenied as exc:
            self._deny(request, exc, **accepted)
            raise

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

    def _joined(self, meter: EgressPort) -> bool:
        """Whether ``meter`` charges inside this gate's audit transactions (cached per pair)."""
        cached = self._join
        if cached is not None and cached[0] is meter and cached[1] is self.audit:
            return cached[2]
        joined = isinstance(meter, AuditedEgressPort) and meter.joins(self.audit)
        self._join = (meter, self.audit, joined)
        return joined

"""GrantEvidence: the release gate's evidence rule in a deployment (a Grant or break-glass).

One module because it is one evidence rule whose numbered checks run in order on
one snapshot; splitting them would scatter the order a reviewer must check.

It implements :class:`strongroom.release.ports.EvidenceVerifier`. For every key
release it re-derives the decision from signatures alone:

1. the principal's fresh release evidence (a DSSE statement by the principal's
   own key binding artifact, shard, blob, purpose, nonce and a short expiry:
   :func:`strongroom.release.request.sign_release_evidence`) verifies, is unexpired and
   was never used (so a stolen Grant alone releases nothing);
2. the shard's blob belongs to the artifact, checked in the artifact's manifest
   signed by the barrier's manifest key (so a grant for one artifact cannot
   unwrap another's blob): the gate's :class:`~strongroom.release.ports.ShardLocator`
   (the runtime hands the rule and the gate the same one, so each manifest is
   verified once); classification and compartments come from that manifest and
   the officer-signed label, the most restrictive winning;
3. the principal's enrollment, and every approver's, is signed by k of the
   officers pinned in the sealed keyring and not revoked;
4. a Grant (carried in the evidence, or found in the store under the
   principal's key) verifies: request and approvals signed by their authors,
   rule met by distinct, vetted, cleared approvers other than the requester,
   Cedar allows the action now, not expired, not revoked, bytes within budget,
   and the artifact's access cap holds; or a break-glass statement holds.

The evidence string is either the bare release evidence (grants are then
looked up in the store) or the JSON object ``{"release": <DSSE>, "grant":
<DSSE>}`` / ``{"release": <DSSE>, "break_glass": <DSSE>}`` made by
:func:`make_evidence`. Wire it into the gate like this::

    shards = shard_locator(keyring)        # strongroom.runtime.wiring
    rule = GrantEvidence(keyring.officers, keyring.officer_threshold, store, shards=shards,
                         officer_mldsa=keyring.officer_mldsa)
    rule.seed_from_audit(audit, time.time())
    gate = ReleaseGate(keyring, audit, evidence=rule, egress=meter, sizes=shards)

Cost: everything read from ``access_statements`` and verified (directory
view, labels, the policy engine, the principal's candidate grants, grant
revocations, cap holders) is cached in a :class:`_Snapshot` tagged with
:func:`strongroom.access.statements.marker` (generation, row count, highest
id: the count scans the table). Once per release batch, when the batch is run,
inside :meth:`GrantEvidence.batch` (the gate opens it; a lone release is a
batch of one), only its :func:`~strongroom.access.statements.head`
(generation and highest id, through indexes, whatever the table's size) is
read: any statement put, merged cosignature or row inserted changes it, and
the full marker is then read and the snapshot rebuilt. A row deleted by SQL
changes only the count, and cannot change what the snapshot already holds
(read before the deletion, it still has the row); it matters to a read that
follows it, so the invariant is: **every decision uses statement data read
after a full marker matching its snapshot was read**. A batch's first read of
statements reads the full marker first (a changed one: ``on_change``, which
restores deleted restrictive rows from the log, a new snapshot, the request
decided again on it), and what a batch read is kept in the snapshot only if
the full marker still matches at the batch's end (else the snapshot is
dropped), so the snapshot never holds a read that followed an unseen
deletion. An UPDATE by SQL moves no marker; the runtime's restriction
journal compares restrictive rows with the log on an interval. Signed
manifests are the shard locator's (verified once per artifact ref and
manifest key: immutable). The release
evidence (signature, expiry, nonce) is checked on every release; a Grant
decision (verification, Cedar, revocations, denials, caps) is kept in the
snapshot for the rest of its whole second, since Cedar and every expiry it
compares see whole seconds, and the byte-budget hint is checked again each
time. A revocation or any other statement moves the head, so the very next
batch decides afresh.

Byte budgets: a Grant's byte budget is charged per *request digest* (what the
approvers approved), so several Grants assembled from one request share one
budget; a break-glass statement's per its id. When the gate's egress meter
charges inside the audit log's transactions (the monitor's durable ledger on
the audit database, the deployment's set-up), the **ledger is the authority**:
the gate calls :meth:`GrantEvidence.verify_unreserved`, which only pre-checks
the budget against this process's hint, and the bytes are charged in
``egress_charges`` with the release, in the same transaction as its audit
entry (:meth:`strongroom.monitor.egress.EgressMeter.charge_with_event`). Every
gate on the database (several server hosts, a server and a CLI agent) then
shares one budget, and a release refused later (egress cap, failed audit
commit) consumes none of it. The hint (:meth:`GrantEvidence.used`: rebuilt from
the audit log at start, raised by :meth:`GrantEvidence.charged` after each
committed release and by :meth:`GrantEvidence.observe` when the ledger refused)
never counts more than the ledger holds, so it only refuses early what the
ledger would refuse, and lets a request pick among candidate Grants. Without
such a meter, :meth:`GrantEvidence.verify` reserves the bytes in this process
when it accepts the evidence, as before: not shared, and not given back when
the release is refused later.

Limits: used nonces live in this process (rebuilt from the audit log at start);
the shared ledger also refuses a nonce it already charged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.access import statements
from strongroom.access.approvals import MAX_GRANT_DURATION_S
from strongroom.access.breakglass import BreakGlass, verify_break_glass
from strongroom.access.caps import AccessCaps
from strongroom.access.directory import (
    DEFAULT_WEIGHTS_CLASSIFICATION,
    Directory,
    DirectoryReader,
    OfficerKeys,
    OfficerPQKeys,
    Resource,
    base_name,
    level,
)
from strongroom.access.grants import (
    PartsMemo,
    VerifiedGrant,
    grant_revoked,
    standing_denials,
    verify_grant,
)
from strongroom.access.policy import PolicyEngine, action_for_purpose, current_policy
from strongroom.access.statements import VerifyCache
from strongroom.crypto import dsse, ed25519
from strongroom.crypto.dsse import key_id
from strongroom.errors import (
    AccessDenied,
    ApprovalRequired,
    GrantBudgetSpent,
    InvalidInput,
    StorageError,
)
from strongroom.release.ports import LocatedShard, ShardLocator
from strongroom.release.request import (
    ReleaseRequest,
    UsedNonces,
    VerifiedEvidence,
    check_release_signature,
    sign_load_evidence,
    sign_release_evidence,
)
from strongroom.store.db import Store

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog

__all__ = [
    "DOCUMENT_CLASSIFICATION_KEY",
    "NO_BREAK_GLASS",
    "GrantEvidence",
    "describe_resource",
    "make_evidence",
    "make_load_evidence",
]

#: Manifest metadata key holding a secret document's classification (documents only).
DOCUMENT_CLASSIFICATION_KEY = "strongroom.classification"
#: How long a computed caps count is reused, seconds.
CAPS_TTL_S = 10.0
#: How many entries a snapshot keeps before starting afresh (views, grant lists, revocations).
SNAPSHOT_MEMO_SIZE = 20_000
#: Principal keys kept parsed with their key ids (cleared when full).
_KEY_MEMO_SIZE = 4096
_RELEASE_ACTION = "key.release"
#: Why a rule built with ``break_glass=False`` (each threshold key server's) refuses break-glass.
NO_BREAK_GLASS = ("threshold key servers do not honour break-glass, by design: a key server "
                  "releases its share only on a Grant its own officers' directory verifies")
NO_BREAK_GLASS_REMEDY = ("request a Grant (`strongroom access request`) and have it approved; "
                         "break-glass opens only blobs the vault's own gate releases (docs/threshold.md)")


#: Remedy of refusals of malformed evidence: the client, not policy, is at fault.
_CLIENT_REMEDY = ("the client sent malformed release evidence: use a current strongroom client "
                  "(strongroom.access.evidence.make_evidence builds it)")


def describe_resource(ref: str, kind: str, compartments: Iterable[str],
                      metadata: Mapping[str, str]) -> Resource:
    """A resource as a verified manifest describes it (before its officers' label is applied).

    Weights' metadata comes from the weights file itself and is never trusted
    for a classification: unlabeled weights count as
    :data:`~strongroom.access.directory.DEFAULT_WEIGHTS_CLASSIFICATION`.
    """
    classification = DEFAULT_WEIGHTS_CLASSIFICATION
    if kind == "document":
        classification = level(str(metadata[DOCUMENT_CLASSIFICATION_KEY]))
    return Resource(ref, kind, classification, tuple(sorted(str(c) for c in compartments)))


def make_evidence(key: Ed25519PrivateKey, *, artifact: str, shard: str, blob_id: str,
                  purpose: str, grant: str | None = None, break_glass: str | None = None,
                  ttl_s: int = 300, now: float | None = None) -> str:
    """Release evidence carrying a grant (or break-glass) and a fresh signature by ``key``."""
    release = sign_release_evidence(key, artifact=artifact, shard=shard, blob_id=blob_id,
                                    purpose=purpose, ttl_s=ttl_s, now=now)
    return _wrapped(release, grant, break_glass)


def make_load_evidence(key: Ed25519PrivateKey, *, artifact: str,
                       shards: Sequence[tuple[str, str]], purpose: str,
                       grant: str | None = None, break_glass: str | None = None,
                       ttl_s: int = 300, now: float | None = None) -> str:
    """Evidence for a whole load: like :func:`make_evidence`, one signature for every
    (shard path, blob id) in ``shards``, each of which it releases at most once."""
    release = sign_load_evidence(key, artifact=artifact, shards=shards, purpose=purpose,
                                 ttl_s=ttl_s, now=now)
    return _wrapped(release, grant, break_glass)


def _wrapped(release: str, grant: str | None, break_glass: str | None) -> str:
    """The evidence JSON: the signed release request with the Grant or break-glass named."""
    out: dict[str, str] = {"release": release}
    if grant is not None:
        out["grant"] = grant
    if break_glass is not None:
        out["break_glass"] = break_glass
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


class _HintSpent(AccessDenied):
    """This process's hint says the Grant's byte budget is spent (the ledger may know better)."""

    def __init__(self, grant: VerifiedGrant, message: str, *, obj: str, remedy: str) -> None:
        super().__init__(message, obj=obj, remedy=remedy)
        self.grant = grant


def _grant_details(g: VerifiedGrant) -> dict[str, Any]:
    """The audit details of a release under Grant ``g``."""
    return {"grant_id": g.grant_id, "request_digest": g.request_digest,
            "approvers": list(g.approvers), "grant_expires": g.expires,
            "grant_bytes": g.byte_budget,
            # the approvers signed this policy with the request: the gate then admits
            # only an enclave it allows (as well as the label's, if any)
            **({"grant_attested": g.request.attested} if g.request.attested else {})}


@dataclass
class _Snapshot:
    """What was read from ``access_statements`` and verified, valid while the marker holds.

    Entries are verified objects and lookups, never verdicts that depend on the
    time; ``memo`` values are computed at most a few times under races (each
    computation is correct on its own).
    """

    marker: tuple[int, int, int]
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def head(self) -> tuple[int, int]:
        """Its marker's :func:`~strongroom.access.statements.head`: generation and highest id."""
        return (self.marker[0], self.marker[2])


class _Stale(Exception):  # an internal signal: never leaves GrantEvidence
    """A read found the statements' full marker changed under the snapshot: decide afresh."""

    def __init__(self, mark: tuple[int, int, int]) -> None:
        super().__init__("the access statements changed")
        self.mark = mark


class GrantEvidence:
    """Accepts a release only with a valid Grant (or break-glass) for the principal, from signatures.

    Invariant of its snapshot (module docstring, "Cost"): every decision uses statement
    data read after a full marker matching its snapshot was read, and the snapshot keeps
    only data a full marker read after it still matched; per batch, only the head is read.
    """

    def __init__(
        self,
        officers: OfficerKeys,
        officer_threshold: int | Callable[[], int],
        store: Store,
        *,
        shards: ShardLocator,
        caps: AccessCaps | None = None,
        cache: VerifyCache | None = None,
        officer_mldsa: OfficerPQKeys | None = None,
        break_glass: bool = True,
    ) -> None:
        threshold = officer_threshold() if callable(officer_threshold) else officer_threshold
        #: Whether break-glass may stand in for a Grant here (a threshold key server: no, by
        #: design; it refuses naming that, see docs/threshold.md).
        self.break_glass = break_glass
        self.officers = officers
        self.store = store
        self.cache = cache or VerifyCache()
        self.reader = DirectoryReader(store, officers, threshold, self.cache, mldsa=officer_mldsa)
        self.shards = shards
        self.caps = caps or AccessCaps()
        self._lock = threading.Lock()
        self.nonces = UsedNonces()
        #: Load evidence verified once for all the shards it names.
        self._verified = VerifiedEvidence()
        self._used: dict[str, int] = {}
        self._revoked: set[str] = set()
        self._engine: tuple[str, PolicyEngine] | None = None
        self._snap: _Snapshot | None = None
        #: The snapshot a release batch shares on this thread (see :meth:`batch`).
        self._batch = threading.local()
        #: Principal keys seen (raw bytes -> the key and its key id), bounded.
        self._keys: dict[bytes, tuple[Ed25519PublicKey, str]] = {}
        #: Shards described as resources, by the located shard (kept to pin its id), bounded.
        self._resources: dict[int, tuple[LocatedShard, Resource]] = {}
        #: Called with the statements' marker when it changed, before the table is read
        #: again (the runtime's restriction journal restores deleted rows there).
        self.on_change: Callable[[tuple[int, int, int]], bool] | None = None

    # -- state rebuilt from the audit log -----------------------------------------

    def remember(self, nonce: str, expires: float) -> None:
        """Mark a release nonce used until ``expires``."""
        self.nonces.remember(nonce, expires)

    def charged(self, budget_id: str, nbytes: int) -> None:
        """Count ``nbytes`` already released under ``budget_id``.

        A Grant's budget is identified by its request's digest (every Grant built
        from one request shares it); a break-glass statement's by its id.
        """
        with self._lock:
            self._used[budget_id] = self._used.get(budget_id, 0) + nbytes

    def used(self, budget_id: str) -> int:
        """Bytes released under ``budget_id`` (a request digest or break-glass id) here."""
        with self._lock:
            return self._used.get(budget_id, 0)

    def observe(self, budget_id: str, used: int) -> None:
        """Raise the hint for ``budget_id`` to ``used``: what the shared ledger said it holds."""
        with self._lock:
            if used > self._used.get(budget_id, 0):
                self._used[budget_id] = used

    def _reserve(self, budget_id: str, nbytes: int, budget: int, obj: str) -> None:
        """Charge ``nbytes`` to ``budget_id`` if it stays within ``budget`` (atomic)."""
        with self._lock:
            used = self._used.get(budget_id, 0)
            if used + nbytes > budget:  # the ledger's refusal, word for word
                raise GrantBudgetSpent(budget_id, used, budget, obj=obj)
            self._used[budget_id] = used + nbytes

    def _refund(self, budget_id: str, nbytes: int) -> None:
        with self._lock:
            self._used[budget_id] = max(0, self._used.get(budget_id, 0) - nbytes)

    def seed_from_audit(self, audit: AuditLog, now: float) -> None:
        """Rebuild used nonces and per-grant bytes from recent ``key.release`` allow entries."""
        horizon = now - MAX_GRANT_DURATION_S
        for ev in audit.recent(horizon):
            if ev.action != _RELEASE_ACTION or ev.decision != "allow" or ev.at <= horizon:
                continue
            nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
            if isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                self.remember(nonce, float(expires))
            # Entries written before budgets were per request carry only the grant id.
            gid = (ev.details.get("request_digest") or ev.details.get("grant_id")
                   or ev.details.get("break_glass"))
            if isinstance(gid, str) and ev.nbytes is not None:
                self.charged(gid, int(ev.nbytes))

    # -- the rule ---------------------------------------------------------------------

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Check everything from signatures; return audit details or raise AccessDenied.

        Also reserves ``request.nbytes`` of the byte budget in this process:
        use it when no shared ledger charges the budget.
        """
        return self._verify(request, now, reserve=True)

    def verify_unreserved(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Like :meth:`verify`, but the byte budget is only pre-checked, not reserved.

        For a gate whose egress ledger charges the budget with the release
        (``request_digest`` or ``break_glass`` in the details names it,
        ``grant_bytes`` or ``break_glass_bytes`` is its cap); the gate reports
        the outcome with :meth:`charged` or :meth:`observe`.
        """
        return self._verify(request, now, reserve=False)

    def _verify(self, request: ReleaseRequest, now: float, *, reserve: bool) -> Mapping[str, Any]:
        obj = request.obj
        try:
            action = action_for_purpose(request.purpose)
        except InvalidInput as exc:
            raise AccessDenied(exc.message, obj=obj, remedy=exc.remedy) from None
        public, kid = self._principal_key(request.principal_key, obj)
        release_env, grant_env, bg_env = self._split(request.evidence, obj)
        if bg_env and not self.break_glass:
            raise AccessDenied(NO_BREAK_GLASS, obj=obj, remedy=NO_BREAK_GLASS_REMEDY)
        nonce, expires = self._check_release(release_env, public, kid, request, now)
        described = self._described(self.shards.locate(request), obj)
        with self.batch():  # a release outside a gate's batch is a batch of one
            try:
                details, budget = self._decision(self._snapshot(), kid, request, action,
                                                 grant_env, bg_env, described, now,
                                                 reserve=reserve)
            except _Stale as stale:  # a row went missing before this read: decide afresh
                details, budget = self._decision(self._restart(stale.mark), kid, request,
                                                 action, grant_env, bg_env, described, now,
                                                 reserve=reserve)
        if not reserve:  # the ledger charges it; the candidates were pre-checked on the hint
            self._consume(nonce, expires, request, obj, now)
        else:
            budget_id = str(details.get("request_digest") or details["break_glass"])
            self._reserve(budget_id, request.nbytes, budget, obj)  # check and charge at once
            try:
                self._consume(nonce, expires, request, obj, now)
            except BaseException:
                self._refund(budget_id, request.nbytes)
                raise
        return {"evidence_key": kid, "nonce": nonce, "expires": expires, "action": action,
                **details}

    def _decision(self, snap: _Snapshot, kid: str, request: ReleaseRequest, action: str,
                  grant_env: str | None, bg_env: str | None, described: Resource, now: float,
                  *, reserve: bool) -> tuple[dict[str, Any], int]:
        decided = self._decided(snap, kid, request, action, grant_env, bg_env, described, now)
        if decided is not None:  # this snapshot and second already accepted the same question
            return decided
        return self._decide(snap, kid, request, action, grant_env, bg_env, described, now,
                            reserve=reserve)

    def _principal_key(self, raw: bytes, obj: str) -> tuple[Ed25519PublicKey, str]:
        """The principal's public key and its key id (a SHA-256), parsed once per key."""
        hit = self._keys.get(raw)
        if hit is not None:
            return hit
        try:
            public = ed25519.public_key(raw)  # verifies through libsodium: half OpenSSL's CPU
        except ValueError:
            raise AccessDenied("the principal's public key is malformed", obj=obj, remedy=_CLIENT_REMEDY) from None
        if len(self._keys) >= _KEY_MEMO_SIZE:
            self._keys.clear()  # bounded: parsed again on demand
        hit = self._keys[bytes(raw)] = (public, key_id(public))
        return hit

    @staticmethod
    def _decision_key(kid: str, request: ReleaseRequest, action: str, grant_env: str | None,
                      bg_env: str | None, described: Resource, now: float) -> tuple[Any, ...]:
        # int(now): Cedar sees whole seconds, and every expiry compared is a whole second.
        return ("decision", kid, request.principal, request.artifact, action, grant_env,
                bg_env, described, int(now))

    def _decided(self, snap: _Snapshot, kid: str, request: ReleaseRequest, action: str,
                 grant_env: str | None, bg_env: str | None, described: Resource,
                 now: float) -> tuple[dict[str, Any], int] | None:
        """A Grant decision this snapshot made in this second, if its budget hint still holds.

        Everything a Grant decision reads is either in the snapshot (statements:
        enrollments, labels, grants, revocations, denials, the policy; any change
        moves the marker and starts a new snapshot) or a function of the whole
        second (Cedar's ``now``, vetting and grant expiry). Only the byte-budget
        hint moves between releases: it is checked again here, and a spent one
        takes the full path (which picks another candidate or reports it).
        """
        hit: tuple[dict[str, Any], int] | None = self._get(
            snap, self._decision_key(kid, request, action, grant_env, bg_env, described, now))
        if hit is None or self.used(str(hit[0]["request_digest"])) + request.nbytes > hit[1]:
            return None
        return hit

    def _decide(self, snap: _Snapshot, kid: str, request: ReleaseRequest, action: str,
                grant_env: str | None, bg_env: str | None, described: Resource, now: float,
                *, reserve: bool) -> tuple[dict[str, Any], int]:
        """The full decision from the snapshot: the principal, then a Grant or break-glass."""
        obj = request.obj
        if grant_env:
            candidates = [grant_env]
        elif bg_env:
            candidates = []
        else:
            def grants() -> list[str]:
                self._reading(snap)
                return statements.envelopes(self.store, "grant", subject=kid,
                                            resource=base_name(request.artifact))

            candidates = self._memo(snap, ("grants", kid, base_name(request.artifact)), grants)
        approver_ids = {kid}
        for env in candidates:  # unverified hints of whom to load; memoised per snapshot
            approver_ids |= self._memo(snap, ("claimed", env),
                                       functools.partial(self._claimed_keys, env))
        directory, parts = self._view_memo(snap, approver_ids, (request.artifact,))
        who = directory.principal(kid)
        if who is None:
            raise AccessDenied(f"key {kid} of {request.principal} is not enrolled by the "
                               "security officers (or was revoked)", obj=obj,
                               remedy="ask k security officers to sign your enrollment")
        if request.principal != who.name:
            raise AccessDenied(f"the request says {request.principal} but key {kid} is enrolled "
                               f"as {who.name}", obj=obj,
                               remedy=f"use an identity named {who.name}")
        label = directory.label(request.artifact)
        resource = described.labelled(label)
        # A label saying `attested: <policy>` travels to the gate, which then releases the
        # key only into an enclave that policy admits (strongroom.attest).
        attested = {"attested": label.attested} if label is not None and label.attested else {}
        engine = self._policy(snap)
        if bg_env:
            details, budget = self._break_glass(bg_env, directory, engine, resource, action,
                                                request, now)
        else:
            try:
                details, budget = self._grant(snap, candidates, directory, parts, engine,
                                              resource, action, request, now, reserve=reserve)
            except AccessDenied as refused:
                if grant_env is not None:
                    raise
                details, budget = self._stored_break_glass(snap, kid, directory, engine,
                                                           resource, action, request, now,
                                                           refused)
                return {**details, **attested}, budget  # break-glass: decided afresh every time
        details = {**details, **attested}
        if "request_digest" in details and self.used(str(details["request_digest"])) \
                + request.nbytes <= budget:  # not a Grant the hint already found spent
            self._memo(snap, self._decision_key(kid, request, action, grant_env, bg_env,
                                                described, now), lambda: (details, budget))
        return details, budget

    def _split(self, evidence: str, obj: str) -> tuple[str, str | None, str | None]:
        try:
            data = dsse.loads(evidence)
        except ValueError:
            raise AccessDenied("the release evidence is not JSON", obj=obj, remedy=_CLIENT_REMEDY) from None
        if isinstance(data, dict) and "release" in data:
            release, grant, bg = data.get("release"), data.get("grant"), data.get("break_glass")
            if (not isinstance(release, str) or not (grant is None or isinstance(grant, str))
                    or not (bg is None or isinstance(bg, str))):
                raise AccessDenied("the release evidence is malformed", obj=obj, remedy=_CLIENT_REMEDY)
            return release, grant, bg
        return evidence, None, None

    def _check_release(self, env: str, public: Ed25519PublicKey, kid: str,
                       request: ReleaseRequest, now: float) -> tuple[str, int]:
        obj = request.obj
        nonce, expires = check_release_signature(env, public, kid, request, now,
                                                 self._verified)
        self.nonces.check(nonce, obj=obj)
        return nonce, expires

    def _consume(self, nonce: str, expires: int, request: ReleaseRequest, obj: str,
                 now: float) -> None:
        self.nonces.spend(nonce, expires, now, obj=obj)

    def _described(self, located: LocatedShard, obj: str) -> Resource:
        """:meth:`_resource` of ``located``, kept while the locator hands out that same object.

        The locator keeps each verified manifest's shards (immutable) until its cache is
        cleared; the description is a function of them alone, so a batch of releases of one
        shard (a whole-model load asks for each shard again) describes it once.
        """
        hit = self._resources.get(id(located))
        if hit is not None and hit[0] is located:
            return hit[1]
        described = self._resource(located, obj)
        if len(self._resources) >= _KEY_MEMO_SIZE:
            self._resources.clear()  # bounded: described again on demand
        self._resources[id(located)] = (located, described)
        return described

    @staticmethod
    def _resource(located: LocatedShard, obj: str) -> Resource:
        """The artifact as its verified signed manifest describes it."""
        try:
            return describe_resource(located.shard.artifact, located.kind,
                                     located.compartments, located.metadata)
        except (KeyError, TypeError, ValueError, InvalidInput):
            raise AccessDenied("the artifact's manifest is malformed", obj=obj,
                               remedy="restore the artifact from a verified backup and "
                               "report the tampering") from None

    # -- the cached snapshot of verified statements -------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Within it, this thread's releases share one snapshot of the verified statements.

        For a release batch (:meth:`strongroom.release.gate.ReleaseGate.release_many`):
        on entry, after the batch arrived, the statements' :func:`~strongroom.access.statements.head`
        (generation and highest id, through indexes) is read once; unchanged, the batch
        keeps the current snapshot, else the full marker is read and a snapshot taken for it.
        So a statement put (a revocation) or a row inserted before then refuses every
        request of the batch; one committed later, from the next batch on. A row deleted
        by SQL changes only the full marker's count: what the snapshot holds was read
        before the deletion and still has the row; the first read of statements in the
        batch reads the full marker first (:meth:`_reading`), and a changed one starts a
        new snapshot (after ``on_change`` restored the row) on which the request is decided
        again; its end reads it once more before what the batch read is kept in the
        snapshot. A release outside such a scope is a batch of one. Nested scopes are one.
        """
        b = self._batch
        if getattr(b, "open", False):
            yield
            return
        b.open, b.snap, b.checked, b.unconfirmed, b.pending = True, None, False, False, {}
        with contextlib.suppress(StorageError):  # then each request reads and refuses itself
            b.snap = self._current()
        try:
            yield
        finally:
            try:
                self._settle()
            finally:
                b.open, b.snap, b.checked, b.unconfirmed, b.pending = False, None, False, False, {}

    def _snapshot(self) -> _Snapshot:
        """This thread's batch's snapshot (taken now if the batch could not take it)."""
        b = self._batch
        snap: _Snapshot | None = getattr(b, "snap", None)
        if snap is None:
            snap = self._current()
            if getattr(b, "open", False):
                b.snap = snap
        return snap

    def _current(self) -> _Snapshot:
        """The snapshot for the table as it is now: the held one while the head is unchanged
        (one index read), else one for the full marker (one scan; rebuilt when it changed)."""
        held = self._snap
        if held is not None and statements.head(self.store) == held.head:
            return held
        return self._rebuild(statements.marker(self.store))

    def _rebuild(self, mark: tuple[int, int, int]) -> _Snapshot:
        """The snapshot for the full marker ``mark`` just read (``on_change`` first if new)."""
        stale = self._snap is None or self._snap.marker != mark
        if stale and self.on_change is not None and self.on_change(mark):
            mark = statements.marker(self.store)  # deleted restrictive rows were put back
        with self._lock:
            snap = self._snap
            if snap is None or snap.marker != mark:
                snap = self._snap = _Snapshot(mark)
        b = self._batch
        b.checked = True  # a full marker matching it was read: reads may follow
        return snap

    def _restart(self, mark: tuple[int, int, int]) -> _Snapshot:
        """This batch's snapshot after :meth:`_reading` found the full marker at ``mark``."""
        b = self._batch
        b.pending, b.unconfirmed = {}, False  # read under the old snapshot: never kept
        snap = b.snap = self._rebuild(mark)
        return snap

    def _reading(self, snap: _Snapshot) -> None:
        """Call before reading statements from the store for ``snap``.

        The invariant (see :func:`strongroom.access.statements.marker`): every decision
        uses statement data read after a full marker matching its snapshot was read. The
        batch's first read reads the full marker; a changed one means rows were deleted
        (or written) since ``snap`` was taken: :class:`_Stale` makes the request be decided
        again on a new snapshot. What is read stays this batch's (``pending``) until
        :meth:`_settle` has read a matching full marker after it.
        """
        b = self._batch
        if not b.checked:
            mark = statements.marker(self.store)
            if mark != snap.marker:
                raise _Stale(mark)
            b.checked = True
        b.unconfirmed = True

    def _settle(self) -> None:
        """At a batch's end: keep what it read in its snapshot if the full marker still
        matches (no row went missing before those reads), else drop it and the snapshot."""
        b = self._batch
        snap: _Snapshot | None = b.snap
        if not b.unconfirmed or snap is None:
            return
        try:
            mark = statements.marker(self.store)
        except StorageError:
            return  # not kept: read again, and checked, by a later batch
        if mark != snap.marker:
            with self._lock:
                if self._snap is snap:
                    self._snap = None  # the next batch reads the full marker (and on_change)
            return
        if len(snap.memo) + len(b.pending) > SNAPSHOT_MEMO_SIZE:
            snap.memo.clear()  # bounded: recomputed on demand, never served stale
        snap.memo.update(b.pending)

    def _get(self, snap: _Snapshot, key: tuple[Any, ...]) -> Any:
        """What ``snap`` (or this batch, reading for it) holds under ``key``; None if nothing."""
        hit = snap.memo.get(key)
        if hit is None:
            pending: dict[tuple[Any, ...], Any] | None = getattr(self._batch, "pending", None)
            if pending:
                hit = pending.get(key)
        return hit

    def _put(self, snap: _Snapshot, key: tuple[Any, ...], value: Any) -> None:
        """Keep ``value``: in ``snap`` if this batch read nothing yet, else until it settles."""
        b = self._batch
        if getattr(b, "unconfirmed", False):
            b.pending[key] = value
            return
        if len(snap.memo) > SNAPSHOT_MEMO_SIZE:
            snap.memo.clear()  # bounded: recomputed on demand, never served stale
        snap.memo[key] = value

    def _memo(self, snap: _Snapshot, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        hit = self._get(snap, key)
        if hit is None:
            hit = make()
            self._put(snap, key, hit)
        return hit

    def _view(self, snap: _Snapshot, key_ids: Iterable[str],
              resources: tuple[str, ...]) -> Directory:
        """The verified directory of these keys and resources, cached in the snapshot."""
        return self._view_memo(snap, key_ids, resources)[0]

    def _view_memo(self, snap: _Snapshot, key_ids: Iterable[str],
                   resources: tuple[str, ...]) -> tuple[Directory, PartsMemo]:
        """The cached directory view and the memo of grant parts verified against it."""
        ids = tuple(sorted(set(key_ids)))

        def load() -> tuple[Directory, PartsMemo]:
            self._reading(snap)
            return self.reader.view(key_ids=ids, resources=resources), {}

        return self._memo(snap, ("view", ids, resources), load)  # type: ignore[no-any-return]

    def _policy(self, snap: _Snapshot | None = None) -> PolicyEngine:
        snap = snap or self._snapshot()

        def load() -> PolicyEngine:
            self._reading(snap)
            text, _ = current_policy(self.reader)
            with self._lock:
                if self._engine is None or self._engine[0] != text:
                    self._engine = (text, PolicyEngine(text))
                return self._engine[1]

        return self._memo(snap, ("policy",), load)  # type: ignore[no-any-return]

    @staticmethod
    def _claimed_keys(env: str) -> frozenset[str]:
        """Key ids a grant claims (requester and approvers): what to load from the directory."""
        try:
            grant = statements.unverified_payload(env)
            keys = {str(statements.unverified_payload(a).get("approver_key", ""))
                    for a in grant.get("approvals", []) if isinstance(a, str)}
            keys.add(str(statements.unverified_payload(str(grant.get("request", "")))
                         .get("requester_key", "")))
            return frozenset(keys)
        except InvalidInput:
            return frozenset()

    def _grant(self, snap: _Snapshot, candidates: list[str], directory: Directory,
               parts: PartsMemo, engine: PolicyEngine, resource: Resource, action: str,
               request: ReleaseRequest, now: float, *,
               reserve: bool = True) -> tuple[dict[str, Any], int]:
        obj = request.obj
        if not candidates:
            raise ApprovalRequired(f"no grant for {request.principal} to {action} "
                                   f"{base_name(request.artifact)}", obj=obj,
                                   remedy="`strongroom access request` and collect approvals")
        reasons: list[str] = []
        spent: VerifiedGrant | None = None
        for env in candidates:
            try:
                g = verify_grant(env, directory, engine, resource, now=now, cache=self.cache,
                                 memo=parts)
                self._check_grant(snap, g, directory, resource, action, request, now)
            except _HintSpent as exc:
                spent = spent or exc.grant
                reasons.append(exc.message)
                continue
            except AccessDenied as exc:
                reasons.append(exc.message)
                continue
            return _grant_details(g), g.byte_budget
        if spent is not None and not reserve:
            # The hint only says which Grant to try first: the shared ledger is the authority,
            # and its refusal (GrantBudgetSpent) reports the bytes it actually holds.
            return _grant_details(spent), spent.byte_budget
        error = ApprovalRequired if all("approvals do not meet" in r for r in reasons) \
            else AccessDenied
        raise error(reasons[0] if len(reasons) == 1 else
                    f"none of {len(reasons)} grants holds: " + "; ".join(reasons[:3]), obj=obj,
                    remedy="request access again or ask an approver why")

    def _check_grant(self, snap: _Snapshot, g: VerifiedGrant, directory: Directory,
                     resource: Resource, action: str, request: ReleaseRequest,
                     now: float) -> None:
        obj = request.obj
        if g.request.action != action:
            raise AccessDenied(f"the grant is for {g.request.action}, not {action}", obj=obj,
                               remedy=f"request a Grant for {action} (`strongroom access request`)")
        if g.request.requester_key != key_id(
                Ed25519PublicKey.from_public_bytes(request.principal_key)):
            raise AccessDenied("the grant belongs to someone else", obj=obj,
                               remedy="a Grant serves only the principal who requested it: "
                               "request your own (`strongroom access request`)")
        if g.grant_id in self._revoked_among(snap, [g], directory):
            raise AccessDenied("the grant was revoked", obj=obj,
                               remedy="request a new Grant (`strongroom access request`); "
                               "`strongroom access grants` shows who revoked it")
        denied = self._denied_by(snap, g.request_digest)
        if denied:
            raise AccessDenied(f"the request was denied by {', '.join(denied)}: a veto is final",
                               obj=obj, remedy="make a new request; a denied one grants nothing")
        limit = self.caps.cap(action)
        if limit is not None:
            allowed = self._cap_holders(snap, resource, action, now)
            if g.request.requester not in allowed[:limit]:
                # A holder newer than the cached count: count again before refusing.
                allowed = self._cap_holders(snap, resource, action, now, fresh=True)
            if g.request.requester not in allowed[:limit]:
                raise AccessDenied(f"{base_name(resource.name)} already has {len(allowed)} "
                                   f"holders of {action} access (the cap is {limit})", obj=obj,
                                   remedy="revoke a grant that is no longer needed")
        # Checked last, to try the next candidate; charged atomically by verify (_reserve)
        # or, with a shared ledger, by the ledger in the release's audit transaction.
        used = self.used(g.request_digest)
        if used + request.nbytes > g.byte_budget:
            raise _HintSpent(g, f"the grant's byte budget is spent ({used} of "
                             f"{g.byte_budget} bytes used, {request.nbytes} more asked for)",
                             obj=obj, remedy="request access again with a larger budget")

    def _denied_by(self, snap: _Snapshot, request_digest: str) -> list[str]:
        """Who denied the request (verified denials; cached per snapshot)."""
        def load() -> list[str]:
            self._reading(snap)
            envs = statements.envelopes(self.store, "denial", subject=request_digest)
            if not envs:
                return []
            kids = {str(statements.unverified_payload(e).get("approver_key", "")) for e in envs}
            return standing_denials(self.store, request_digest, self._view(snap, kids, ()))

        return self._memo(snap, ("denied", request_digest), load)  # type: ignore[no-any-return]

    def _revoked_among(self, snap: _Snapshot, grants: list[VerifiedGrant],
                       directory: Directory) -> set[str]:
        """Ids of ``grants`` validly revoked (one query for those not yet known in ``snap``)."""
        out = {g.grant_id for g in grants if g.grant_id in self._revoked
               or self._get(snap, ("revoked", g.grant_id)) is True}
        todo = [g for g in grants if g.grant_id not in out
                and self._get(snap, ("revoked", g.grant_id)) is None]
        if not todo:
            return out
        self._reading(snap)
        envs = statements.envelopes(self.store, "grant-revocation",
                                    subjects=sorted({g.grant_id for g in todo}))
        by_grant: dict[str, list[str]] = {}
        kids = []
        for env in envs:
            try:
                claimed = statements.unverified_payload(env)
            except InvalidInput:
                continue
            by_grant.setdefault(str(claimed.get("grant", "")), []).append(env)
            kids.append(str(claimed.get("by_key", "")))
        revokers = directory
        if kids:  # the directory extended with whoever signed a revocation
            extra = self._view(snap, kids, ())
            revokers = Directory(dict(directory.principals), dict(directory.labels),
                                 set(directory.revoked_keys) | extra.revoked_keys)
            revokers.principals.update(extra.principals)
        officers = self.officers()
        for g in todo:
            found = by_grant.get(g.grant_id, [])
            revoked = bool(found) and grant_revoked(
                g, found, revokers, officers, self.cache,
                officer_mldsa=self.reader.mldsa()) is not None
            self._put(snap, ("revoked", g.grant_id), revoked)
            if revoked:
                with self._lock:
                    self._revoked.add(g.grant_id)
                out.add(g.grant_id)
        return out

    def _cap_holders(self, snap: _Snapshot, resource: Resource, action: str, now: float, *,
                     fresh: bool = False) -> list[str]:
        """Requesters holding valid, unrevoked grants for (resource, action), first stored first.

        Grants are ordered by their storage order (the table's id), which is
        fixed when the grant is stored: an earlier holder keeps its slot. The
        verified list is cached in the snapshot for :data:`CAPS_TTL_S` (vetting
        may lapse meanwhile); expiry is checked at ``now`` on every call.
        """
        key = ("holders", base_name(resource.name), action)
        hit: tuple[float, list[tuple[int, str]]] | None = self._get(snap, key)
        if fresh or hit is None or hit[0] <= time.monotonic():
            self._reading(snap)
            envs = statements.envelopes(self.store, "grant", resource=key[1],
                                        newest_first=False)
            ids: set[str] = set()
            for env in envs:
                ids |= self._claimed_keys(env)
            directory, parts = self._view_memo(snap, ids, (resource.name,))
            engine = self._policy(snap)
            valid: list[VerifiedGrant] = []
            for env in envs:
                try:
                    g = verify_grant(env, directory, engine, resource, now=now,
                                     cache=self.cache, memo=parts)
                except AccessDenied:
                    continue
                if g.request.action == action:
                    valid.append(g)
            revoked = self._revoked_among(snap, valid, directory)
            hit = (time.monotonic() + CAPS_TTL_S,
                   [(g.expires, g.request.requester) for g in valid
                    if g.grant_id not in revoked])
            self._put(snap, key, hit)
        order: list[str] = []
        for expires, requester in hit[1]:
            if now < expires and requester not in order:
                order.append(requester)
        return order

    def _stored_break_glass(self, snap: _Snapshot, kid: str, directory: Directory,
                            engine: PolicyEngine, resource: Resource, action: str,
                            request: ReleaseRequest, now: float,
                            refused: AccessDenied) -> tuple[dict[str, Any], int]:
        """A break-glass statement of the principal's in the store, else the grant refusal."""
        base = base_name(request.artifact)

        def stored() -> list[str]:
            self._reading(snap)
            return statements.envelopes(self.store, "break-glass", subject=kid, resource=base)

        envs = self._memo(snap, ("break-glass", kid, base), stored)
        if envs and not self.break_glass:  # taken at the vault: name why it does not count here
            raise AccessDenied(f"{refused.message}; break-glass {statements.payload_digest(envs[0])[:16]} "
                               f"does not stand in for it: {NO_BREAK_GLASS}", obj=refused.obj,
                               remedy=NO_BREAK_GLASS_REMEDY)
        for env in envs:
            try:
                return self._break_glass(env, directory, engine, resource, action, request, now)
            except AccessDenied:
                continue
        raise refused

    def _break_glass(self, env: str, directory: Directory, engine: PolicyEngine,
                     resource: Resource, action: str, request: ReleaseRequest,
                     now: float) -> tuple[dict[str, Any], int]:
        obj = request.obj
        try:
            claimed = statements.unverified_payload(env)
        except InvalidInput:
            raise AccessDenied("the break-glass statement is malformed", obj=obj, remedy=_CLIENT_REMEDY) from None
        if str(claimed.get("principal_key")) != key_id(
                Ed25519PublicKey.from_public_bytes(request.principal_key)):
            raise AccessDenied("the break-glass statement belongs to someone else", obj=obj,
                               remedy="break-glass serves only the officer who took it")
        bg: BreakGlass = verify_break_glass(env, directory, engine, resource, now=now,
                                            cache=self.cache)
        if bg.action != action:
            raise AccessDenied(f"the break-glass is for {bg.action}, not {action}", obj=obj,
                               remedy=f"take break-glass for {action}, or request a Grant")
        used = self.used(bg.id)
        if used + request.nbytes > bg.byte_budget:
            raise AccessDenied(f"the break-glass byte budget is spent ({used} of "
                               f"{bg.byte_budget} bytes used)", obj=obj,
                               remedy="request a Grant for further access; break-glass "
                               "budgets are not raised")
        return ({"break_glass": bg.id, "severity": "critical", "reason_given": bg.reason[:200],
                 "break_glass_expires": bg.expires, "break_glass_bytes": bg.byte_budget},
                bg.byte_budget)

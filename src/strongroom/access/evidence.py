"""GrantEvidence: the release gate's evidence rule once Grants exist (replaces ``OfficerEvidence``).

It implements :class:`strongroom.release.EvidenceVerifier`. For every key
release it re-derives the decision from signatures alone:

1. the principal's fresh release evidence (a DSSE statement by the principal's
   own key binding artifact, shard, blob, purpose, nonce and a short expiry:
   :func:`strongroom.release.sign_release_evidence`) verifies, is unexpired and
   was never used (so a stolen Grant alone releases nothing);
2. the shard's blob belongs to the artifact, checked in the artifact's manifest
   signed by the barrier's manifest key (so a grant for one artifact cannot
   unwrap another's blob); classification and compartments come from that
   manifest and the officer-signed label, the most restrictive winning;
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

    rule = GrantEvidence(keyring.officers, keyring.officer_threshold, store,
                         manifest_key=lambda: keyring.signing_key("manifest").public_key())
    rule.seed_from_audit(audit, time.time())
    gate = ReleaseGate(keyring, audit, evidence=rule)

Limits: used nonces and bytes charged per grant live in this process (rebuilt
from the audit log at start); two gates running at once on one database do
not share them. Bytes are charged when evidence is accepted, so a release
refused later (egress, audit) still counts against the grant's budget.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from strongroom.access import statements
from strongroom.access.approvals import MAX_GRANT_DURATION_S
from strongroom.access.breakglass import BreakGlass, verify_break_glass
from strongroom.access.caps import AccessCaps
from strongroom.access.directory import (
    DEFAULT_WEIGHTS_CLASSIFICATION,
    Directory,
    DirectoryReader,
    OfficerKeys,
    Resource,
    base_name,
    level,
)
from strongroom.access.grants import VerifiedGrant, grant_revoked, verify_grant
from strongroom.access.policy import PolicyEngine, action_for_purpose, current_policy
from strongroom.access.statements import VerifyCache
from strongroom.crypto.dsse import key_id, verify_statement
from strongroom.errors import AccessDenied, ApprovalRequired, IntegrityError, InvalidInput
from strongroom.store.db import Store
from strongroom.store.tables.vault import Artifact

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.release import ReleaseRequest

__all__ = [
    "DOCUMENT_CLASSIFICATION_KEY",
    "MANIFEST_PAYLOAD_TYPE",
    "GrantEvidence",
    "describe_resource",
    "make_evidence",
]

#: The vault's manifest payload type (``strongroom.vault.manifest``; access may not import vault).
MANIFEST_PAYLOAD_TYPE = "application/vnd.strongroom.manifest.v1+json"
#: Manifest metadata key holding a secret document's classification (documents only).
DOCUMENT_CLASSIFICATION_KEY = "strongroom.classification"
#: How long a computed caps count is reused, seconds.
CAPS_TTL_S = 10.0
_RELEASE_ACTION = "key.release"


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
    from strongroom.release import sign_release_evidence

    release = sign_release_evidence(key, artifact=artifact, shard=shard, blob_id=blob_id,
                                    purpose=purpose, ttl_s=ttl_s, now=now)
    out: dict[str, str] = {"release": release}
    if grant is not None:
        out["grant"] = grant
    if break_glass is not None:
        out["break_glass"] = break_glass
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class _Located:
    """The artifact as its signed manifest describes it."""

    resource: Resource
    files: frozenset[tuple[str, str]]


class GrantEvidence:
    """Accepts a release only with a valid Grant (or break-glass) for the principal, from signatures."""

    def __init__(
        self,
        officers: OfficerKeys,
        officer_threshold: int | Callable[[], int],
        store: Store,
        *,
        manifest_key: Callable[[], Ed25519PublicKey],
        caps: AccessCaps | None = None,
        cache: VerifyCache | None = None,
    ) -> None:
        threshold = officer_threshold() if callable(officer_threshold) else officer_threshold
        self.officers = officers
        self.store = store
        self.cache = cache or VerifyCache()
        self.reader = DirectoryReader(store, officers, threshold, self.cache)
        self.manifest_key = manifest_key
        self.caps = caps or AccessCaps()
        from strongroom.release import UsedNonces

        self._lock = threading.Lock()
        self.nonces = UsedNonces()
        self._used: dict[str, int] = {}
        self._revoked: set[str] = set()
        self._engine: tuple[str, PolicyEngine] | None = None
        self._manifests: dict[str, _Located] = {}
        self._holders: dict[tuple[str, str], tuple[float, list[str]]] = {}

    # -- state rebuilt from the audit log -----------------------------------------

    def remember(self, nonce: str, expires: float) -> None:
        """Mark a release nonce used until ``expires``."""
        self.nonces.remember(nonce, expires)

    def charged(self, grant_id: str, nbytes: int) -> None:
        """Count ``nbytes`` already released under ``grant_id`` (or a break-glass id)."""
        with self._lock:
            self._used[grant_id] = self._used.get(grant_id, 0) + nbytes

    def used(self, grant_id: str) -> int:
        """Bytes released under ``grant_id`` as far as this process knows."""
        with self._lock:
            return self._used.get(grant_id, 0)

    def seed_from_audit(self, audit: AuditLog, now: float) -> None:
        """Rebuild used nonces and per-grant bytes from recent ``key.release`` allow entries."""
        from datetime import datetime

        horizon = now - MAX_GRANT_DURATION_S
        end = audit.size()
        while end > 0:
            start = max(0, end - 2000)
            oldest = now
            for ev in reversed(audit.events(start, end)):
                t = datetime.fromisoformat(ev.time.replace("Z", "+00:00")).timestamp()
                oldest = min(oldest, t)
                if ev.action != _RELEASE_ACTION or ev.decision != "allow" or t <= horizon:
                    continue
                nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
                if isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                    self.remember(nonce, float(expires))
                gid = ev.details.get("grant_id") or ev.details.get("break_glass")
                if isinstance(gid, str) and ev.nbytes is not None:
                    self.charged(gid, int(ev.nbytes))
            if oldest <= horizon:
                break
            end = start

    # -- the rule ---------------------------------------------------------------------

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Check everything from signatures; return audit details or raise AccessDenied."""
        obj = request.obj
        try:
            action = action_for_purpose(request.purpose)
        except InvalidInput as exc:
            raise AccessDenied(exc.message, obj=obj, remedy=exc.remedy) from None
        try:
            public = Ed25519PublicKey.from_public_bytes(request.principal_key)
        except ValueError:
            raise AccessDenied("the principal's public key is malformed", obj=obj) from None
        kid = key_id(public)
        release_env, grant_env, bg_env = self._split(request.evidence, obj)
        nonce, expires = self._check_release(release_env, public, kid, request, now)
        located = self._locate(request)
        candidates = [grant_env] if grant_env else (
            [] if bg_env else statements.envelopes(self.store, "grant", subject=kid,
                                                   resource=base_name(request.artifact)))
        approver_ids = {kid}
        for env in candidates:
            approver_ids |= self._claimed_keys(env)
        directory = self.reader.view(key_ids=sorted(approver_ids), resources=[request.artifact])
        who = directory.principal(kid)
        if who is None:
            raise AccessDenied(f"key {kid} of {request.principal} is not enrolled by the "
                               "security officers (or was revoked)", obj=obj,
                               remedy="ask k security officers to sign your enrollment")
        if request.principal != who.name:
            raise AccessDenied(f"the request says {request.principal} but key {kid} is enrolled "
                               f"as {who.name}", obj=obj,
                               remedy=f"use an identity named {who.name}")
        resource = located.resource.labelled(directory.label(request.artifact))
        engine = self._policy()
        if bg_env:
            details = self._break_glass(bg_env, directory, engine, resource, action, request, now)
        else:
            try:
                details = self._grant(candidates, directory, engine, resource, action, request,
                                      now)
            except AccessDenied as refused:
                if grant_env is not None:
                    raise
                details = self._stored_break_glass(kid, directory, engine, resource, action,
                                                   request, now, refused)
        self._consume(nonce, expires, request, obj, now)
        self.charged(str(details.get("grant_id") or details["break_glass"]), request.nbytes)
        return {"evidence_key": kid, "nonce": nonce, "expires": expires, "action": action,
                **details}

    def _split(self, evidence: str, obj: str) -> tuple[str, str | None, str | None]:
        try:
            data = json.loads(evidence)
        except ValueError:
            raise AccessDenied("the release evidence is not JSON", obj=obj) from None
        if isinstance(data, dict) and "release" in data:
            release, grant, bg = data.get("release"), data.get("grant"), data.get("break_glass")
            if not isinstance(release, str) or not all(isinstance(x, str | None)
                                                       for x in (grant, bg)):
                raise AccessDenied("the release evidence is malformed", obj=obj)
            return release, grant, bg
        return evidence, None, None

    def _check_release(self, env: str, public: Ed25519PublicKey, kid: str,
                       request: ReleaseRequest, now: float) -> tuple[str, int]:
        from strongroom.release import check_release_signature

        obj = request.obj
        nonce, expires = check_release_signature(env, public, kid, request, now)
        self.nonces.check(nonce, obj=obj)
        return nonce, expires

    def _consume(self, nonce: str, expires: int, request: ReleaseRequest, obj: str,
                 now: float) -> None:
        self.nonces.spend(nonce, expires, now, obj=obj)

    def _locate(self, request: ReleaseRequest) -> _Located:
        """The artifact's signed manifest, which must list this shard with this blob."""
        obj = request.obj
        name, _, version = request.artifact.partition("@")
        if not version.isdigit():
            raise AccessDenied("the artifact must be named name@version", obj=obj)
        with self.store.session(readonly=True) as s:  # no write lock: releases run concurrently
            envelope = s.scalars(select(Artifact.manifest_json).where(
                Artifact.name == name, Artifact.version == int(version))).first()
        if envelope is None:
            raise AccessDenied("no such artifact", obj=obj)
        digest = hashlib.sha256(envelope.encode()).hexdigest()
        mkey = self.manifest_key()
        cache_key = f"{digest}:{mkey.public_bytes_raw().hex()}"
        located = self._manifests.get(cache_key)
        if located is None:
            located = self._parse_manifest(envelope, mkey, request)
            if len(self._manifests) > 10_000:
                self._manifests.clear()
            self._manifests[cache_key] = located
        if located.resource.name != request.artifact:
            raise AccessDenied("the manifest describes another artifact", obj=obj)
        if (request.shard, request.blob_id) not in located.files:
            raise AccessDenied("the blob is not this shard of this artifact in its signed "
                               "manifest", obj=obj, remedy="release keys only for the shards "
                               "of the artifact your grant names")
        return located

    def _parse_manifest(self, envelope: str, mkey: Ed25519PublicKey,
                        request: ReleaseRequest) -> _Located:
        obj = request.obj
        try:
            m = verify_statement(envelope, MANIFEST_PAYLOAD_TYPE, {key_id(mkey): mkey},
                                 obj=f"manifest of {request.artifact}")
            resource = describe_resource(f"{m['name']}@{int(m['version'])}", str(m["kind"]),
                                         m["compartments"], m["metadata"])
            files = frozenset((str(f["path"]), str(f["blob"])) for f in m["files"])
        except IntegrityError as exc:
            raise AccessDenied(f"the artifact's manifest does not verify: {exc.message}",
                               obj=obj) from None
        except (KeyError, TypeError, ValueError, InvalidInput):
            raise AccessDenied("the artifact's manifest is malformed", obj=obj) from None
        return _Located(resource, files)

    def _policy(self) -> PolicyEngine:
        text, _ = current_policy(self.reader)
        with self._lock:
            if self._engine is None or self._engine[0] != text:
                self._engine = (text, PolicyEngine(text))
            return self._engine[1]

    @staticmethod
    def _claimed_keys(env: str) -> set[str]:
        """Key ids a grant claims (requester and approvers): what to load from the directory."""
        try:
            grant = statements.unverified_payload(env)
            keys = {str(statements.unverified_payload(a).get("approver_key", ""))
                    for a in grant.get("approvals", []) if isinstance(a, str)}
            keys.add(str(statements.unverified_payload(str(grant.get("request", "")))
                         .get("requester_key", "")))
            return keys
        except InvalidInput:
            return set()

    def _grant(self, candidates: list[str], directory: Directory, engine: PolicyEngine,
               resource: Resource, action: str, request: ReleaseRequest,
               now: float) -> dict[str, Any]:
        obj = request.obj
        if not candidates:
            raise ApprovalRequired(f"no grant for {request.principal} to {action} "
                                   f"{base_name(request.artifact)}", obj=obj,
                                   remedy="`strongroom access request` and collect approvals")
        reasons: list[str] = []
        for env in candidates:
            try:
                g = verify_grant(env, directory, engine, resource, now=now, cache=self.cache)
                self._check_grant(g, directory, resource, action, request, now)
            except AccessDenied as exc:
                reasons.append(exc.message)
                continue
            return {"grant_id": g.grant_id, "approvers": list(g.approvers),
                    "grant_expires": g.expires, "grant_bytes": g.byte_budget}
        error = ApprovalRequired if all("approvals do not meet" in r for r in reasons) \
            else AccessDenied
        raise error(reasons[0] if len(reasons) == 1 else
                    f"none of {len(reasons)} grants holds: " + "; ".join(reasons[:3]), obj=obj,
                    remedy="request access again or ask an approver why")

    def _check_grant(self, g: VerifiedGrant, directory: Directory, resource: Resource,
                     action: str, request: ReleaseRequest, now: float) -> None:
        obj = request.obj
        if g.request.action != action:
            raise AccessDenied(f"the grant is for {g.request.action}, not {action}", obj=obj)
        if g.request.requester_key != key_id(
                Ed25519PublicKey.from_public_bytes(request.principal_key)):
            raise AccessDenied("the grant belongs to someone else", obj=obj)
        if g.grant_id in self._revoked or grant_revoked(
                g, statements.envelopes(self.store, "grant-revocation", subject=g.grant_id),
                self._revokers(g, directory), self.officers(), self.cache):
            with self._lock:
                self._revoked.add(g.grant_id)
            raise AccessDenied("the grant was revoked", obj=obj)
        if self.used(g.grant_id) + request.nbytes > g.byte_budget:
            raise AccessDenied(f"the grant's byte budget is spent ({self.used(g.grant_id)} of "
                               f"{g.byte_budget} bytes used)", obj=obj,
                               remedy="request access again with a larger budget")
        limit = self.caps.cap(action)
        if limit is not None:
            allowed = self._cap_holders(resource, action, now)
            if g.request.requester not in allowed[:limit]:
                # A holder newer than the cached count: count again before refusing.
                allowed = self._cap_holders(resource, action, now, fresh=True)
            if g.request.requester not in allowed[:limit]:
                raise AccessDenied(f"{base_name(resource.name)} already has {len(allowed)} "
                                   f"holders of {action} access (the cap is {limit})", obj=obj,
                                   remedy="revoke a grant that is no longer needed")

    def _revokers(self, g: VerifiedGrant, directory: Directory) -> Directory:
        """The directory extended with whoever signed a revocation of ``g``."""
        envs = statements.envelopes(self.store, "grant-revocation", subject=g.grant_id)
        if not envs:
            return directory
        kids = []
        for env in envs:
            try:
                kids.append(str(statements.unverified_payload(env).get("by_key", "")))
            except InvalidInput:
                continue
        extra = self.reader.view(key_ids=kids, resources=[])
        merged = Directory(dict(directory.principals), dict(directory.labels),
                           set(directory.revoked_keys) | extra.revoked_keys)
        merged.principals.update(extra.principals)
        return merged

    def _cap_holders(self, resource: Resource, action: str, now: float, *,
                     fresh: bool = False) -> list[str]:
        """Requesters holding valid grants for (resource, action), earliest grant first."""
        key = (base_name(resource.name), action)
        with self._lock:
            hit = self._holders.get(key)
            if not fresh and hit is not None and hit[0] > time.monotonic():
                return hit[1]
        envs = statements.envelopes(self.store, "grant", resource=key[0], newest_first=False)
        ids: set[str] = set()
        for env in envs:
            ids |= self._claimed_keys(env)
        directory = self.reader.view(key_ids=sorted(ids), resources=[resource.name])
        engine = self._policy()
        valid: list[VerifiedGrant] = []
        for env in envs:
            try:
                g = verify_grant(env, directory, engine, resource, now=now, cache=self.cache)
            except AccessDenied:
                continue
            if g.request.action == action and g.grant_id not in self._revoked:
                valid.append(g)
        order: list[str] = []
        for g in sorted(valid, key=lambda g: (g.issued, g.grant_id)):
            if g.request.requester not in order:
                order.append(g.request.requester)
        with self._lock:
            self._holders[key] = (time.monotonic() + CAPS_TTL_S, order)
        return order

    def _stored_break_glass(self, kid: str, directory: Directory, engine: PolicyEngine,
                            resource: Resource, action: str, request: ReleaseRequest,
                            now: float, refused: AccessDenied) -> dict[str, Any]:
        """A break-glass statement of the principal's in the store, else the grant refusal."""
        for env in statements.envelopes(self.store, "break-glass", subject=kid,
                                        resource=base_name(request.artifact)):
            try:
                return self._break_glass(env, directory, engine, resource, action, request, now)
            except AccessDenied:
                continue
        raise refused

    def _break_glass(self, env: str, directory: Directory, engine: PolicyEngine,
                     resource: Resource, action: str, request: ReleaseRequest,
                     now: float) -> dict[str, Any]:
        obj = request.obj
        try:
            claimed = statements.unverified_payload(env)
        except InvalidInput:
            raise AccessDenied("the break-glass statement is malformed", obj=obj) from None
        if str(claimed.get("principal_key")) != key_id(
                Ed25519PublicKey.from_public_bytes(request.principal_key)):
            raise AccessDenied("the break-glass statement belongs to someone else", obj=obj)
        bg: BreakGlass = verify_break_glass(env, directory, engine, resource, now=now,
                                            cache=self.cache)
        if bg.action != action:
            raise AccessDenied(f"the break-glass is for {bg.action}, not {action}", obj=obj)
        if self.used(bg.id) + request.nbytes > bg.byte_budget:
            raise AccessDenied("the break-glass byte budget is spent", obj=obj)
        return {"break_glass": bg.id, "severity": "critical", "reason_given": bg.reason[:200],
                "break_glass_expires": bg.expires}

"""A threshold key server: one of n independent hosts that each hold one share of the group key.

A key server is a strongroom data directory of its own — its own database,
keyring (its own custodians and unseal), officers, audit log with its
witnesses, egress ledger and state guard — running the **same release gate**
as ``strongroom serve`` (:class:`~strongroom.release.gate.ReleaseGate`, built
by :class:`~strongroom.runtime.services.LocalKeyService` at unseal). Only the
gate's last step differs: instead of unwrapping a file key under a KEK, it
computes the partial decryption ``Dᵢ = yᵢ·U`` with its share, which this
module returns with a Chaum–Pedersen DLEQ proof bound to the request's digest
(:mod:`strongroom.threshold.wrap`). The share is a barrier entry of its
keyring: unreadable while sealed, never on disk in the clear.

Before the gate runs, the server checks what it will decrypt: the request
carries the artifact's manifest, which must be signed by the vault manifest
key pinned at set-up, and the blob's age header, whose SHA-256 must be the one
that manifest pins for the shard; the ``U`` comes from that header only. The
bytes charged are the manifest's size for the shard.

Who may release: when the key server's officers pinned a set of **directory
officers** at set-up (``officers``, ``officer_threshold``), the deployment's
Grant rule itself (:class:`~strongroom.access.evidence.GrantEvidence`) over this
server's own store: enrollments, labels, policies and Grants verified against
those pinned officers, revocations and denials from this server's own table
(journaled in its own log, so its DBA cannot delete them), the Grant's byte
budget in its own ledger. The signed statements reach it through
``POST /v1/keyserver/statements`` (:meth:`KeyServer.receive`): anyone may send
them, since each one verifies at use; a Grant may also travel in the release
evidence. Without pinned officers, the documented *pinned-principals* mode:
principals pinned by its officers (:class:`PinnedPrincipals`), each request
freshly signed by the principal and single use (nonces rebuilt from this
server's own audit log at unseal); no Grant, approvals or Cedar.

Group-key rotation: a new ``dkg`` while this server holds a share keeps the old
share as a retired entry (``threshold/share/<group key id>``), and a partial
is made with the share of the group key named in the blob's stanza, so blobs
wrapped to the old group key still open while the vault rewraps them; the
officers' ``retire`` statement then stops this server using the old share.

Administration (set-up, key generation, re-sharing, retiring) takes statements signed
by one of the key server's officers (``keyserver-admin`` DSSE, fresh, single
use); every step is audited in its own log. Use it through
``strongroom keyserver serve`` (:func:`create_app`); the requester's side is
:mod:`strongroom.runtime.threshold_client`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

from strongroom.crypto import age
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.crypto.dsse import key_id, sign_statement
from strongroom.crypto.ed25519 import check_public_key, checked
from strongroom.errors import (
    AccessDenied,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NotFound,
    Sealed,
    StrongroomError,
    WeakPublicKey,
)
from strongroom.keys.config import KeysSettings
from strongroom.keys.officers import Officers
from strongroom.keys.threshold import (
    SHARE_ENTRY,
    STANZA_TYPE,
    find_wrapped,
    group_key_id,
    load_share,
    request_digest,
    share_entry,
)
from strongroom.release import (
    ReleaseGate,
    ReleaseRequest,
    UsedNonces,
    VerifiedEvidence,
    check_release_signature,
)
from strongroom.release.ports import LocatedShard
from strongroom.release.request import MAX_EVIDENCE_LIFETIME_S, PublicKeys
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store
from strongroom.threshold.group import Element, decode_scalar, encode_scalar
from strongroom.threshold.shares import (
    DealtShare,
    KeyShare,
    combine,
    combine_reshare,
    deal,
    reshare,
)
from strongroom.threshold.wrap import partial_decrypt
from strongroom.vault.manifest import FileEntry, Manifest

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.keys.keyring import Keyring
    from strongroom.release.ports import EvidenceVerifier, ShardLocator
    from strongroom.runtime.state_guard import StateGuard

__all__ = [
    "ADMIN_PAYLOAD_TYPE",
    "KeyServer",
    "PartialRequest",
    "PinnedPrincipals",
    "admin_statement",
]

ADMIN_PAYLOAD_TYPE = "application/vnd.strongroom.keyserver-admin+json"
_CONFIG_ENTRY = "threshold/config"
#: A key server's transport key for dealt shares: hybrid (new), or classical (sealed before).
TransportIdentity = HybridIdentity | age.X25519Identity
_TRANSPORT_ENTRY = "threshold/transport"
_PENDING_ENTRY = "threshold/pending"
ACTION = "keys.threshold_partial"


@dataclass(frozen=True)
class PartialRequest:
    """What a requester sends a key server: the release request, the signed manifest, the blob header."""

    request: ReleaseRequest
    manifest: str
    header: bytes

    def to_json(self) -> dict[str, Any]:
        """The HTTP body."""
        r = self.request
        return {"principal": r.principal, "principal_key": base64.b64encode(r.principal_key).decode(),
                "artifact": r.artifact, "shard": r.shard, "blob_id": r.blob_id, "nbytes": r.nbytes,
                "purpose": r.purpose, "evidence": r.evidence, "manifest": self.manifest,
                "header": base64.b64encode(self.header).decode()}

    @classmethod
    def from_json(cls, body: Any) -> PartialRequest:
        """Parse the HTTP body; InvalidInput naming the field when malformed."""
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object", obj="partial request")
        try:
            text = {k: body[k] for k in ("principal", "artifact", "shard", "blob_id", "purpose",
                                          "evidence", "manifest")}
            if not all(isinstance(v, str) for v in text.values()) or not isinstance(body["nbytes"], int):
                raise TypeError
            key = base64.b64decode(body["principal_key"], validate=True)
            header = base64.b64decode(body["header"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed partial request ({type(exc).__name__})", obj="partial request",
                               remedy="send principal, principal_key, artifact, shard, blob_id, nbytes, "
                               "purpose, evidence, manifest and header") from None
        request = ReleaseRequest(principal=text["principal"], principal_key=key, artifact=text["artifact"],
                                 shard=text["shard"], blob_id=text["blob_id"], nbytes=body["nbytes"],
                                 purpose=text["purpose"], evidence=text["evidence"])
        return cls(request, text["manifest"], header)


def admin_statement(officer: Ed25519PrivateKey, op: str, *, ttl_s: int = 300, **fields: Any) -> str:
    """A fresh, single-use ``keyserver-admin`` statement signed by one of the key server's officers."""
    statement = {"op": op, "nonce": secrets.token_hex(16), "expires": int(time.time()) + ttl_s, **fields}
    return sign_statement(statement, ADMIN_PAYLOAD_TYPE, officer)


class PinnedPrincipals:
    """The key server's evidence rule: a principal pinned by its officers, freshly signed, single use."""

    def __init__(self, principals: Mapping[str, Ed25519PublicKey]) -> None:
        self.principals = dict(principals)
        self._keys = PublicKeys()
        self.nonces = UsedNonces()
        #: Load evidence verified once for all the shards it names.
        self._verified = VerifiedEvidence()

    def seed_from_audit(self, audit: AuditLog, now: float) -> None:
        """Remember the nonces this server's own log shows spent and not yet expired."""
        for ev in audit.recent(now - MAX_EVIDENCE_LIFETIME_S):
            nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
            if ev.decision == "allow" and isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                self.nonces.remember(nonce, float(expires))

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Signature, pinning, binding, expiry, replay; AccessDenied naming what failed."""
        obj = request.obj
        try:
            public, kid = self._keys.load(request.principal_key)
        except (ValueError, TypeError):
            raise AccessDenied("the principal's public key is malformed", obj=obj) from None
        if kid not in self.principals:
            raise AccessDenied(f"principal {request.principal} (key {kid}) is not pinned on this key server",
                               obj=obj, remedy="ask this key server's officers to pin the principal "
                               "(`keyserver-admin` set-up); each key server decides for itself")
        nonce, expires = check_release_signature(request.evidence, public, kid, request, now,
                                                 self._verified)
        self.nonces.spend(nonce, expires, now, obj=obj)
        return {"evidence_key": kid, "nonce": nonce, "expires": expires}


@dataclass(frozen=True)
class _Located:
    version: int
    wrapped: Any
    share: KeyShare


class _ShareUnwrapper:
    """Stands where the gate's keyring stands; its ``unwrap`` is the partial decryption ``yᵢ·U``."""

    def __init__(self, keyring: Keyring, server: KeyServer) -> None:
        self._keyring = keyring
        self._server = server

    def require_unsealed(self) -> None:
        self._keyring.require_unsealed()

    def locate(self, blob_id: str, stanzas: Sequence[age.Stanza] = ()) -> _Located:
        prepared = getattr(self._server.prepared, "located", None)
        if prepared is not None and prepared[0] is stanzas:  # found by :meth:`KeyServer.partial` already
            located: _Located = prepared[1]
            return located
        share, epoch = self._server.share_for(stanzas)
        return _Located(epoch, find_wrapped(stanzas, share.public_key, obj=f"blob {blob_id}"), share)

    def unwrap(self, blob_id: str, located: _Located) -> bytearray:
        return bytearray(located.wrapped.u.mult(located.share.value).raw)


class _CarriedShards:
    """The gate's shard locator on a key server: shards of the manifests it verified for the
    requests in flight (carried with each request; there is no artifact table to read)."""

    def __init__(self) -> None:
        self._located: dict[tuple[str, str, str], LocatedShard] = {}
        self._lock = threading.Lock()

    def note(self, request: ReleaseRequest, manifest: Manifest, entry: FileEntry) -> None:
        located = LocatedShard(manifest.shard(entry), manifest.kind, tuple(manifest.compartments),
                               dict(manifest.metadata))
        with self._lock:
            if len(self._located) > 4096:
                self._located.clear()
            self._located[(request.artifact, request.shard, request.blob_id)] = located

    def locate(self, request: ReleaseRequest) -> LocatedShard:
        with self._lock:
            found = self._located.get((request.artifact, request.shard, request.blob_id))
        if found is None:
            raise AccessDenied("no verified manifest names this shard", obj=request.obj,
                               remedy="send the artifact's signed manifest with the request")
        return found

    def size(self, request: ReleaseRequest) -> int:
        return self.locate(request).shard.size


class KeyServer:
    """One key server's state: its key service (keyring, gate, audit), its sealed share and config."""

    def __init__(self, store: Store, settings: KeysSettings | None = None, *, actor: str = "keyserver") -> None:
        self._sizes = _CarriedShards()
        #: Per thread, the wrapped key :meth:`partial` found, which the gate's ``locate`` takes as it is.
        self.prepared = threading.local()
        self._rule: PinnedPrincipals | None = None
        self.svc = LocalKeyService(store, settings or KeysSettings(key_backend="shamir"), actor=actor,
                                   evidence_factory=self._evidence, sizes_factory=lambda _kr: self._sizes)
        self._gate: ReleaseGate | None = None
        self._lock = threading.RLock()
        #: Manifests verified, by (pinned manifest key, signed envelope).
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._share: tuple[KeyShare, int] | None = None
        self._retired: dict[str, tuple[KeyShare, int]] = {}
        self._used_admin: UsedNonces = UsedNonces()
        self._admin_seeded = False
        #: The sealed set-up, read once per unseal (re-read after each ``setup``).
        self._config: dict[str, Any] | None = None
        #: The unseal session the caches above belong to (its audit log object).
        self._session: object | None = None

    # -- wiring ------------------------------------------------------------------

    def _evidence(self, keyring: Keyring, store: Store, audit: AuditLog, shards: ShardLocator) -> PinnedPrincipals:
        config = self._config_or_none(keyring)
        rule = PinnedPrincipals(_principals(config))
        rule.seed_from_audit(audit, time.time())
        self._rule = rule
        return rule

    @staticmethod
    def _config_or_none(keyring: Keyring) -> dict[str, Any] | None:
        entry = keyring.sealed_entry(_CONFIG_ENTRY)
        return entry if isinstance(entry, dict) else None

    def gate(self) -> ReleaseGate:
        """The gate of ``strongroom serve`` with the partial decryption as its last step."""
        with self._lock:
            base = self.svc.gate
            if base is None:
                self.svc.keyring.require_unsealed()
                raise Sealed("the key server's gate is not built", obj="key server",
                             remedy="unseal it with its custodians' shares")
            if self._gate is None or self._gate.audit is not base.audit:
                config = self._config_or_none(self.svc.keyring)
                evidence = (self._grant_rule(config, base) if config is not None and config.get("officers")
                            else base.evidence)
                self._gate = ReleaseGate(
                    cast("Keyring", _ShareUnwrapper(self.svc.keyring, self)), base.audit,
                    evidence=evidence, egress=base.egress, sizes=self._sizes, canaries=base.canaries,
                    guard=base.guard, server=base.server, observer=base.observer)
            return self._gate

    def _grant_rule(self, config: Mapping[str, Any], base: ReleaseGate) -> EvidenceVerifier:
        """The deployment's Grant rule over this server's own store, its officers' pinned directory
        officers and the manifests carried with each request (wired as ``strongroom serve`` wires it)."""
        from strongroom.access.evidence import GrantEvidence

        pinned = _keys(config.get("officers", []))
        pq = _mldsa_keys(config.get("officers_mldsa", {}))  # hybrid directory officers: both
        rule = GrantEvidence(lambda: pinned, int(config["officer_threshold"]), self.svc.store,
                             shards=self._sizes, officer_mldsa=lambda: pq, break_glass=False)
        guard = cast("StateGuard | None", base.guard)
        if guard is not None:  # restore deleted revocations before the rule reads the table
            rule.on_change = guard.journal.changed
            if guard.egress is not None:
                guard.egress.remember_nonce = rule.remember
        rule.seed_from_audit(base.audit, time.time())
        return rule

    def _current(self) -> None:
        """Drop what was read from the barrier under an earlier unseal (a seal ends a session)."""
        audit = self.svc.audit
        if audit is None or audit is not self._session:
            self._share, self._config, self._gate, self._admin_seeded = None, None, None, False
            self._retired = {}
            self._session = audit
        self.svc.keyring.require_unsealed()

    def seal(self) -> None:
        """Seal the key service and forget the share and set-up held in memory."""
        with self._lock:
            self.svc.seal()
            self._current_or_sealed()

    def _current_or_sealed(self) -> None:
        with contextlib.suppress(Sealed):
            self._current()

    def share(self) -> tuple[KeyShare, int]:
        """This server's share and its epoch; Sealed when sealed, NotFound before key generation."""
        with self._lock:
            self._current()
            if self._share is None:
                entry = self.svc.keyring.sealed_entry(SHARE_ENTRY)
                if entry is None:
                    raise NotFound("this key server holds no share yet", obj="key server",
                                   remedy="run the key generation (`keyserver-admin` dkg) with the other servers")
                self._share = load_share(entry, obj="key server share")
            return self._share

    def share_for(self, stanzas: Sequence[age.Stanza]) -> tuple[KeyShare, int]:
        """The share of the group key a blob's stanza names: the current one, or a retired one kept
        since a rotation (until its ``retire``); the current one when no stanza names another."""
        share, epoch = self.share()
        kids = [s.args[0] for s in stanzas if s.type == STANZA_TYPE and s.args]
        if not kids or group_key_id(share.public_key) in kids:
            return share, epoch
        with self._lock:
            for kid in kids:
                if kid not in self._retired:
                    entry = self.svc.keyring.sealed_entry(f"{SHARE_ENTRY}/{kid}")
                    if entry is None:
                        continue
                    self._retired[kid] = load_share(entry, obj=f"retired share {kid}")
                return self._retired[kid]
        return share, epoch  # the caller's find_wrapped names the missing group key

    def config(self) -> dict[str, Any]:
        """The sealed set-up: index, pinned manifest key, pinned principals; ConfigError before set-up."""
        with self._lock:
            self._current()
            config = self._config
        if config is None:
            config = self._config = self._config_or_none(self.svc.keyring)
        if config is None:
            raise ConfigError("the key server is not set up", obj="key server",
                              remedy="its officers sign a `setup` statement (index, manifest key, principals)")
        return config

    # -- release -------------------------------------------------------------------

    def partial(self, body: PartialRequest) -> dict[str, object]:
        """Verify the manifest and header, run the gate, return the partial with its proof."""
        request = body.request
        config = self.config()
        manifest = self._manifest(body.manifest, config, obj=request.artifact)
        entry = manifest.file(request.shard)
        if manifest.ref != request.artifact or entry.blob != request.blob_id:
            raise AccessDenied("the signed manifest does not list this blob for this shard", obj=request.obj,
                               remedy="send the artifact's current signed manifest")
        header = age.parse_header(body.header)
        if header is None or hashlib.sha256(body.header[: header.size]).hexdigest() != entry.header_sha256:
            raise IntegrityError("the blob header is not the one the signed manifest pins", obj=request.obj,
                                 remedy="send the blob's own header; the blob may have been swapped")
        self._sizes.note(request, manifest, entry)
        request = ReleaseRequest(principal=request.principal, principal_key=request.principal_key,
                                 artifact=request.artifact, shard=request.shard, blob_id=request.blob_id,
                                 nbytes=request.nbytes, purpose=request.purpose, evidence=request.evidence,
                                 stanzas=header.stanzas)
        share, epoch = self.share_for(header.stanzas)
        wrapped = find_wrapped(header.stanzas, share.public_key, obj=request.obj)  # U checked here, once
        digest = request_digest(request, [wrapped.u])
        gate = self.gate()
        self.prepared.located = (request.stanzas, _Located(epoch, wrapped, share))
        try:
            raw = gate.release(request)
        finally:
            self.prepared.located = None
        try:
            # yᵢ·U computed here from a checked U: a group element, not bytes from outside.
            point = Element(bytes(raw))
        finally:
            raw[:] = bytes(len(raw))
        if point.is_identity:
            raise IntegrityError("the partial decryption is the identity", obj=request.obj,
                                 remedy="this key server's share is unusable; re-share to it")
        return partial_decrypt(share, digest, [wrapped.u], points=[point]).encode()

    # -- the directory of signed statements (the Grant rule's input) -------------------

    def receive(self, items: Sequence[Any], *, skip_refused: bool = False) -> dict[str, Any]:
        """Store signed access statements in this server's own table; audited in its own log.

        Each must be signed by a directory officer this server's officers pinned, or by a
        person those officers enrolled (:mod:`strongroom.runtime.keyserver_intake`), checked
        before anything is written: a refused one fails the batch (AccessDenied naming it),
        or with ``skip_refused`` is left out and reported. One already held with the same
        signatures is not written again. The lookup keys are derived here from each
        statement's payload, never taken from the sender, so a revocation cannot be filed
        where the rule does not look. Restrictive kinds (revocations, denials, Grant
        revocations) are journaled in this server's log by its state guard before the next
        release, so this server's DBA cannot delete them.
        """
        from strongroom.access.statements import payload_digest
        from strongroom.runtime.keyserver_intake import admit, lacking

        config = self.config()
        audit = self.svc.audit
        if audit is None:
            raise Sealed("the key server's audit log is not open", obj="key server",
                         remedy="unseal it with its custodians' shares")
        if not config.get("officers"):
            raise ConfigError("this key server runs the pinned-principals mode: it reads no access "
                              "statements", obj="statements",
                              remedy="its officers pin the vault's directory officers at `setup` "
                              "(`officers`, `officer_threshold`) to run the Grant rule")
        if len(items) > _MAX_STATEMENTS:
            raise InvalidInput(f"{len(items)} statements in one request", obj="statements",
                               remedy=f"send at most {_MAX_STATEMENTS} at a time")
        store = self.svc.store
        parsed = [_statement(item, n) for n, item in enumerate(items)]
        verdicts, parsed = admit(store, _keys(config["officers"]),
                                 _mldsa_keys(config.get("officers_mldsa", {})),
                                 int(config["officer_threshold"]), parsed)
        writers = [(kind, _writer(store, kind, env)) for kind, env in parsed]  # all checked first
        refused = [{"statement": n, "kind": kind, "digest": payload_digest(env), "reason": v[0]}
                   for n, ((kind, env), v) in enumerate(zip(parsed, verdicts, strict=True)) if v is not None]
        if refused and not skip_refused:
            first = refused[0]
            remedy = next(v[1] for v in verdicts if v is not None)
            raise AccessDenied(f"statement {first['statement']} ({first['kind']} {str(first['digest'])[:16]}) is "
                               f"{first['reason']}; nothing was stored", obj=f"statement {first['statement']}",
                               remedy=remedy)
        fresh = lacking(store, parsed)
        stored: dict[str, list[str]] = {}
        for (kind, write), verdict, new in zip(writers, verdicts, fresh, strict=True):
            if verdict is None and new:
                stored.setdefault(kind, []).append(write())
        result: dict[str, Any] = {"stored": {k: len(v) for k, v in sorted(stored.items())},
                                  "held": sum(1 for v, new in zip(verdicts, fresh, strict=True)
                                              if v is None and not new),
                                  "refused": refused}
        if stored:  # nothing new, nothing written: a resend or a replay does not grow the log
            audit.append(actor="keyserver", action="keys.threshold_statements", obj="key server",
                         decision="allow", reason="signed access statements received",
                         details={"stored": result["stored"], "refused": len(refused),
                                  "digests": {k: sorted(v) for k, v in stored.items()}})
        return result

    def held(self) -> dict[str, list[str]]:
        """The access statements this server holds, by digest (officer statements with their
        signers' key ids): what ``strongroom keyserver sync`` compares to send only the rest."""
        from strongroom.runtime.keyserver_intake import inventory

        self.config()
        return inventory(self.svc.store, STATEMENT_KINDS)

    def _manifest(self, envelope: str, config: Mapping[str, Any], *, obj: str) -> Manifest:
        # Cached by the pinned key and the exact signed bytes: a `setup` that pins another
        # manifest key never finds a manifest verified under the old one.
        pinned = str(config["manifest_key"])
        cached = self._manifests.get((pinned, envelope))
        if cached is not None:
            return cached
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pinned))
        manifest = Manifest.verify(envelope, key, obj=obj)
        with self._lock:
            if len(self._manifests) > 4096:
                self._manifests.clear()
            self._manifests[(pinned, envelope)] = manifest
        return manifest

    # -- administration (officer-signed) ---------------------------------------------

    def admin(self, envelope: str) -> dict[str, Any]:
        """Run one officer-signed administration statement; audited; returns its public result."""
        keyring = self.svc.keyring
        officers = keyring.officers()
        st = Officers(officers, keyring.officer_mldsa()).verify(
            envelope, ADMIN_PAYLOAD_TYPE, obj="keyserver-admin statement")
        now = time.time()
        expires, nonce = st.get("expires"), st.get("nonce")
        if not isinstance(expires, int) or not isinstance(nonce, str) or len(nonce) < 16 \
                or not now < expires <= now + MAX_EVIDENCE_LIFETIME_S:
            raise AccessDenied("the administration statement is expired or lacks a nonce",
                               obj="keyserver-admin statement", remedy="sign a fresh one")
        with self._lock:
            self._current()
            audit = self.svc.audit
            if audit is None:
                raise Sealed("the key server's audit log is not open", obj="key server",
                             remedy="unseal it with its custodians' shares")
            if not self._admin_seeded:  # statements spent before a restart stay spent
                for ev in audit.recent(now - MAX_EVIDENCE_LIFETIME_S):
                    n, e = ev.details.get("admin_nonce"), ev.details.get("admin_expires")
                    if ev.action.startswith("keys.threshold_") and isinstance(n, str) and isinstance(e, int):
                        self._used_admin.remember(n, float(e))
                self._admin_seeded = True
            self._used_admin.spend(nonce, expires, now, obj="keyserver-admin statement")
            op = st.get("op")
            handler = {"setup": self._setup, "deal": self._deal, "accept": self._accept,
                       "retire": self._retire}.get(str(op))
            if handler is None:
                raise InvalidInput(f"unknown operation {op!r}", obj="keyserver-admin statement",
                                   remedy="use setup, deal, accept or retire")
            result = handler(st)
            audit.append(actor=f"officer:{_signer(envelope, officers)}", action=f"keys.threshold_{op}",
                         obj="key server", decision="allow", reason=str(op),
                         details={"admin_nonce": nonce, "admin_expires": expires,
                                  **{k: v for k, v in result.items() if k != "pieces"}})
            return result

    def _setup(self, st: Mapping[str, Any]) -> dict[str, Any]:
        obj = "keyserver-admin setup"
        try:
            index = int(st["index"])
            _key(st["manifest_key"])
            principals = {key_id(_key(p)): p for p in st.get("principals", [])}
            officers = _keys(list(st.get("officers", [])))
            officers_mldsa = _mldsa_keys(dict(st.get("officers_mldsa") or {}))
            officer_threshold = int(st.get("officer_threshold", 0))
        except WeakPublicKey as exc:
            raise WeakPublicKey(exc.message, obj=obj) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput("setup needs index, manifest_key, and officers with officer_threshold (the Grant "
                               "rule) or principals (base64 Ed25519 keys)", obj=obj) from exc
        if not 1 <= index <= 255:
            raise InvalidInput(f"index {index} is outside 1..255", obj=obj)
        if not set(officers_mldsa) <= set(officers):
            raise InvalidInput("officers_mldsa names a key id that is not among the officers", obj=obj,
                               remedy="key each ML-DSA-65 key by its officer's Ed25519 key id")
        if officers and not 1 <= officer_threshold <= len(officers):
            raise InvalidInput(f"officer_threshold {officer_threshold} is outside 1..{len(officers)}", obj=obj,
                               remedy="give how many of the pinned directory officers must sign a statement")
        config: dict[str, Any] = {"index": index, "manifest_key": st["manifest_key"],
                                  "principals": sorted(principals.values())}
        if officers:
            config |= {"officers": sorted(st["officers"]), "officer_threshold": officer_threshold}
            if officers_mldsa:
                config["officers_mldsa"] = dict(st["officers_mldsa"])
        keyring = self.svc.keyring
        keyring.seal_entry(_CONFIG_ENTRY, config)
        self._config = None
        self._gate = None  # the next release builds the gate with the rule this set-up chose
        if self._rule is not None:
            self._rule.principals = _principals(self.config())
        mode = "grant" if officers else "pinned-principals"
        return {"index": index, "principals": sorted(principals), "mode": mode,
                "officers": sorted(officers), "officer_threshold": officer_threshold if officers else None}

    def transport(self) -> TransportIdentity:
        """This server's key-generation transport identity (sealed in its barrier; made on first use).

        A hybrid ML-KEM-768 + X25519 key: shares dealt between key servers cross the
        network, and a recording of a dealing must stay closed to a future quantum
        computer. A classical identity sealed by an older version keeps working.
        """
        keyring = self.svc.keyring
        entry = keyring.sealed_entry(_TRANSPORT_ENTRY)
        if isinstance(entry, dict) and isinstance(entry.get("identity"), str):
            text = entry["identity"]
            return (HybridIdentity.parse(text) if text.startswith("AGE-SECRET-KEY-PQ-")
                    else age.X25519Identity.parse(text))
        identity = HybridIdentity.generate()
        keyring.seal_entry(_TRANSPORT_ENTRY, {"identity": str(identity)})
        return identity

    def _deal(self, st: Mapping[str, Any]) -> dict[str, Any]:
        """Deal a fresh secret (``mode: dkg``) or this server's share (``mode: reshare``) to recipients."""
        try:
            threshold = int(st["threshold"])
            recipients = {int(i): age.parse_recipient(r) for i, r in st["recipients"].items()}
            mode = st["mode"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput("deal needs mode, threshold and recipients {index: age recipient}",
                               obj="keyserver-admin deal") from exc
        me = int(self.config()["index"])
        if mode == "dkg":
            from strongroom.threshold.group import random_scalar

            dealing = deal(random_scalar(), threshold=threshold, indices=sorted(recipients), dealer=me)
        elif mode == "reshare":
            dealing = reshare(self.share()[0], threshold=threshold, indices=sorted(recipients))
        else:
            raise InvalidInput(f"unknown mode {mode!r}", obj="keyserver-admin deal", remedy="use dkg or reshare")
        pieces = {}
        for index, recipient in recipients.items():
            plain = json.dumps({"dealer": me, "index": index,
                                "value": base64.b64encode(encode_scalar(dealing.values[index])).decode()})
            pieces[str(index)] = base64.b64encode(_seal_to(recipient, plain.encode())).decode()
        return {"dealer": me, "mode": mode, "commitments": [c.hex() for c in dealing.commitments],
                "pieces": pieces}

    def _accept(self, st: Mapping[str, Any]) -> dict[str, Any]:
        """Verify and combine the dealings addressed to this server; seal the new share."""
        me = int(self.config()["index"])
        identity = self.transport()
        try:
            mode = st["mode"]
            dealings = list(st["dealings"])
            epoch = int(st.get("epoch", 1))
            old = [Element.decode(bytes.fromhex(c)) for c in st.get("old_commitments", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput("accept needs mode and dealings", obj="keyserver-admin accept") from exc
        pieces = [self._piece(d, me, identity) for d in dealings]
        share = combine(pieces) if mode == "dkg" else combine_reshare(pieces, old)
        retired = None
        with contextlib.suppress(NotFound):
            current, current_epoch = self.share()
            if current.public_key != share.public_key:  # a new group key: keep the old for the rewrap
                retired = group_key_id(current.public_key)
                self.svc.keyring.seal_entry(f"{SHARE_ENTRY}/{retired}",
                                            share_entry(current, epoch=current_epoch))
        self.svc.keyring.seal_entry(SHARE_ENTRY, share_entry(share, epoch=epoch))
        self._share = (share, epoch)
        self._gate = None
        return {"index": me, "epoch": epoch, "public_share": share.public_share(me).hex(),
                "commitments": [c.hex() for c in share.commitments], "retired": retired}

    def _retire(self, st: Mapping[str, Any]) -> dict[str, Any]:
        """Stop using the retired share of a rotated-away group key (after the vault rewrapped)."""
        kid = st.get("group_key_id")
        share, _ = self.share()
        if not isinstance(kid, str) or kid == group_key_id(share.public_key):
            raise InvalidInput("retire names a group key id other than the current one",
                               obj="keyserver-admin retire", remedy="send {\"group_key_id\": <16 hex>}")
        name = f"{SHARE_ENTRY}/{kid}"
        if self.svc.keyring.sealed_entry(name) is None:
            raise NotFound(f"no retired share of group key {kid}", obj="keyserver-admin retire")
        self.svc.keyring.seal_entry(name, None)
        self._retired.pop(kid, None)
        return {"retired": kid}

    @staticmethod
    def _piece(d: Any, me: int, identity: TransportIdentity) -> DealtShare:
        """Open and check the piece of one dealing addressed to this server (index ``me``)."""
        what = f"dealing of {d.get('dealer') if isinstance(d, dict) else '?'}"
        try:
            commitments = tuple(Element.decode(bytes.fromhex(c), what=what) for c in d["commitments"])
            sealed = base64.b64decode(d["pieces"][str(me)], validate=True)
            plain = json.loads(_open_with(identity, sealed, obj=what))
            dealer = int(d["dealer"])
            if plain["index"] != me or plain["dealer"] != dealer:
                raise IntegrityError("a piece addressed to another server or from another dealer", obj=what,
                                     remedy="refuse this dealing")
            value = decode_scalar(base64.b64decode(plain["value"], validate=True), what=what)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed dealing ({type(exc).__name__})", obj=what,
                               remedy="pass the dealings exactly as `deal` returned them") from None
        return DealtShare(dealer, me, value, commitments)

    def status(self) -> dict[str, Any]:
        """Public status: sealed, index, epoch, public share and commitments (never the share)."""
        st = self.svc.status()
        out: dict[str, Any] = {"sealed": st.sealed, "keyring": st.to_dict()}
        if st.sealed:
            return out
        config = self._config_or_none(self.svc.keyring)
        if config is not None:
            out["index"] = config["index"]
            out["transport"] = str(self.transport().recipient)
        try:
            share, epoch = self.share()
        except NotFound:
            return out
        out |= {"epoch": epoch, "commitments": [c.hex() for c in share.commitments],
                "public_share": share.public_share(share.index).hex()}
        return out


def _principals(config: Mapping[str, Any] | None) -> dict[str, Ed25519PublicKey]:
    return {} if config is None else _keys(config.get("principals", []))


def _mldsa_keys(encoded: Mapping[str, str]) -> dict[str, MLDSA65PublicKey]:
    """Base64 ML-DSA-65 public keys by their officer's Ed25519 key id (ValueError if malformed)."""
    return {str(kid): MLDSA65PublicKey.from_public_bytes(base64.b64decode(v, validate=True))
            for kid, v in encoded.items()}


def _keys(encoded: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    """Base64 Ed25519 public keys by DSSE key id (raises ValueError on a malformed one)."""
    keys = [_key(p) for p in encoded]
    return {key_id(k): k for k in keys}


def _key(encoded: str) -> Ed25519PublicKey:
    """The base64 Ed25519 public key ``encoded``: ValueError on a malformed one, and
    :class:`WeakPublicKey` on one no key generation makes (small-order, non-canonical)."""
    return checked(Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True)))


#: Statement kinds a key server's Grant rule reads. Break-glass is stored only to name it when
#: refusing: key servers do not honour it (``GrantEvidence(break_glass=False)``).
STATEMENT_KINDS = ("enrollment", "revocation", "label", "policy", "request", "approval", "denial",
                   "grant", "grant-revocation", "break-glass")
_MAX_STATEMENTS = 2000


def _statement(item: Any, n: int) -> tuple[str, str]:
    """One ``{"kind", "envelope"}`` item, checked to be a DSSE statement of an accepted kind."""
    from strongroom.access import statements

    obj = f"statement {n}"
    kind = item.get("kind") if isinstance(item, dict) else None
    env = item.get("envelope") if isinstance(item, dict) else None
    if kind not in STATEMENT_KINDS or not isinstance(env, str):
        raise InvalidInput(f"statement {n} is not {{\"kind\", \"envelope\"}} of an accepted kind", obj=obj,
                           remedy=f"send kinds among {', '.join(STATEMENT_KINDS)} with their DSSE envelopes")
    try:
        statements.unverified_payload(env)
    except (InvalidInput, ValueError, TypeError):
        raise InvalidInput(f"statement {n} is not a DSSE envelope", obj=obj,
                           remedy="send the envelope exactly as it was signed") from None
    return str(kind), env


def _writer(store: Store, kind: str, env: str) -> Callable[[], str]:
    """What stores ``env`` under the lookup keys the vault's own writers use (from its payload);
    InvalidInput before anything is written when a field they need is missing."""
    from strongroom.access import statements
    from strongroom.access.approvals import AccessRequest, submit_request
    from strongroom.access.directory import base_name, publish

    st = statements.unverified_payload(env)
    try:
        if kind == "enrollment":
            check_public_key(bytes.fromhex(str(st["key"])), obj=f"enrollment of {st.get('name', '?')}")
        if kind in ("enrollment", "revocation", "label"):
            return lambda: publish(store, kind, env)
        if kind == "policy":
            return lambda: statements.put(store, kind, env, subject="policy")
        if kind == "request":
            AccessRequest.from_statement(st)
            return lambda: submit_request(store, env)
        if kind in ("approval", "denial"):
            subject, expires = str(st["request"]), int(st["expires"])
            return lambda: statements.put(store, kind, env, subject=subject, expires=expires)
        if kind == "grant":
            req = AccessRequest.from_statement(statements.unverified_payload(str(st["request"])))
            resource, expires = base_name(req.resource), int(st["expires"])
            return lambda: statements.put(store, kind, env, subject=req.requester_key, resource=resource,
                                          expires=expires)
        if kind == "break-glass":
            from strongroom.access.breakglass import submit_break_glass

            if not (isinstance(st.get("principal_key"), str) and isinstance(st.get("resource"), str)) \
                    or int(st["expires"]) <= 0:
                raise ValueError("break-glass without its taker, resource or expiry")
            return lambda: submit_break_glass(store, env)
        grant = str(st["grant"])  # grant-revocation
        return lambda: statements.put(store, kind, env, subject=grant)
    except WeakPublicKey:
        raise
    except (KeyError, TypeError, ValueError, IntegrityError) as exc:
        raise InvalidInput(f"a {kind} statement lacks its fields ({type(exc).__name__})", obj=kind,
                           remedy="send the statement exactly as it was signed") from None


def _signer(envelope: str, officers: Mapping[str, Ed25519PublicKey]) -> str:
    try:
        sigs = json.loads(envelope).get("signatures", [])
        return next((str(s.get("keyid")) for s in sigs if s.get("keyid") in officers), "?")
    except (ValueError, AttributeError):
        return "?"


def _seal_to(recipient: age.Recipient, plain: bytes) -> bytes:
    return age.encrypt(plain, [recipient])


def _open_with(identity: TransportIdentity, sealed: bytes, *, obj: str) -> bytes:
    try:
        return age.decrypt(sealed, [identity])
    except StrongroomError as exc:
        raise IntegrityError("a dealt piece does not open with this server's transport key", obj=obj,
                             remedy="the dealer used another recipient; deal again") from exc

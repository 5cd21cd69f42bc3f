"""The release request: what a caller asks the gate for, and the signed evidence it carries.

This is the vocabulary shared by everything that builds or checks a release
(the vault, the access rules, the key services, the server), so it depends on
nothing above :mod:`strongroom.crypto` and :mod:`strongroom.errors`; the gate
itself is :mod:`strongroom.release.gate`.

A principal signs fresh evidence for exactly one shard and purpose, and the
request carries it. Build it with :func:`build_request` (the vault and the
server's release route both do), from the :class:`Shard` a signed manifest lists::

    shard = Shard(artifact="minilm@1", path="model.safetensors", blob_id=blob_id, size=size)
    evidence = sign_release_evidence(key, artifact=shard.artifact, shard=shard.path,
                                     blob_id=shard.blob_id, purpose="load")
    request = build_request(shard, principal="alice", principal_key=pub_raw,
                            purpose="load", evidence=evidence, stanzas=header.stanzas)

An evidence rule checks it with :func:`check_release_signature` and spends its
nonce in a :class:`UsedNonces`; evidence is single use and valid for at most
:data:`MAX_EVIDENCE_LIFETIME_S` seconds.

**Load evidence** covers a whole load: one signature over the artifact, the
purpose and a list of (shard, blob id) pairs (:func:`sign_load_evidence`, payload
type :data:`LOAD_EVIDENCE_PAYLOAD_TYPE`). Each request still names one shard, and
the gate still decides, charges and audits each; the evidence releases each shard
it names at most once: its replay key (the nonce spent and recorded) is
``<signer key id>/<nonce>/<position>``, distinct per shard and per signer, and
never a plain evidence nonce (those may not contain ``/``). Pass a
:class:`VerifiedEvidence` to :func:`check_release_signature` so its signature is
verified once for all the shards, not once each::

    evidence = sign_load_evidence(key, artifact="llama@3", purpose="load",
                                  shards=[(s.path, s.blob_id) for s in shards])
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto.age import Stanza
from strongroom.crypto.dsse import key_id, loads, sign_statement, verify_statement
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput

__all__ = [
    "EVIDENCE_PAYLOAD_TYPE",
    "LOAD_EVIDENCE_PAYLOAD_TYPE",
    "MAX_EVIDENCE_LIFETIME_S",
    "MAX_LOAD_SHARDS",
    "PublicKeys",
    "ReleaseRequest",
    "Shard",
    "UsedNonces",
    "VerifiedEvidence",
    "build_request",
    "check_release_signature",
    "sign_load_evidence",
    "sign_release_evidence",
]

EVIDENCE_PAYLOAD_TYPE = "application/vnd.strongroom.release-evidence+json"
LOAD_EVIDENCE_PAYLOAD_TYPE = "application/vnd.strongroom.load-evidence+json"
#: Longest validity an evidence statement may claim (``expires - now``), seconds.
MAX_EVIDENCE_LIFETIME_S = 3600
#: Most shards one load evidence may name.
MAX_LOAD_SHARDS = 4096
#: Nonce length bounds: the replay key built from one must fit the ledger's charge id (100).
MIN_NONCE, MAX_NONCE = 16, 64


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


@dataclass(frozen=True)
class Shard:
    """One shard as its artifact's signed manifest lists it: artifact, path, blob, plaintext size."""

    artifact: str
    path: str
    blob_id: str
    size: int

    @property
    def obj(self) -> str:
        """How the audit log names the shard: ``<artifact>/<path>``."""
        return f"{self.artifact}/{self.path}"


def build_request(
    shard: Shard,
    *,
    principal: str,
    principal_key: bytes,
    purpose: str,
    evidence: str,
    stanzas: Sequence[Stanza] = (),
    host: str | None = None,
) -> ReleaseRequest:
    """The release request for ``shard`` by ``principal`` (its size is a hint the gate re-derives)."""
    return ReleaseRequest(principal=principal, principal_key=principal_key,
                          artifact=shard.artifact, shard=shard.path, blob_id=shard.blob_id,
                          nbytes=shard.size, purpose=purpose, evidence=evidence,
                          stanzas=tuple(stanzas), host=host)


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


def sign_load_evidence(
    key: Ed25519PrivateKey,
    *,
    artifact: str,
    shards: Sequence[tuple[str, str]],
    purpose: str,
    ttl_s: int = 300,
    nonce: str | None = None,
    now: float | None = None,
) -> str:
    """A DSSE envelope by ``key`` over {artifact, shards: [[path, blob_id], ...], purpose,
    nonce, expires}: each shard named may be released once under it."""
    if not 0 < len(shards) <= MAX_LOAD_SHARDS:
        raise InvalidInput(f"load evidence names 1 to {MAX_LOAD_SHARDS} shards, not "
                           f"{len(shards)}", obj=artifact,
                           remedy="split the load into several evidence statements")
    paths = [p for p, _ in shards]
    if len(set(paths)) != len(paths):
        raise InvalidInput("load evidence names a shard twice", obj=artifact,
                           remedy="name each shard once")
    expires = int((time.time() if now is None else now) + ttl_s)
    statement = {"artifact": artifact, "shards": [[p, b] for p, b in shards],
                 "purpose": purpose, "nonce": nonce or secrets.token_hex(16),
                 "expires": expires}
    return sign_statement(statement, LOAD_EVIDENCE_PAYLOAD_TYPE, key)


class VerifiedEvidence:
    """Load evidence whose signature verified, by (envelope, key id): bounded, thread-safe.

    Verifying a signature is a function of the envelope and the key alone, so a
    load's requests, which all carry one envelope, verify it once. Only load
    evidence is kept (a plain evidence envelope serves one release). Each entry is
    the statement and its shards by path (position, blob id).
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._known: dict[tuple[str, str], tuple[dict[str, Any], dict[str, tuple[int, str]]]] = {}

    def get(self, envelope: str, kid: str
            ) -> tuple[dict[str, Any], dict[str, tuple[int, str]]] | None:
        return self._known.get((envelope, kid))

    def put(self, envelope: str, kid: str, statement: dict[str, Any],
            shards: dict[str, tuple[int, str]]) -> None:
        if len(self._known) >= self._limit:
            self._known.clear()  # bounded: verified again on demand
        self._known[envelope, kid] = (statement, shards)


def check_release_signature(
    envelope: str, public: Ed25519PublicKey, kid: str, request: ReleaseRequest, now: float,
    verified: VerifiedEvidence | None = None,
) -> tuple[str, int]:
    """Verify the principal's signed release request; return its (replay key, expiry).

    Checks the signature, that it names exactly this artifact, shard, blob and
    purpose (load evidence: this artifact and purpose, and this shard with this
    blob among its shards), and that it is unexpired and short-lived. The replay
    key is the evidence's nonce, or for load evidence ``<kid>/<nonce>/<position>``.
    Replay is the caller's check (it owns the set of used nonces).
    """
    obj = request.obj
    load = _load_statement(envelope, public, kid, obj, verified)
    if load is None:
        try:
            st = verify_statement(envelope, EVIDENCE_PAYLOAD_TYPE, {kid: public},
                                  obj=f"release evidence for {obj}")
        except IntegrityError as exc:
            raise AccessDenied(f"release evidence does not verify: {exc.message}",
                               obj=obj, remedy="sign the request with your identity") from None
        want: Mapping[str, str] = {"artifact": request.artifact, "shard": request.shard,
                                   "blob_id": request.blob_id, "purpose": request.purpose}
    else:
        st = load[0]
        want = {"artifact": request.artifact, "purpose": request.purpose}
    for name, value in want.items():
        if st.get(name) != value:
            raise AccessDenied(f"the evidence is for another {name}", obj=obj,
                               remedy="sign evidence for exactly this shard and purpose")
    expires, nonce = st.get("expires"), st.get("nonce")
    if (not isinstance(expires, int) or not isinstance(nonce, str)
            or not MIN_NONCE <= len(nonce) <= MAX_NONCE or "/" in nonce):
        raise AccessDenied("the evidence lacks a valid nonce or expiry", obj=obj,
                           remedy=f"sign with a nonce of {MIN_NONCE} to {MAX_NONCE} "
                           "characters without '/' (a current client makes one)")
    if expires <= now:
        raise AccessDenied("the evidence has expired", obj=obj, remedy="sign a fresh request")
    if expires - now > MAX_EVIDENCE_LIFETIME_S:
        raise AccessDenied(f"the evidence claims more than {MAX_EVIDENCE_LIFETIME_S} s of "
                           "validity", obj=obj, remedy="sign with a shorter lifetime")
    if load is None:
        return nonce, expires
    named = load[1].get(request.shard)
    if named is None or named[1] != request.blob_id:
        raise AccessDenied("the load evidence does not name this shard" if named is None
                           else "the evidence is for another blob_id", obj=obj,
                           remedy="sign load evidence naming exactly the shards to release")
    return f"{kid}/{nonce}/{named[0]}", expires


def _load_statement(envelope: str, public: Ed25519PublicKey, kid: str, obj: str,
                    verified: VerifiedEvidence | None
                    ) -> tuple[dict[str, Any], dict[str, tuple[int, str]]] | None:
    """Load evidence's verified statement and shards by path; None for plain evidence."""
    if verified is not None:
        hit = verified.get(envelope, kid)
        if hit is not None:
            return hit
    # Plain evidence (the type spelled otherwise, escapes included) takes the plain path,
    # whose verification refuses every other payload type.
    if LOAD_EVIDENCE_PAYLOAD_TYPE not in envelope:
        return None
    try:
        kind = loads(envelope).get("payloadType")
    except (ValueError, AttributeError):
        kind = None  # the plain path's verification reports it
    if kind != LOAD_EVIDENCE_PAYLOAD_TYPE:
        return None
    try:
        st = verify_statement(envelope, LOAD_EVIDENCE_PAYLOAD_TYPE, {kid: public},
                              obj=f"load evidence for {obj}")
    except IntegrityError as exc:
        raise AccessDenied(f"load evidence does not verify: {exc.message}", obj=obj,
                           remedy="sign the request with your identity") from None
    listed = st.get("shards")
    shards: dict[str, tuple[int, str]] = {}
    if not isinstance(listed, list) or not 0 < len(listed) <= MAX_LOAD_SHARDS:
        listed = []
    for i, pair in enumerate(listed):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(x, str) for x in pair) or pair[0] in shards):
            break
        shards[pair[0]] = (i, pair[1])
    if not shards or len(shards) != len(listed):
        raise AccessDenied("the load evidence's shard list is malformed", obj=obj,
                           remedy=f"name 1 to {MAX_LOAD_SHARDS} distinct [shard, blob id] "
                           "pairs (strongroom.access.evidence.make_load_evidence)")
    if verified is not None:
        verified.put(envelope, kid, st, shards)
    return st, shards


class UsedNonces:
    """Release nonces already spent, each remembered until its evidence expires (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._expiry: deque[tuple[float, str]] = deque()

    def remember(self, nonce: str, expires: float) -> None:
        """Mark ``nonce`` spent until ``expires`` (at least: a later expiry held stands).

        The state guard remembers every release nonce it reads from the log, this
        gate's own included: one already held until then or later is left as it is,
        so it is neither queued twice for expiry nor shortened.
        """
        with self._lock:
            held = self._seen.get(nonce)
            if held is not None and held >= expires:
                return
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

"""Signed access statements: DSSE envelopes over canonical JSON, their storage and a verify cache.

Every fact the access part acts on is a statement of one *kind* (enrollment,
revocation, label, policy, request, approval, denial, grant, grant-revocation,
break-glass, review), signed with Ed25519 and stored as an envelope in
``access_statements``. A signer whose enrollment pins an ML-DSA-65 key signs
with both keys (``sign(..., pq=mldsa_key)``) and is counted only when both
signatures verify (``cache.verify(..., pq={kid: mldsa_public})``; see
:mod:`strongroom.crypto.hybrid_sig`). Use it like this::

    env = sign("approval", {"request": digest, ...}, identity.private_key)
    put(store, "approval", env, subject=digest)                 # idempotent; merges cosignatures
    for env in envelopes(store, "approval", subject=digest):    # untrusted until verified
        st = cache.verify(env, "approval", {kid: public})

Never act on a row's columns or on an envelope's payload without verifying it:
the store is untrusted. The payload type names the kind, so an approval can
never be replayed as an enrollment. Statements identify themselves by
:func:`payload_digest` (SHA-256 of the signed payload), so cosignatures of one
statement by several officers merge into one row.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from sqlalchemy import select, update

from strongroom.crypto.dsse import ExternalKey, sign_statement
from strongroom.crypto.hybrid_sig import MLDSA_KEYID_PREFIX, add_mldsa_signature, verify_pinned
from strongroom.errors import IntegrityError, InvalidInput, StorageError
from strongroom.store.db import Store, dbapi_errors, raw_query
from strongroom.store.tables.access import AccessGeneration, AccessStatement

__all__ = [
    "KINDS",
    "Stored",
    "VerifyCache",
    "by_digest",
    "envelopes",
    "find_by_prefix",
    "head",
    "marker",
    "merge",
    "payload_digest",
    "payload_type",
    "put",
    "restore",
    "sign",
    "signatures",
    "signer_count",
    "signer_ids",
    "unverified_payload",
]

KINDS = (
    "enrollment", "revocation", "label", "policy", "request", "approval", "denial", "grant",
    "grant-revocation", "break-glass", "review", "codeowners", "seal", "key-order", "alert-ack",
    "attest-policy",
)
#: How many verified statements the cache keeps.
CACHE_SIZE = 50_000


def payload_type(kind: str) -> str:
    """The DSSE payload type of a statement kind."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown access statement kind {kind!r}", obj="statement")
    return f"application/vnd.strongroom.access.{kind}.v1+json"


def sign(kind: str, statement: Mapping[str, Any], *keys: Ed25519PrivateKey | ExternalKey,
         pq: Collection[MLDSA65PrivateKey | None] | MLDSA65PrivateKey | None = None) -> str:
    """Sign ``statement`` (``_type`` added) as a statement of ``kind`` with every key.

    ``pq``: the ML-DSA-65 key(s) of hybrid signers, whose signatures are added
    over the same bytes (None entries, classical signers, are skipped).
    """
    body = {**statement, "_type": f"strongroom.access.{kind}/v1"}
    env = sign_statement(body, payload_type(kind), *keys)
    for key in (pq,) if pq is None or isinstance(pq, MLDSA65PrivateKey) else pq:
        if key is not None:
            env = add_mldsa_signature(env, payload_type(kind), key)
    return env


def _envelope(env: str) -> dict[str, Any]:
    try:
        data = json.loads(env)
        if not isinstance(data, dict) or not isinstance(data.get("signatures"), list):
            raise ValueError("not an envelope")
        return data
    except ValueError:
        raise InvalidInput("not a signed statement (DSSE envelope JSON)", obj="statement",
                           remedy="pass the envelope file strongroom wrote") from None


def payload_digest(env: str) -> str:
    """SHA-256 (hex) of the envelope's payload: the statement's identity, signed or not."""
    return _payload_digest(env)


@functools.lru_cache(maxsize=8192)
def _payload_digest(env: str) -> str:  # a pure function of the envelope text
    data = _envelope(env)
    try:
        payload = base64.b64decode(data["payload"], validate=True)
    except (KeyError, ValueError, TypeError):
        raise InvalidInput("signed statement has no valid payload", obj="statement") from None
    return hashlib.sha256(payload).hexdigest()


def unverified_payload(env: str) -> dict[str, Any]:
    """The payload *without* checking signatures: for display and lookups only, never decisions."""
    return dict(_decoded_payload(env))


@functools.lru_cache(maxsize=8192)
def _decoded_payload(env: str) -> dict[str, Any]:
    data = _envelope(env)
    try:
        out = json.loads(base64.b64decode(data["payload"], validate=True))
    except (KeyError, ValueError, TypeError):
        raise InvalidInput("signed statement has no valid payload", obj="statement") from None
    if not isinstance(out, dict):
        raise InvalidInput("signed statement's payload is not an object", obj="statement")
    return out


def signer_ids(env: str) -> list[str]:
    """Key ids the envelope claims signed it (unverified)."""
    return [str(s.get("keyid", "")) for s in _envelope(env)["signatures"] if isinstance(s, dict)]


def signer_count(env: str) -> int:
    """How many signers the envelope claims (unverified): a hybrid signer's ML-DSA-65 entry
    beside its Ed25519 one is the same signer, so "2 of 2 officers" never means one."""
    return len({kid for kid in signer_ids(env) if not kid.startswith(MLDSA_KEYID_PREFIX)})


def signatures(env: str) -> frozenset[tuple[str, str]]:
    """The (key id, signature) pairs the envelope carries (unverified)."""
    return frozenset((str(s.get("keyid", "")), str(s.get("sig", "")))
                     for s in _envelope(env)["signatures"] if isinstance(s, dict))


def merge(a: str, b: str) -> str:
    """One envelope carrying the signatures of both (same payload and type required)."""
    ea, eb = _envelope(a), _envelope(b)
    if ea.get("payload") != eb.get("payload") or ea.get("payloadType") != eb.get("payloadType"):
        raise InvalidInput("cannot merge signatures of two different statements", obj="statement",
                           remedy="cosign exactly the statement you were given")
    sigs = list(ea["signatures"])
    seen = {s.get("keyid") for s in sigs if isinstance(s, dict)}
    sigs += [s for s in eb["signatures"] if isinstance(s, dict) and s.get("keyid") not in seen]
    return json.dumps({**ea, "signatures": sigs}, sort_keys=True, separators=(",", ":"))


class VerifyCache:
    """Verifies envelopes, remembering successes keyed by envelope digest *and* the keys used.

    A hit needs the same envelope bytes, kind, threshold and trusted public
    keys, so a cached answer is exactly what verifying again would give.
    Failures are never cached. Thread-safe.

    Entries are keyed by the envelope text itself (Python caches a string's
    hash, so a hit costs no hashing of the envelope) and the raw trusted keys.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, int, tuple[tuple[str, bytes], ...],
                                         tuple[tuple[str, bytes], ...]],
                                   dict[str, Any]] = OrderedDict()

    def verify(
        self,
        env: str,
        kind: str,
        trusted: Mapping[str, Ed25519PublicKey],
        *,
        threshold: int = 1,
        obj: str = "statement",
        pq: Mapping[str, MLDSA65PublicKey] | None = None,
    ) -> dict[str, Any]:
        """The statement if ``threshold`` trusted keys signed it (IntegrityError otherwise).

        ``pq`` pins ML-DSA-65 keys of some trusted key ids: such a signer counts
        only when its envelope carries both signatures and both verify.
        """
        keys = tuple((kid, trusted[kid].public_bytes_raw()) for kid in sorted(trusted))
        pq = pq or {}
        pinned = tuple((kid, pq[kid].public_bytes_raw()) for kid in sorted(pq) if kid in trusted)
        key = (env, kind, threshold, keys, pinned)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return dict(hit)
        statement = verify_pinned(env, payload_type(kind), trusted, pq=pq, threshold=threshold,
                                  obj=obj)
        if statement.get("_type") != f"strongroom.access.{kind}/v1":
            raise IntegrityError(f"signed statement is not a {kind}", obj=obj)
        with self._lock:
            self._entries[key] = statement
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return dict(statement)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def put(
    store: Store,
    kind: str,
    env: str,
    *,
    subject: str,
    resource: str = "",
    expires: int = 0,
) -> str:
    """Store ``env`` (merging signatures into an existing copy of the same statement); its digest."""
    return _write(store, kind, env, subject=subject, resource=resource, expires=expires,
                  exact=False)


def restore(store: Store, kind: str, env: str, *, subject: str, resource: str = "") -> str:
    """Put back a statement exactly as the audit log recorded it; its digest.

    For repairs only (:mod:`strongroom.access.restrictions`): a row with the
    statement's digest gets this kind, subject and resource and keeps every
    signature of both copies; a missing row is inserted.
    """
    return _write(store, kind, env, subject=subject, resource=resource, expires=0, exact=True)


def _write(store: Store, kind: str, env: str, *, subject: str, resource: str, expires: int,
           exact: bool) -> str:
    payload_type(kind)
    digest = payload_digest(env)
    signers = signer_ids(env)
    with store.session() as s:
        # Bump the generation first: on PostgreSQL the row lock orders concurrent writers, so
        # every committed write is seen as a new generation by readers' caches.
        s.execute(update(AccessGeneration).where(AccessGeneration.id == 1)
                  .values(generation=AccessGeneration.generation + 1))
        row = s.scalars(select(AccessStatement).where(AccessStatement.digest == digest)).first()
        if row is None:
            s.add(AccessStatement(kind=kind, subject=subject, resource=resource,
                                  signer=signers[0] if signers else "", digest=digest,
                                  envelope=env, expires=expires, created_at=_utcnow()))
        elif not exact:
            if row.kind != kind:
                raise InvalidInput(f"statement already stored as a {row.kind}", obj=digest[:16])
            row.envelope = merge(row.envelope, env)
        else:
            try:
                row.envelope = merge(env, row.envelope)
            except InvalidInput:  # the row's envelope was replaced by another statement's
                row.envelope = env
            row.kind, row.subject, row.resource = kind, subject, resource
    return digest


_MARKER_SQL = ("SELECT (SELECT generation FROM access_generation WHERE id = 1), count(*), "
               "coalesce(max(id), 0) FROM access_statements")
#: The marker without the count: the generation row and the primary key's last entry, each
#: found through an index (max(id) is a bare aggregate on the integer primary key, so SQLite
#: reads the b-tree's last row and PostgreSQL the index's last entry), whatever the table size.
_HEAD_SQL = ("SELECT (SELECT generation FROM access_generation WHERE id = 1), "
             "coalesce((SELECT max(id) FROM access_statements), 0)")


def marker(store: Store) -> tuple[int, int, int]:
    """The full marker: ``(generation, row count, highest id)``, changed by every change of
    ``access_statements`` but an UPDATE made outside :func:`put` (one query, O(rows)).

    It combines the generation :func:`put` bumps on every insert and merge with
    the table's row count and highest id, so rows written or deleted by anything
    else (an operator's SQL, pruning) also change it. Read it *before* the
    statements it guards: a cache filled afterwards is at least that new.

    The count is what sees a row deleted by SQL below the highest id, and it scans
    the table (~6 ms at 100,000 statements on SQLite), so the evidence rule reads it
    only when it starts a snapshot and when it reads statements under one; its
    invariant (:class:`strongroom.access.evidence.GrantEvidence`): **every decision
    uses statement data read after a full marker matching its snapshot was read**,
    and a snapshot keeps only data a later full marker confirmed. Between those,
    :func:`head` (the same but the count, O(log n)) is enough: a deletion cannot
    change what is already in memory; it matters only to a read that follows it.
    An UPDATE by SQL changes none of the three: the runtime's restriction journal
    compares the restrictive rows with the audit log on an interval and restores
    them (:mod:`strongroom.access.restrictions`).
    """
    row = _read_marker(store, _MARKER_SQL)
    return (int(row[0] or 0), int(row[1]), int(row[2]))


def head(store: Store) -> tuple[int, int]:
    """``(generation, highest id)``: the :func:`marker` but its count, read through indexes.

    Changed by every :func:`put`, by every row inserted above the highest id (any INSERT
    that lets the table number it) and by a deletion of the highest row; not by a deletion
    below it, nor by an INSERT that picks a free id below it itself: only the count sees
    those (see :func:`marker` for who must read it). Such an INSERT adds no access (a row
    is believed only for its signatures, which anyone holding them could :func:`put`); the
    deletion is what the full marker is for.
    """
    row = _read_marker(store, _HEAD_SQL)
    return (int(row[0] or 0), int(row[1]))


def _read_marker(store: Store, sql: str) -> Any:
    # A pooled DBAPI connection and one SELECT (a statement is its own consistent read), not
    # an ORM session: this runs on every key release batch and costs ~10 us, not ~100 us.
    try:
        rows = raw_query(store.engine, sql)
    except dbapi_errors(store.engine) as exc:
        raise StorageError(f"cannot read the access statements' generation: "
                           f"{type(exc).__name__}", obj=store.url,
                           remedy="check that the database is reachable") from exc
    row = rows[0] if rows else None
    if row is None:
        raise StorageError("the access statements' generation row is missing", obj=store.url,
                           remedy="run the migrations (Store.open) on this database")
    return row


def envelopes(
    store: Store,
    kind: str,
    *,
    subject: str | None = None,
    subjects: list[str] | None = None,
    resource: str | None = None,
    newest_first: bool = True,
) -> list[str]:
    """Envelopes of ``kind`` filtered by subject(s) and resource; untrusted until verified."""
    query = select(AccessStatement.envelope).where(AccessStatement.kind == kind)
    if subject is not None:
        query = query.where(AccessStatement.subject == subject)
    if subjects is not None:
        query = query.where(AccessStatement.subject.in_(subjects))
    if resource is not None:
        query = query.where(AccessStatement.resource == resource)
    order = AccessStatement.id.desc() if newest_first else AccessStatement.id
    with store.session(readonly=True) as s:
        return list(s.scalars(query.order_by(order)).all())


def by_digest(store: Store, digest: str) -> str | None:
    """The stored envelope of the statement ``digest`` (untrusted until verified)."""
    with store.session(readonly=True) as s:
        found = s.scalars(select(AccessStatement.envelope)
                          .where(AccessStatement.digest == digest)).first()
    return str(found) if found is not None else None


class Stored(NamedTuple):
    """One stored statement: its kind, digest and envelope (untrusted until verified)."""

    kind: str
    digest: str
    envelope: str


def find_by_prefix(store: Store, kinds: str | Collection[str], prefix: str, *,
                   limit: int | None = None) -> list[Stored]:
    """Stored statements of ``kinds`` whose digest starts with ``prefix`` (at most ``limit``).

    The face that asked decides what zero or several matches mean to its user.
    """
    wanted = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    query = (select(AccessStatement.kind, AccessStatement.digest, AccessStatement.envelope)
             .where(AccessStatement.kind.in_(wanted), AccessStatement.digest.startswith(prefix)))
    if limit is not None:
        query = query.limit(limit)
    with store.session(readonly=True) as s:
        return [Stored(str(k), str(d), str(e)) for k, d, e in s.execute(query).all()]

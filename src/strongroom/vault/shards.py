"""One shard on the release path: located in its artifact's signed manifest, opened through the gate.

* :class:`SignedShards` — the gate's :class:`~strongroom.release.ports.ShardLocator`
  (and :class:`~strongroom.release.ports.ShardSizes`): every manifest is fetched
  and verified once against the barrier's manifest key, then each release is a
  dictionary lookup. The gate charges the size it finds (DESIGN rule 2, "derive,
  don't trust": a file key decrypts the whole shard) and the evidence rule reads
  the artifact's kind, compartments and metadata from the same object. The
  server's release route reads its verified manifests and pinned header stanzas
  here too (:meth:`SignedShards.manifest`, :meth:`SignedShards.stanzas`).
* :class:`GateIdentity` — an age :class:`~strongroom.crypto.age.AgeIdentity` whose
  file key comes from the release gate: handed to
  :meth:`~strongroom.crypto.age.AgeReader.open`, it signs fresh evidence for its
  shard and asks the key service, so a shard's blob is opened once and its header
  parsed once. Given a :class:`LoadEvidence`, it sends that instead.
* :class:`LoadEvidence` — one signed load evidence for every shard a full load
  reads (one signature, one verification at the gate), each shard released once
  under it.
* :func:`read_manifest` — a stored manifest, verified (what ``Vault.manifest`` returns).

Use it like this::

    shards = SignedShards(store, lambda: keyring.signing_key("manifest").public_key())
    nbytes = shards.size(request)          # request.artifact, .shard, .blob_id; never .nbytes
    located = shards.locate(request)       # .shard, .kind, .compartments, .metadata

    identity = GateIdentity(keys, lambda: me, manifest.shard(entry), "load")
    # a full load: one signature for all its shards
    load = LoadEvidence(lambda: me, manifest.ref, [manifest.shard(f) for f in manifest.files],
                        "load")
    identity = GateIdentity(keys, lambda: me, manifest.shard(entry), "load", load=load)
    reader = AgeReader.open(source, [identity], plaintext_size=entry.size,
                            check_header=lambda h, b: pinned or refuse)

A blob that is not the named shard of the named artifact in its signed manifest
releases nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from strongroom.artifacts import ArtifactRef
from strongroom.crypto import age
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, NotFound, StorageError
from strongroom.release.ports import LocatedShard
from strongroom.release.request import (
    MAX_LOAD_SHARDS,
    ReleaseRequest,
    Shard,
    build_request,
    sign_load_evidence,
    sign_release_evidence,
)
from strongroom.store.db import Store
from strongroom.store.tables.vault import Artifact
from strongroom.vault.manifest import FileEntry, Manifest

if TYPE_CHECKING:
    from strongroom.attest.enclave import Enclave
    from strongroom.keys.identity import Identity
    from strongroom.keys.protocol import KeyService
    from strongroom.vault.blobs import BlobStore

__all__ = [
    "HEADER_MISMATCH",
    "GateIdentity",
    "LoadEvidence",
    "MappedSource",
    "SignedShards",
    "header_pinned",
    "read_manifest",
    "renamed_errors",
]

#: Verified manifests (and header stanzas) kept: immutable per ref and verifying key.
_CACHE_SIZE = 10_000
_HEADER_CACHE_SIZE = 100_000
#: The refusal when a blob's header is not the one its signed manifest pins.
HEADER_MISMATCH = "blob header does not match the signed manifest (blob swapped or altered)"
_HEADER_REMEDY = "restore the blob from a verified backup and report the tampering"
#: What the gate's refusal of spent evidence says (the nonce table's and the ledger's).
_REPLAY = "already used (replay)"


def read_manifest(
    store: Store, key: Ed25519PublicKey, name: str, version: int | None = None
) -> Manifest:
    """The verified manifest of ``name`` (newest version unless given); NotFound, IntegrityError."""
    with store.session() as s:
        query = select(Artifact).where(Artifact.name == name)
        if version is not None:
            query = query.where(Artifact.version == version)
        row = s.scalars(query.order_by(Artifact.version.desc()).limit(1)).first()
        if row is None:
            what = str(ArtifactRef(name, version))
            raise NotFound(
                "no such artifact", obj=what, remedy="`strongroom weights ls` lists artifacts"
            )
        envelope, row_name, row_version = row.manifest_json, row.name, row.version
    manifest = Manifest.verify(envelope, key, obj=f"manifest of {row_name}@{row_version}")
    if (manifest.name, manifest.version) != (row_name, row_version):
        raise IntegrityError(
            f"the database row says {row_name}@{row_version} but its signed manifest is {manifest.ref}",
            obj=f"manifest of {row_name}@{row_version}",
            remedy="report the tampering: a row was moved",
        )
    return manifest


def header_pinned(header: age.Header, head: bytes | memoryview, header_sha256: str) -> bool:
    """Whether the header's bytes hash to the digest the signed manifest pins."""
    return hashlib.sha256(head[: header.size]).hexdigest() == header_sha256


class SignedShards:
    """Shards of signed manifests, each manifest verified once per (artifact, manifest key)."""

    def __init__(self, store: Store, manifest_key: Callable[[], Ed25519PublicKey]) -> None:
        self.store = store
        self.manifest_key = manifest_key
        self._lock = threading.Lock()
        self._located: dict[tuple[str, bytes], dict[tuple[str, str], LocatedShard]] = {}
        self._manifests: dict[tuple[str, int, bytes], Manifest] = {}
        self._stanzas: dict[tuple[str, str], tuple[age.Stanza, ...]] = {}
        self._last_key: bytes | None = None  # the manifest key of the last lookup (for cached)

    # -- the gate's port ------------------------------------------------------------

    def size(self, request: ReleaseRequest) -> int:
        """The plaintext size of the request's shard, stored as its blob (AccessDenied otherwise)."""
        return self.locate(request).shard.size

    def locate(self, request: ReleaseRequest) -> LocatedShard:
        """The request's shard as its artifact's signed manifest lists it.

        Raises AccessDenied when the artifact has no manifest, the manifest does
        not verify, or it does not list this shard with this blob.
        """
        artifact = request.artifact
        mkey = self.manifest_key()
        cache_key = (artifact, mkey.public_bytes_raw())
        # Asked twice a release (the gate's size, the rule's lookup): a plain dict read,
        # atomic under the GIL; the lock only orders the writers (clear, then insert).
        files = self._located.get(cache_key)
        if files is None:
            files = self._load(artifact, mkey, request.obj)
            with self._lock:
                if len(self._located) >= _CACHE_SIZE:
                    self._located.clear()
                self._located[cache_key] = files
        found = files.get((request.shard, request.blob_id))
        if found is None:
            raise AccessDenied("the blob is not this shard of this artifact in its signed "
                               "manifest", obj=request.obj, remedy="release keys only for the "
                               "shards the artifact's signed manifest lists")
        return found

    def _load(self, artifact: str, mkey: Ed25519PublicKey,
              obj: str) -> dict[tuple[str, str], LocatedShard]:
        ref: ArtifactRef | None = None
        with contextlib.suppress(InvalidInput):
            ref = ArtifactRef.parse(artifact)
        if ref is None or ref.version is None:
            raise AccessDenied("the artifact must be named name@version", obj=obj,
                               remedy="name the artifact as `strongroom weights ls` shows it")
        with self.store.session(readonly=True) as s:  # no write lock: releases run at once
            envelope = s.scalars(select(Artifact.manifest_json).where(
                Artifact.name == ref.name, Artifact.version == ref.version)).first()
        if envelope is None:
            raise AccessDenied("no such artifact: nothing to release a key for", obj=obj,
                               remedy="import the artifact first (`strongroom weights import`)")
        try:
            manifest = Manifest.verify(envelope, mkey, obj=f"manifest of {artifact}")
        except IntegrityError as exc:
            raise AccessDenied(f"the artifact's manifest does not verify: {exc.message}",
                               obj=obj, remedy="restore the artifact from a verified backup "
                               "and report the tampering") from None
        if manifest.ref != artifact:
            raise AccessDenied("the signed manifest describes another artifact", obj=obj,
                               remedy="report the tampering: a row was moved")
        compartments = tuple(manifest.compartments)
        metadata = dict(manifest.metadata)
        return {(f.path, f.blob): LocatedShard(manifest.shard(f), manifest.kind,
                                               compartments, metadata)
                for f in manifest.files}

    # -- what the server's release route reads -----------------------------------------

    def manifest(self, ref: ArtifactRef) -> Manifest:
        """The verified manifest of a pinned ``ref`` (as ``Vault.manifest``), cached."""
        if ref.version is None:
            raise InvalidInput("name the artifact as name@version", obj=str(ref),
                               remedy="name the artifact as `strongroom weights ls` shows it")
        mkey = self.manifest_key()
        key = (ref.name, ref.version, mkey.public_bytes_raw())
        with self._lock:
            self._last_key = key[2]
            hit = self._manifests.get(key)
        if hit is not None:
            return hit
        manifest = read_manifest(self.store, mkey, ref.name, ref.version)
        with self._lock:
            if len(self._manifests) >= _CACHE_SIZE:
                self._manifests.clear()
            self._manifests[key] = manifest
        return manifest

    def cached(self, ref: ArtifactRef, path: str) -> tuple[Manifest, FileEntry,
                                                          tuple[age.Stanza, ...]] | None:
        """The manifest, shard entry and header stanzas when all are cached (no I/O), else None."""
        with self._lock:
            if self._last_key is None or ref.version is None:
                return None
            m = self._manifests.get((ref.name, ref.version, self._last_key))
            entry = None if m is None else next((f for f in m.files if f.path == path), None)
            stanzas = None if entry is None else self._stanzas.get(
                (entry.blob, entry.header_sha256))
        return None if m is None or entry is None or stanzas is None else (m, entry, stanzas)

    def stanzas(self, blobs: BlobStore, entry: FileEntry, obj: str) -> tuple[age.Stanza, ...]:
        """The recipient stanzas of ``entry``'s blob, its header checked against the manifest's pin.

        Cached by (blob, pinned digest): both are immutable once recorded.
        """
        key = (entry.blob, entry.header_sha256)
        with self._lock:
            hit = self._stanzas.get(key)
        if hit is not None:
            return hit
        source = blobs.open(entry.blob)
        try:
            header, head = age.read_header(source)
            if not header_pinned(header, head, entry.header_sha256):
                raise IntegrityError(HEADER_MISMATCH, obj=obj, remedy=_HEADER_REMEDY)
        finally:
            source.close()
        stanzas = tuple(header.stanzas)
        with self._lock:
            if len(self._stanzas) >= _HEADER_CACHE_SIZE:
                self._stanzas.clear()
            self._stanzas[key] = stanzas
        return stanzas


class LoadEvidence:
    """One signed load evidence for the shards a full load reads, each taken once.

    A full load of N shards used to sign N release evidences, and the gate verified
    N signatures; under one load evidence (:func:`~strongroom.release.request.
    sign_load_evidence`) the load signs once and the gate verifies once, while each
    shard is still requested, decided, charged and audited on its own, and released
    at most once under it. It is signed when the first shard's key is needed (a load
    refused before that signs nothing), over every shard not yet taken (at most
    :data:`~strongroom.release.request.MAX_LOAD_SHARDS`; a larger load signs again
    for the rest), and signed again over the rest when less than :data:`RENEW_S` of
    its lifetime is left (a load that outlasts it).

    :meth:`take` hands it out once per listed shard; a shard it does not list (or
    whose blob differs), one already taken, or another purpose gets None, and its
    caller signs per-shard evidence as before. :meth:`finish` drops it once the
    load is done: what was not taken (a failed load) is never handed out later.
    """

    #: Seconds of lifetime it must have left to be handed out; less, it is signed again.
    RENEW_S = 60

    def __init__(self, signer: Callable[[], Identity], artifact: str, shards: Sequence[Shard],
                 purpose: str, *, ttl_s: int = 300) -> None:
        self.signer = signer
        self.artifact = artifact
        self.purpose = purpose
        self.ttl_s = ttl_s
        self._pending = {s.path: s.blob_id for s in shards if s.artifact == artifact}
        self._listed: frozenset[str] = frozenset()
        self._evidence: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        #: Envelopes signed so far (one for a load that fits in MAX_LOAD_SHARDS and its ttl).
        self.signed = 0

    def take(self, shard: Shard, purpose: str) -> str | None:
        """The load evidence for ``shard``'s one release under it, or None (sign your own)."""
        with self._lock:
            if (purpose != self.purpose or shard.artifact != self.artifact
                    or self._pending.get(shard.path) != shard.blob_id):
                return None
            now = time.time()
            if (self._evidence is None or shard.path not in self._listed
                    or now > self._expires - self.RENEW_S):
                listed = list(self._pending.items())[:MAX_LOAD_SHARDS]
                if shard.path not in dict(listed):
                    listed = [(shard.path, shard.blob_id), *listed[:MAX_LOAD_SHARDS - 1]]
                me = self.signer()
                self._evidence = sign_load_evidence(me.private_key, artifact=self.artifact,
                                                    shards=listed, purpose=self.purpose,
                                                    ttl_s=self.ttl_s, now=now)
                self._listed = frozenset(p for p, _ in listed)
                self._expires = now + self.ttl_s
                self.signed += 1
            del self._pending[shard.path]
            return self._evidence

    def finish(self) -> None:
        """The load is over: hand nothing more out (shards read later sign their own)."""
        with self._lock:
            self._pending.clear()
            self._evidence = None
            self._listed = frozenset()


class GateIdentity:
    """An age identity whose file key the release gate releases, for one shard and purpose.

    Each :meth:`unwrap` signs fresh release evidence with the caller's identity
    (``signer``, read when first needed) and runs the key service's gate with the
    header's stanzas; the gate decides, audits and meters. It never answers "not
    mine": the gate's refusal is raised as it is. With ``load`` (a full load's
    :class:`LoadEvidence`), it sends that load's one evidence instead when it covers
    the shard, and signs its own only where it does not, or where the gate refuses
    it as already used (a replay: the shard's one release under it is spent).
    """

    def __init__(self, keys: KeyService, signer: Callable[[], Identity], shard: Shard,
                 purpose: str, *, host: str | None = None,
                 load: LoadEvidence | None = None) -> None:
        self.keys = keys
        self.signer = signer
        self.shard = shard
        self.purpose = purpose
        self.host = host
        self.load = load

    def release(self, stanzas: Sequence[age.Stanza]) -> bytearray:
        """The shard's file key from the gate (the caller zeroes it)."""
        me = self.signer()
        shard = self.shard
        shared = None if self.load is None else self.load.take(shard, self.purpose)
        if shared is not None:
            try:
                return self._ask(me, shared, stanzas)
            except AccessDenied as exc:
                if _REPLAY not in exc.message:
                    raise
        evidence = sign_release_evidence(me.private_key, artifact=shard.artifact,
                                         shard=shard.path, blob_id=shard.blob_id,
                                         purpose=self.purpose)
        return self._ask(me, evidence, stanzas)

    def _ask(self, me: Identity, evidence: str, stanzas: Sequence[age.Stanza]) -> bytearray:
        return self.keys.release(build_request(
            self.shard, principal=me.public.principal, principal_key=me.public.public_bytes,
            purpose=self.purpose, evidence=evidence, stanzas=stanzas, host=self.host))

    def unwrap(self, stanzas: Sequence[age.Stanza]) -> bytes | None:
        """The file key for the age reader (the released buffer is zeroed here)."""
        key = self.release(stanzas)
        try:
            return bytes(key)
        finally:
            key[:] = bytes(len(key))


class AttestedGateIdentity(GateIdentity):
    """A :class:`GateIdentity` for a workload in an enclave: keys come wrapped to its key.

    The first release sends the enclave's evidence, bound to its ephemeral key
    and a gate nonce; while the gate's admission stands, later ones send the key
    alone (the gate's cache), and a lapsed one is attested again. The file key
    is in clear only here, unwrapped with the enclave's ephemeral key.
    """

    def __init__(self, keys: KeyService, signer: Callable[[], Identity], shard: Shard,
                 purpose: str, enclave: Enclave, *, host: str | None = None) -> None:
        super().__init__(keys, signer, shard, purpose, host=host)
        self.enclave = enclave

    def release(self, stanzas: Sequence[age.Stanza]) -> bytearray:
        """The shard's file key, released to the enclave only (the caller zeroes it)."""
        from strongroom.errors import AttestationRefused

        nonce_of = getattr(self.keys, "attest_nonce", None)
        release = getattr(self.keys, "release_attested", None)
        if not callable(nonce_of) or not callable(release):
            raise AttestationRefused("evidence", "this key service cannot release into an "
                                     "enclave", obj=self.shard.artifact,
                                     remedy="run the workload against the vault host's "
                                     "own key agent (docs/attestation.md)")
        me = self.signer()
        shard = self.shard
        for attempt in (0, 1):
            evidence = sign_release_evidence(me.private_key, artifact=shard.artifact,
                                             shard=shard.path, blob_id=shard.blob_id,
                                             purpose=self.purpose)
            request = build_request(
                shard, principal=me.public.principal, principal_key=me.public.public_bytes,
                purpose=self.purpose, evidence=evidence, stanzas=stanzas, host=self.host)
            fresh = self.enclave.needs_evidence() or attempt == 1
            started = time.monotonic()
            claim = self.enclave.claim(nonce_of() if fresh else None)
            try:
                stanza = release(request, claim)
            except AttestationRefused as exc:
                # over the agent's socket the check travels only in the message
                if fresh or "evidence" not in (exc.check, exc.message.split(":", 1)[0]):
                    raise
                self.enclave.lapsed()  # the gate forgot this key (restart, lapse): attest again
                continue
            if fresh:
                self.enclave.admitted(started)
            return self.enclave.open(stanza)
        raise AttestationRefused("evidence", "the gate admitted no evidence", obj=shard.artifact)


@contextlib.contextmanager
def renamed_errors(obj: str) -> Iterator[None]:
    """Re-raise integrity errors from the age layer naming the shard they concern."""
    try:
        yield
    except IntegrityError as exc:
        if exc.obj == obj:
            raise
        raise type(exc)(exc.message, obj=obj, remedy=exc.remedy) from exc


class MappedSource:
    """A ``ByteSource`` over a local blob mapped read-only: zero-copy views of the page cache.

    The age reader decrypts straight from the mapping (no copy into fresh
    buffers, whose first touch would fault a page at a time) and calls
    :meth:`release` for each piece it has opened, which drops those pages from
    this process's resident set (the page cache keeps them), so a full load's
    resident memory stays about the plaintext's size. Blobs are immutable once
    renamed into place; one truncated in place while mapped would fault the
    process (SIGBUS) rather than fail a read.
    """

    def __init__(self, path: Path, *, obj: str) -> None:
        self._obj = obj
        try:
            with open(path, "rb") as fh:
                self._size = os.fstat(fh.fileno()).st_size
                if self._size == 0:
                    raise IntegrityError("blob is empty (truncated)", obj=obj)
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise NotFound("blob is missing from the blob store", obj=obj) from None
        except OSError as exc:
            raise StorageError(f"cannot map blob: {exc.strerror}", obj=obj) from exc
        self._view: memoryview | None = memoryview(self._map)

    def __len__(self) -> int:
        return self._size

    def read_at(self, offset: int, size: int) -> memoryview:
        """A view of up to ``size`` bytes at ``offset`` (valid until :meth:`close`)."""
        if self._view is None:
            raise InvalidInput("the blob was closed", obj=self._obj)
        return self._view[offset : offset + size]

    def release(self, offset: int, size: int) -> None:
        """Drop the whole pages inside ``[offset, offset + size)`` from the resident set."""
        lo = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = (offset + size) // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo and self._view is not None:
            self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def close(self) -> None:
        """Unmap the blob (left to the garbage collector while a view is still held)."""
        if self._view is not None:
            self._view.release()
            self._view = None
            with contextlib.suppress(BufferError):
                self._map.close()

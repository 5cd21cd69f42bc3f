"""The vault: encrypted artifacts, their signed manifests, and reading a shard through the gate.

One module because ``Vault`` is one object whose operations share its audit-first
rule; its separate jobs live beside it (shards, manifest, loader, importer, blobs, documents).

Open it with a key service and use it (faces use
:func:`strongroom.runtime.services.open_vault`, which passes the local agent's)::

    vault = Vault.open(settings, keys=key_service())   # STRONGROOM_HOME, STRONGROOM_DATABASE_URL
    manifest = vault.import_weights(Path("model.safetensors"), name="minilm")
    weights = vault.open_weights("minilm")    # numpy arrays, decrypted in memory only

Every decision (import, key release, export, verification failure) is appended
to the audit log first; if the log cannot record it, the operation is refused.
Plaintext is never written to disk except by :meth:`Vault.export`, an explicit,
audited act.

Keys live in the sealed keyring (:mod:`strongroom.keys`): the vault reaches it
through a :class:`~strongroom.keys.protocol.KeyService`, which wraps each new
file key, signs manifests and checkpoints, and runs the release gate
(:mod:`strongroom.release.gate`) — the only code that unwraps a file key. The
vault never sees a KEK: it opens each shard's blob once and hands the age reader
a :class:`~strongroom.vault.shards.GateIdentity`, which signs release evidence
with the caller's identity (``STRONGROOM_IDENTITY``) and asks the gate. A full
load (:meth:`Vault.open_weights` without ``lazy``) signs one load evidence for all
the shards it reads (:class:`~strongroom.vault.shards.LoadEvidence`) and still
asks the gate for each shard's key as it comes to that shard.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.artifacts import ArtifactRef
from strongroom.audit import AuditLog
from strongroom.audit.config import AuditSettings
from strongroom.crypto import age
from strongroom.errors import (
    AccessDenied,
    AlreadyExists,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    StrongroomError,
)
from strongroom.keys.protocol import ShardKeyWrapping
from strongroom.settings import Settings
from strongroom.store.db import Store
from strongroom.store.tables.vault import Artifact, ArtifactFile
from strongroom.vault.blobs import BlobStore, LocalBlobStore, blob_store_from_settings
from strongroom.vault.importer import EncryptedFile, collect_files, encrypt_file
from strongroom.vault.manifest import FileEntry, Manifest, TensorRef, check_name
from strongroom.vault.shards import (
    HEADER_MISMATCH,
    AttestedGateIdentity,
    GateIdentity,
    LoadEvidence,
    MappedSource,
    header_pinned,
    read_manifest,
    renamed_errors,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Buffer

    from strongroom.attest.enclave import Enclave
    from strongroom.keys.identity import Identity
    from strongroom.keys.protocol import KeyService
    from strongroom.vault.loader import Weights

__all__ = ["ArtifactCheck", "ArtifactSummary", "Vault"]

Progress = Callable[[int], None]


def client_host() -> str:
    """This client's host for the audit log: ``STRONGROOM_CLIENT_HOST`` if set, else the hostname."""
    import socket

    return os.environ.get("STRONGROOM_CLIENT_HOST") or socket.gethostname()

@dataclass(frozen=True)
class ArtifactSummary:
    """One row of ``weights ls``."""

    name: str
    version: int
    kind: str
    files: int
    total_size: int
    created: datetime


@dataclass(frozen=True)
class ArtifactCheck:
    """What ``weights verify`` checked of one artifact version."""

    ref: str
    files: int
    bytes: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _WrappedBy:
    """A recipient whose stanza the key service already made for this file key."""

    stanza: age.Stanza

    def wrap(self, file_key: bytes) -> list[age.Stanza]:
        return [self.stanza]


class Vault:
    """Encrypted artifacts on a store and a blob store, with an audit log."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        blobs: BlobStore,
        keys: KeyService,
        audit: AuditLog,
        *,
        identity: Identity | None = None,
        actor: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.keys = keys
        self.audit = audit
        self._identity = identity
        # Who acts is who signs: an explicit actor (a server names its verified caller) or
        # the signing identity, loaded when first needed; never the OS user, only a hint.
        self._actor = actor
        public = keys.public_keys()
        self.manifest_key = Ed25519PublicKey.from_public_bytes(public["manifest"])
        #: When set, every file key is asked for through the attested path: released
        #: wrapped to this enclave's ephemeral key, on its evidence (``gateway serve --attest``).
        self.enclave: Enclave | None = None
        #: What :meth:`close` also closes: what was opened for this vault alone (``on_close``).
        self._on_close: list[Callable[[], None]] = []

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        keys: KeyService,
        identity: Identity | None = None,
        actor: str | None = None,
    ) -> Vault:
        """Open the vault described by ``settings`` with the key service ``keys``.

        The faces pass the local agent's (:func:`strongroom.runtime.services.open_vault`).
        Raises :class:`~strongroom.errors.Sealed` when the vault is not
        initialised or not unsealed.
        """
        settings = settings or Settings()
        home = settings.resolved_home
        service = keys
        checkpoint_key = Ed25519PublicKey.from_public_bytes(service.public_keys()["checkpoint"])
        # Only once the key service answered (a vault exists and is unsealed): a refused
        # open leaves no directory behind.
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store.open(settings.resolved_database_url, schema="current")
        try:
            audit = AuditSettings().open_log(
                store,
                (checkpoint_key, lambda message: service.sign("checkpoint", message)),
                anchor_path=home / "audit" / "latest-checkpoint",
            )
        except BaseException:
            store.close()
            raise
        try:
            return cls(
                settings,
                store,
                blob_store_from_settings(settings),
                service,
                audit,
                identity=identity,
                actor=actor,
            )
        except BaseException:
            audit.close()
            store.close()
            raise

    @property
    def actor(self) -> str:
        """Who the audit log names: the explicit actor, else the signing identity (AccessDenied)."""
        if self._actor is not None:
            return self._actor
        if self._identity is None:
            from strongroom.keys.config import KeysSettings

            if KeysSettings().identity is None:
                raise AccessDenied(
                    "no identity to act as: every change is recorded under the identity "
                    "that signs it",
                    obj="STRONGROOM_IDENTITY",
                    remedy="set STRONGROOM_IDENTITY to your identity file "
                    "(`strongroom keys new-identity`)",
                )
        return self.identity.public.principal

    @actor.setter
    def actor(self, name: str) -> None:
        self._actor = name

    @property
    def identity(self) -> Identity:
        """The identity that signs release evidence (``STRONGROOM_IDENTITY``)."""
        if self._identity is None:
            from strongroom.keys.config import KeysSettings
            from strongroom.keys.identity import Identity

            path = KeysSettings().identity
            if path is None:
                raise AccessDenied(
                    "no identity to sign the key release with",
                    obj="STRONGROOM_IDENTITY",
                    remedy="set STRONGROOM_IDENTITY to your identity file "
                    "(`strongroom keys new-identity`)",
                )
            self._identity = Identity.load(Path(path))
        return self._identity

    def on_close(self, close: Callable[[], None]) -> None:
        """Have :meth:`close` call ``close`` too (a key service opened for this vault alone)."""
        self._on_close.append(close)

    def close(self) -> None:
        """Stop background work and release connections."""
        hooks, self._on_close = self._on_close, []
        try:
            for hook in reversed(hooks):
                hook()
        finally:
            self.audit.close()
            self.store.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- audit -------------------------------------------------------------

    def record(
        self,
        action: str,
        obj: str,
        decision: str,
        reason: str = "",
        *,
        shard: str | None = None,
        nbytes: int | None = None,
        **details: Any,
    ) -> int:
        """Append one decision to the audit log, durably (raises AuditUnavailable).

        The actor is the signing identity; where it was not given by a server, the
        OS user is recorded beside it (``os_user``) as a hint, never as the actor.
        """
        actor = self.actor
        if self._actor is None:
            details = {**details, "os_user": getpass.getuser()}
        index: int = self.audit.append(
            actor=actor,
            action=action,
            obj=obj,
            decision=decision,
            reason=reason,
            details=details or None,
            shard=shard,
            nbytes=nbytes,
        )
        return index

    # -- import ------------------------------------------------------------

    def import_weights(
        self,
        path: Path,
        name: str,
        *,
        compartments: Sequence[str] = (),
        new_version: bool = False,
        escrow: Sequence[age.Recipient] = (),
        progress: Progress | None = None,
        cipher: str | None = None,
    ) -> Manifest:
        """Encrypt a .safetensors file or a directory of shards into a new artifact version.

        ``cipher``: the payload mode of every blob (``age.CIPHERS``); default the
        vault's (``STRONGROOM_CIPHER``, ChaCha20-Poly1305 unless set).
        """
        cipher = cipher or self.settings.cipher
        if cipher not in age.CIPHERS:
            raise InvalidInput(f"unknown payload cipher {cipher!r}", obj=name,
                               remedy=f"use one of {', '.join(age.CIPHERS)}")
        _ = self.actor  # nobody signs, nothing is imported: refuse before any work
        check_name(name)
        for c in compartments:
            check_name(c, what="compartment name")
        from strongroom.scanning.scan import scan_import

        # Every import is scanned before anything is accepted; pickle-based
        # files are refused here and enter only through --convert.
        try:
            report = scan_import(path)
            if report.pickle_files:
                raise InvalidInput(
                    "pickle-based files are not imported as such: "
                    + ", ".join(f.path for f in report.pickle_files),
                    obj=str(path),
                    remedy="pass --convert to import them as safetensors after the scan",
                )
        except StrongroomError as exc:
            # A refused import is a security event (a poisoned model, a probe): audit it.
            self.record("weights.import", name, "deny", reason=exc.message[:500],
                        source=path.name, error=type(exc).__name__)
            raise
        sources = collect_files(path)
        version = self.next_version(name, new_version)
        keys = self.keys
        written: list[EncryptedFile] = []
        ref = str(ArtifactRef(name, version))

        def recipients_for(shard: str) -> Callable[[str, bytes], list[age.Recipient]]:
            # A backend that binds file keys to their shard (threshold) is given both names.
            def wrap(blob_id: str, file_key: bytes) -> list[age.Recipient]:
                if isinstance(keys, ShardKeyWrapping):
                    stanza = keys.wrap_shard_file_key(ref, shard, blob_id, file_key)
                else:
                    stanza = keys.wrap_file_key(blob_id, file_key)
                return [_WrappedBy(stanza), *escrow]

            return wrap

        try:
            for source in sources:
                written.append(
                    encrypt_file(
                        source,
                        self.blobs,
                        recipients_for(source.name),
                        threads=self.settings.threads,
                        progress=progress,
                        cipher=cipher,
                    )
                )
            manifest = self._build_manifest(name, version, sorted(set(compartments)), written)
            envelope = manifest.sign(
                (self.manifest_key, lambda message: keys.sign("manifest", message))
            )
            self.record(
                "weights.import",
                ref,
                "allow",
                files=len(written),
                nbytes=manifest.total_size,
                source=str(path),
                cipher=cipher,
            )
            self.record_artifact(manifest, envelope)
        except BaseException as exc:
            for enc in written:
                with contextlib.suppress(StrongroomError, OSError):
                    self.blobs.delete(enc.entry.blob)
            if isinstance(exc, StrongroomError) and not isinstance(exc, AlreadyExists):
                with contextlib.suppress(StrongroomError):
                    self.record("weights.import", ref, "error", reason=exc.message)
            raise
        return manifest

    def next_version(self, name: str, new_version: bool) -> int:
        """The version a new import of ``name`` gets (AlreadyExists unless ``new_version``)."""
        with self.store.session() as s:
            current = s.scalar(select(func.max(Artifact.version)).where(Artifact.name == name))
        if current is None:
            return 1
        if not new_version:
            raise AlreadyExists(
                f"an artifact named {name!r} already exists (version {current})",
                obj=name,
                remedy="choose another --name, or pass --new-version to add a version",
            )
        return int(current) + 1

    def _build_manifest(
        self, name: str, version: int, compartments: list[str], written: list[EncryptedFile]
    ) -> Manifest:
        tensors: dict[str, TensorRef] = {}
        metadata: dict[str, str] = {}
        for enc in written:
            for t in enc.tensors:
                if t.name in tensors:
                    raise InvalidInput(
                        f"tensor {t.name!r} appears in both {tensors[t.name].file!r} and {enc.entry.path!r}",
                        obj=name,
                        remedy="a model's shards must not repeat tensor names",
                    )
                tensors[t.name] = TensorRef(
                    t.name, enc.entry.path, t.dtype, t.shape, t.start, t.end
                )
            if enc.metadata and not metadata:
                metadata = enc.metadata
        return Manifest(
            name=name,
            version=version,
            kind="weights",
            created=_utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            compartments=tuple(compartments),
            files=tuple(enc.entry for enc in written),
            tensors=tensors,
            metadata=metadata,
        )

    def record_artifact(self, manifest: Manifest, envelope: str) -> None:
        """Record a signed manifest whose blobs are already committed (one transaction)."""
        try:
            with self.store.session() as s:
                artifact = Artifact(
                    name=manifest.name,
                    version=manifest.version,
                    kind=manifest.kind,
                    created_at=_utcnow(),
                    total_size=manifest.total_size,
                    manifest_json=envelope,
                    manifest_sig="dsse",
                )
                artifact.files = [
                    ArtifactFile(
                        path=f.path,
                        blob_id=f.blob,
                        kind=f.kind,
                        size=f.size,
                        sha256=f.sha256,
                        ct_size=f.ct_size,
                        ct_sha256=f.ct_sha256,
                    )
                    for f in manifest.files
                ]
                s.add(artifact)
        except StorageError as exc:
            if isinstance(exc.__cause__, DbIntegrityError):
                raise AlreadyExists(
                    f"version {manifest.version} of {manifest.name!r} was created concurrently",
                    obj=manifest.name,
                    remedy="retry the import with --new-version",
                ) from exc
            raise

    # -- reading -----------------------------------------------------------

    def list_artifacts(self) -> list[ArtifactSummary]:
        """Every artifact version, newest first within a name."""
        with self.store.session() as s:
            rows = s.execute(
                select(Artifact, func.count(ArtifactFile.id))
                .join(ArtifactFile, isouter=True)
                .group_by(Artifact.id)
                .order_by(Artifact.name, Artifact.version.desc())
            ).all()
            return [
                ArtifactSummary(a.name, a.version, a.kind, n, a.total_size, a.created_at)
                for a, n in rows
            ]

    def manifest(self, name: str, version: int | None = None) -> Manifest:
        """The verified manifest of ``name`` (newest version unless given)."""
        return read_manifest(self.store, self.manifest_key, name, version)

    def manifest_envelope(self, name: str, version: int) -> str:
        """The signed manifest envelope of ``name@version`` as stored (verify before trusting)."""
        with self.store.session(readonly=True) as s:
            envelope = s.scalars(select(Artifact.manifest_json).where(
                Artifact.name == name, Artifact.version == version)).first()
        if envelope is None:
            raise NotFound("no such artifact", obj=str(ArtifactRef(name, version)),
                           remedy="`strongroom weights ls` lists artifacts")
        return str(envelope)

    def release_file_key(self, manifest: Manifest, entry: FileEntry, purpose: str) -> bytearray:
        """Ask the release gate for one shard's file key (the caller zeroes it).

        For callers that hand the key on (an airgap transfer); to read a shard,
        use :meth:`open_reader`, which never holds the key outside the reader.
        """
        obj = f"{manifest.ref}/{entry.path}"
        source = self._open_source(entry.blob)
        try:
            with renamed_errors(obj):
                header, head = age.read_header(source)
                self._check_pin(manifest, entry, header, head)
                return self._gate_identity(manifest, entry, purpose).release(header.stanzas)
        finally:
            _close(source)

    @contextlib.contextmanager
    def open_reader(
        self, manifest: Manifest, entry: FileEntry, purpose: str, *,
        load: LoadEvidence | None = None,
    ) -> Iterator[age.AgeReader]:
        """An authenticated random-access reader over one shard's plaintext.

        The blob is opened once and its header parsed once: the header is checked
        against the manifest's pin, then the gate releases the file key to the age
        reader through a :class:`~strongroom.vault.shards.GateIdentity` (with
        ``load``, under that load's one evidence where it covers the shard).
        """
        source = self._open_source(entry.blob)
        try:
            with self._reader(source, manifest, entry, purpose, load) as reader:
                yield reader
        finally:
            _close(source)

    @contextlib.contextmanager
    def _reader(
        self, source: age.ByteSource, manifest: Manifest, entry: FileEntry, purpose: str,
        load: LoadEvidence | None = None,
    ) -> Iterator[age.AgeReader]:
        """The reader over an open ``source`` (the caller closes it)."""
        obj = f"{manifest.ref}/{entry.path}"

        def pinned(header: age.Header, head: bytes | memoryview) -> None:
            self._check_pin(manifest, entry, header, head)

        with renamed_errors(obj):
            reader = age.AgeReader.open(
                source, [self._gate_identity(manifest, entry, purpose, load)],
                plaintext_size=entry.size, check_header=pinned)
        with reader, renamed_errors(obj):
            yield reader

    def _check_pin(self, manifest: Manifest, entry: FileEntry, header: age.Header,
                   head: bytes | memoryview) -> None:
        """Refuse (and audit) a blob whose header is not the one the signed manifest pins."""
        if header_pinned(header, head, entry.header_sha256):
            return
        obj = f"{manifest.ref}/{entry.path}"
        self.record("key.release", obj, "deny", reason="blob header does not match the manifest")
        raise IntegrityError(HEADER_MISMATCH, obj=obj,
                             remedy="restore the blob from a verified backup and report "
                             "the tampering")

    def _gate_identity(self, manifest: Manifest, entry: FileEntry, purpose: str,
                       load: LoadEvidence | None = None) -> GateIdentity:
        if self.enclave is not None:  # attested releases keep their per-shard evidence
            return AttestedGateIdentity(self.keys, lambda: self.identity, manifest.shard(entry),
                                        purpose, self.enclave, host=client_host())
        return GateIdentity(self.keys, lambda: self.identity, manifest.shard(entry), purpose,
                            host=client_host(), load=load)

    def _open_source(self, blob_id: str) -> age.ByteSource:
        """A ciphertext source; local blobs are mapped (:class:`MappedSource`).

        The reader decrypts from the page cache without a copy and releases each
        piece it has opened, so a full load's resident memory stays at the size
        of the plaintext.
        """
        if isinstance(self.blobs, LocalBlobStore):
            return MappedSource(self.blobs.path_of(blob_id), obj=f"blob {blob_id}")
        return self.blobs.open(blob_id)

    def open_weights(
        self, name: str, version: int | None = None, *, lazy: bool = False,
        framework: str = "numpy", into: Mapping[str, Buffer] | None = None,
    ) -> Weights:
        """A read-only mapping of tensor name -> array, decrypted in memory.

        ``into``: the caller's buffers per shard path (see ``loader.shard_buffers``).
        A full load signs one load evidence for every shard it reads and asks the
        gate for each shard's key when it comes to it (:class:`_FullLoad`); a lazy
        one signs evidence for each shard it opens, as it opens it: it may never
        read most shards, and a load evidence naming them would stay spendable for
        them until it expired.
        """
        from strongroom.vault.loader import load_weights

        manifest = self.manifest(name, version)
        if lazy:
            return load_weights(self, manifest, lazy=True, framework=framework, into=into)
        full = _FullLoad(self, manifest)
        try:
            return load_weights(full, manifest, framework=framework, into=into)
        finally:
            full.evidence.finish()

    # -- verify / export ------------------------------------------------------

    def verify(
        self, name: str, version: int | None = None, *, progress: Progress | None = None
    ) -> ArtifactCheck:
        """Check every blob: ciphertext hash, header pin, every chunk, plaintext hash.

        Each blob is opened once: hashed, then read through the gate-backed reader.
        """
        manifest = self.manifest(name, version)
        total = 0
        for entry in manifest.files:
            obj = f"{manifest.ref}/{entry.path}"
            source = self._open_source(entry.blob)
            try:
                if len(source) != entry.ct_size:
                    raise IntegrityError(
                        f"blob is {len(source)} bytes, the manifest says {entry.ct_size}", obj=obj
                    )
                digest = hashlib.sha256()
                step = 8 << 20
                release = getattr(source, "release", None)
                for off in range(0, len(source), step):
                    digest.update(source.read_at(off, min(step, len(source) - off)))
                    if release is not None:
                        release(off, step)
                if digest.hexdigest() != entry.ct_sha256:
                    raise IntegrityError("ciphertext SHA-256 does not match the manifest", obj=obj)
                with self._reader(source, manifest, entry, "verify") as reader:
                    plain = hashlib.sha256()
                    for i in range(reader.num_chunks):
                        chunk = reader.decrypt_chunk(i)
                        plain.update(chunk)
                        if progress:
                            progress(len(chunk))
                    if plain.hexdigest() != entry.sha256:
                        raise IntegrityError("plaintext SHA-256 does not match the manifest",
                                             obj=obj)
            finally:
                _close(source)
            total += entry.size
        self.record("weights.verify", manifest.ref, "ok", files=len(manifest.files), nbytes=total)
        return ArtifactCheck(manifest.ref, len(manifest.files), total)

    def export(
        self,
        name: str,
        dest: Path,
        *,
        reason: str,
        version: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Write the plaintext files to ``dest`` (a new directory): an explicit, audited act."""
        if not reason.strip():
            raise InvalidInput(
                "an export needs a reason",
                obj="export",
                remedy="pass --reason 'why this copy is needed'",
            )
        manifest = self.manifest(name, version)
        if os.path.lexists(dest):  # a dangling symlink too: the rename would fail late
            raise AlreadyExists(
                "export destination already exists", obj=str(dest), remedy="name a new directory"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
        self.record(
            "weights.export",
            manifest.ref,
            "allow",
            reason=reason,
            dest=str(dest),
            nbytes=manifest.total_size,
        )
        tmp.mkdir(mode=0o700)
        try:
            for entry in manifest.files:
                target = tmp / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with (
                    self.open_reader(manifest, entry, f"export: {reason}") as reader,
                    open(target, "xb") as out,
                ):
                    digest = hashlib.sha256()
                    for i in range(reader.num_chunks):
                        chunk = reader.decrypt_chunk(i)
                        digest.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != entry.sha256:
                    raise IntegrityError(
                        "plaintext SHA-256 does not match the manifest", obj=str(target)
                    )
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


class _FullLoad:
    """The shard readers of one full load: every shard's key under one load evidence.

    Keys are still released one shard at a time, when the load comes to the
    shard, and each is zeroed as soon as that shard's reader is open; releasing
    them all up front (``release_many``) would keep every shard's key in memory
    while the shards before it decrypt, and would release (and charge) keys for
    shards a failed load never reaches, to save a local call per shard. A reader for
    another manifest or purpose (``file_bytes`` after the load) signs its own.
    """

    def __init__(self, vault: Vault, manifest: Manifest, purpose: str = "load") -> None:
        self.vault = vault
        self.settings = vault.settings
        self.manifest = manifest
        self.evidence = LoadEvidence(
            lambda: vault.identity, manifest.ref,
            [manifest.shard(f) for f in manifest.files if f.kind == "safetensors"], purpose)

    def open_reader(self, manifest: Manifest, entry: FileEntry, purpose: str
                    ) -> contextlib.AbstractContextManager[age.AgeReader]:
        """The vault's reader; the shard's key under the load's evidence where it covers it."""
        load = self.evidence if manifest is self.manifest else None
        return self.vault.open_reader(manifest, entry, purpose, load=load)


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        close()

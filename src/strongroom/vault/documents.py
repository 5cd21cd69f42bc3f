"""Secret documents: algorithmic secrets (design notes, training recipes, configs) kept like weights.

A document is an artifact of kind ``document``: one age blob under its own
file key (wrapped by the sealed keyring), described by a manifest signed with
the vault's key that carries its compartments and, in its metadata, its
classification. Reading goes through the same release gate as weights (purpose
``read``), so it needs a Grant the gate verifies; the plaintext is returned in
memory only::

    add_document(vault, Path("recipe.md"), name="recipe", classification="secret",
                 compartments=["atlas"])
    list_documents(vault)
    text = read_document(vault, "recipe")          # AccessDenied / ApprovalRequired without a Grant

Do not write the plaintext anywhere but where the reader asked for it
(``strongroom docs read`` prints it to stdout); every add and read is audited.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.crypto import age
from strongroom.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    StrongroomError,
)
from strongroom.store.tables.vault import Artifact, ArtifactFile
from strongroom.vault.importer import SourceFile, encrypt_file
from strongroom.vault.manifest import Manifest, check_file_path, check_name
from strongroom.vault.vault import Vault

__all__ = [
    "CLASSIFICATIONS",
    "CLASSIFICATION_KEY",
    "DOCUMENT_KIND",
    "MAX_DOCUMENT_BYTES",
    "DocumentSummary",
    "add_document",
    "list_documents",
    "read_document",
]

#: Artifact kind of secret documents.
DOCUMENT_KIND = "document"
#: Manifest metadata key of the classification (the gate reads it: ``access.evidence``).
CLASSIFICATION_KEY = "strongroom.classification"
#: Levels, lowest first (the same names as ``strongroom.access.directory.LEVELS``).
CLASSIFICATIONS = ("public", "internal", "confidential", "secret", "top-secret")
#: Documents are read whole into memory: keep them small.
MAX_DOCUMENT_BYTES = 64 << 20


@dataclass(frozen=True)
class DocumentSummary:
    """One row of ``docs ls``."""

    name: str
    version: int
    classification: str
    compartments: tuple[str, ...]
    size: int
    created: str


@dataclass(frozen=True)
class _Wrapped:
    stanza: age.Stanza

    def wrap(self, file_key: bytes) -> list[age.Stanza]:
        return [self.stanza]


def add_document(
    vault: Vault,
    path: Path,
    *,
    name: str,
    classification: str,
    compartments: Sequence[str] = (),
    new_version: bool = False,
) -> Manifest:
    """Encrypt ``path`` into the vault as a secret document; its signed manifest."""
    check_name(name, what="document name")
    for c in compartments:
        check_name(c, what="compartment name")
    if classification not in CLASSIFICATIONS:
        raise InvalidInput(f"unknown classification {classification!r}", obj=name,
                           remedy="use one of " + ", ".join(CLASSIFICATIONS))
    if not path.is_file():
        raise NotFound("document file not found", obj=str(path))
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                           obj=str(path), remedy="store large files as weights artifacts")
    with vault.store.session() as s:
        row = s.execute(select(func.max(Artifact.version), func.min(Artifact.kind))
                        .where(Artifact.name == name)).one()
    current, kind = row
    if current is not None and (kind != DOCUMENT_KIND or not new_version):
        raise AlreadyExists(f"an artifact named {name!r} already exists", obj=name,
                            remedy="choose another --name (or --new-version for a document)")
    version = 1 if current is None else int(current) + 1
    filename = check_file_path(path.name)
    keys = vault.keys
    enc = encrypt_file(SourceFile(path, filename, "opaque", size), vault.blobs,
                       lambda blob_id, key: [_Wrapped(keys.wrap_file_key(blob_id, key))],
                       threads=1)
    manifest = Manifest(name=name, version=version, kind=DOCUMENT_KIND,
                        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        compartments=tuple(sorted(set(compartments))), files=(enc.entry,),
                        metadata={CLASSIFICATION_KEY: classification})
    try:
        envelope = manifest.sign((vault.manifest_key, lambda m: keys.sign("manifest", m)))
        vault.record("documents.add", manifest.ref, "allow", classification=classification,
                     compartments=list(manifest.compartments), nbytes=size)
        with vault.store.session() as s:
            artifact = Artifact(name=name, version=version, kind=DOCUMENT_KIND,
                                created_at=datetime.now(UTC), total_size=size,
                                manifest_json=envelope, manifest_sig="dsse")
            e = enc.entry
            artifact.files = [ArtifactFile(path=e.path, blob_id=e.blob, kind=e.kind, size=e.size,
                                           sha256=e.sha256, ct_size=e.ct_size,
                                           ct_sha256=e.ct_sha256)]
            s.add(artifact)
    except BaseException as exc:
        with contextlib.suppress(StrongroomError, OSError):
            vault.blobs.delete(enc.entry.blob)
        if isinstance(exc, StorageError) and isinstance(exc.__cause__, DbIntegrityError):
            raise AlreadyExists(f"{name}@{version} was created concurrently", obj=name,
                                remedy="retry with --new-version") from exc
        raise
    return manifest


def _document(vault: Vault, name: str, version: int | None) -> Manifest:
    manifest = vault.manifest(name, version)
    if manifest.kind != DOCUMENT_KIND or len(manifest.files) != 1:
        raise NotFound(f"{manifest.ref} is not a secret document", obj=name,
                       remedy="`strongroom docs ls` lists documents")
    return manifest


def list_documents(vault: Vault) -> list[DocumentSummary]:
    """Every document version (manifests verified), by name then version."""
    with vault.store.session() as s:
        rows = s.execute(select(Artifact.name, Artifact.version)
                         .where(Artifact.kind == DOCUMENT_KIND)
                         .order_by(Artifact.name, Artifact.version)).all()
    out = []
    for name, version in rows:
        m = _document(vault, name, version)
        out.append(DocumentSummary(m.name, m.version, m.metadata.get(CLASSIFICATION_KEY, "?"),
                                   tuple(m.compartments), m.total_size, m.created))
    return out


def read_document(vault: Vault, name: str, version: int | None = None) -> bytes:
    """The document's plaintext, through the release gate (purpose ``read``); audited."""
    manifest = _document(vault, name, version)
    entry = manifest.files[0]
    with vault.open_reader(manifest, entry, "read") as reader:
        plain = b"".join(bytes(reader.decrypt_chunk(i)) for i in range(reader.num_chunks))
    if hashlib.sha256(plain).hexdigest() != entry.sha256:
        raise IntegrityError("plaintext SHA-256 does not match the manifest", obj=manifest.ref)
    vault.record("documents.read", manifest.ref, "allow", nbytes=len(plain))
    return plain

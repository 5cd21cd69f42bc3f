"""Artifact manifests: what an artifact version holds, signed by the vault.

A manifest names every file of one artifact version with its plaintext size
and SHA-256, its ciphertext blob, size and SHA-256, its payload cipher, and the
SHA-256 of the blob's age header (which pins the wrapped file key and the
cipher, so one shard's blob cannot be swapped for another's), plus a tensor index (name -> file, dtype, shape,
absolute byte range). It is canonical JSON in a DSSE envelope signed with the
vault's Ed25519 key; the rows in the database are never trusted without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto.dsse import ExternalKey, key_id, sign_statement, verify_statement
from strongroom.crypto.stream import CHACHA20_POLY1305, CIPHERS
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.release.request import Shard

__all__ = [
    "MANIFEST_PAYLOAD_TYPE",
    "FileEntry",
    "Manifest",
    "TensorRef",
    "check_name",
]

MANIFEST_PAYLOAD_TYPE = "application/vnd.strongroom.manifest.v1+json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9._ +=,@-]{0,199}$")


def check_name(name: str, *, what: str = "artifact name") -> str:
    """Return ``name`` if it is a valid artifact or compartment name."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid {what} {name!r}",
            remedy="use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_file_path(path: str) -> str:
    """Return ``path`` if it is a safe relative path inside an artifact."""
    parts = path.split("/")
    if not path or any(not _PATH_PART.match(p) or p in (".", "..") for p in parts):
        raise InvalidInput(
            f"unsafe file path {path!r} in artifact",
            remedy="file names may use letters, digits and . _ + = , @ - and must not contain '..'",
        )
    return path


@dataclass(frozen=True)
class FileEntry:
    """One file of an artifact and the encrypted blob that holds it."""

    path: str
    blob: str
    kind: str  # "safetensors" or "opaque"
    size: int
    sha256: str
    ct_size: int
    ct_sha256: str
    header_sha256: str
    #: The blob's payload cipher (``CIPHERS``); absent from the manifest for age's own.
    cipher: str = CHACHA20_POLY1305

    def to_json(self) -> dict[str, Any]:
        """The manifest form (``cipher`` only when it is not age's ChaCha20-Poly1305)."""
        extra = {} if self.cipher == CHACHA20_POLY1305 else {"cipher": self.cipher}
        return extra | {
            "path": self.path,
            "blob": self.blob,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "ct_size": self.ct_size,
            "ct_sha256": self.ct_sha256,
            "header_sha256": self.header_sha256,
        }


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: file, dtype, shape, byte range [start, end)."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.start


@dataclass(frozen=True)
class Manifest:
    """A verified manifest of one artifact version."""

    name: str
    version: int
    kind: str
    created: str
    compartments: tuple[str, ...]
    files: tuple[FileEntry, ...]
    tensors: Mapping[str, TensorRef] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def total_size(self) -> int:
        """Plaintext bytes of every file."""
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileEntry:
        """The entry of the file at ``path``."""
        for f in self.files:
            if f.path == path:
                return f
        raise InvalidInput(f"no file {path!r} in this artifact", obj=self.ref)

    def shard(self, entry: FileEntry) -> Shard:
        """What a key release names of ``entry``: this artifact, its path, blob and size."""
        return Shard(self.ref, entry.path, entry.blob, entry.size)

    def to_json(self) -> dict[str, Any]:
        """The statement that gets signed."""
        return {
            "_type": "strongroom.manifest/v1",
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "created": self.created,
            "compartments": sorted(self.compartments),
            "files": [f.to_json() for f in self.files],
            "tensors": {
                t.name: {
                    "file": t.file,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "start": t.start,
                    "end": t.end,
                }
                for t in self.tensors.values()
            },
            "metadata": dict(self.metadata),
        }

    def sign(self, key: Ed25519PrivateKey | ExternalKey) -> str:
        """The DSSE envelope of this manifest signed by ``key``."""
        return sign_statement(self.to_json(), MANIFEST_PAYLOAD_TYPE, key)

    @classmethod
    def verify(cls, envelope: str, key: Ed25519PublicKey, *, obj: str) -> Manifest:
        """Parse a signed manifest, refusing it unless ``key`` signed it."""
        data = verify_statement(envelope, MANIFEST_PAYLOAD_TYPE, {key_id(key): key}, obj=obj)
        try:
            if data.get("_type") != "strongroom.manifest/v1":
                raise ValueError("unknown manifest type")
            files = tuple(FileEntry(**f) for f in data["files"])
            for f in files:
                if f.cipher not in CIPHERS:
                    raise ValueError(f"unknown cipher {f.cipher!r} for {f.path!r}")
            tensors = {
                name: TensorRef(
                    name, t["file"], t["dtype"], tuple(t["shape"]), int(t["start"]), int(t["end"])
                )
                for name, t in data["tensors"].items()
            }
            return cls(
                name=data["name"],
                version=int(data["version"]),
                kind=data["kind"],
                created=data["created"],
                compartments=tuple(data["compartments"]),
                files=files,
                tensors=tensors,
                metadata=dict(data.get("metadata", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(
                f"signed manifest has an unexpected shape ({exc})", obj=obj
            ) from exc

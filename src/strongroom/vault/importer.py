"""Encrypted import: each file of a model becomes its own age blob with its own file key.

Nothing is recorded until every blob is written, fsync'd and renamed into
place: a failure at any point (bad file, full disk, audit log down) deletes the
blobs already written and leaves no artifact visible.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound
from strongroom.scanning.tensorindex import TensorEntry, read_index
from strongroom.vault.blobs import BlobStore, new_blob_id
from strongroom.vault.manifest import FileEntry, check_file_path

__all__ = ["EncryptedFile", "RecipientsFor", "SourceFile", "collect_files", "encrypt_file"]

Progress = Callable[[int], None]

#: Bytes of ciphertext kept to read back the age header (ours are well under 4 KiB).
_HEAD_CAPTURE = 64 * 1024


@dataclass(frozen=True)
class SourceFile:
    """A plaintext file to import: its path on disk and its name inside the artifact."""

    path: Path
    name: str
    kind: str
    size: int


@dataclass(frozen=True)
class EncryptedFile:
    """A file after import: its manifest entry and tensor index."""

    entry: FileEntry
    tensors: list[TensorEntry]
    metadata: dict[str, str]


def collect_files(path: Path) -> list[SourceFile]:
    """The files to import from a ``.safetensors`` file or a directory of shards."""
    if not path.exists():
        raise NotFound("no such file or directory", obj=str(path), remedy="check the path")
    if path.is_symlink():
        raise InvalidInput("refusing to import a symbolic link", obj=str(path))
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InvalidInput(
                "a single file must be a .safetensors file",
                obj=str(path),
                remedy="import the directory that holds it to keep it as an opaque file",
            )
        return [SourceFile(path, path.name, "safetensors", path.stat().st_size)]
    files: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            rel = full.relative_to(path).as_posix()
            if full.is_symlink():
                raise InvalidInput("refusing to import a symbolic link", obj=str(full))
            if not full.is_file():
                raise InvalidInput("not a regular file", obj=str(full))
            check_file_path(rel)
            kind = "safetensors" if fname.endswith(".safetensors") else "opaque"
            files.append(SourceFile(full, rel, kind, full.stat().st_size))
    if not files:
        raise InvalidInput("directory holds no files to import", obj=str(path))
    if not any(f.kind == "safetensors" for f in files):
        raise InvalidInput(
            "directory holds no .safetensors file",
            obj=str(path),
            remedy="convert the weights to safetensors first",
        )
    return files


class _HashingReader:
    """A binary reader that hashes what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.digest.update(memoryview(buffer)[:n])
            self.count += n
        return int(n or 0)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class _HashingWriter:
    """A binary writer into a blob that hashes what passes through it."""

    def __init__(self, sink: object) -> None:
        self._sink = sink
        self.digest = hashlib.sha256()
        self.count = 0
        self.head = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self.digest.update(view)
        if len(self.head) < _HEAD_CAPTURE:
            self.head += view[: _HEAD_CAPTURE - len(self.head)]
        self._sink.write(view)  # type: ignore[attr-defined]
        self.count += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


#: Given a new blob's id and its file key, the recipients to wrap the key to.
RecipientsFor = Callable[[str, bytes], Sequence[age.Recipient]]


def encrypt_file(
    source: SourceFile,
    blobs: BlobStore,
    recipients_for: RecipientsFor,
    *,
    threads: int,
    progress: Progress | None = None,
    cipher: str = age.CHACHA20_POLY1305,
) -> EncryptedFile:
    """Encrypt one file into a new committed blob; returns its manifest entry.

    ``cipher``: age's ChaCha20-Poly1305 payload, or the AES-256-GCM mode.
    """
    tensors: list[TensorEntry] = []
    metadata: dict[str, str] = {}
    if source.kind == "safetensors":
        tensors, metadata = read_index(str(source.path), obj=str(source.path))
    blob_id = new_blob_id()
    file_key = bytearray(age.new_file_key())
    try:
        recipients = recipients_for(blob_id, bytes(file_key))
        with open(source.path, "rb") as fh, blobs.writer(blob_id) as writer:
            reader = _HashingReader(fh)
            out = _HashingWriter(writer)
            age.encrypt_stream(
                reader,  # type: ignore[arg-type]
                out,  # type: ignore[arg-type]
                recipients,
                file_key=bytes(file_key),
                threads=threads,
                progress=progress,
                cipher=cipher,
            )
            if reader.count != source.size:
                raise InvalidInput(
                    f"file changed size while being imported ({source.size} -> {reader.count} bytes)",
                    obj=str(source.path),
                    remedy="do not modify files while importing them",
                )
            writer.commit()
        header = age.parse_header(bytes(out.head))
        assert header is not None  # complete=True raises rather than returning None
    finally:
        file_key[:] = bytes(len(file_key))
    entry = FileEntry(
        path=source.name,
        blob=blob_id,
        kind=source.kind,
        size=reader.count,
        sha256=reader.digest.hexdigest(),
        ct_size=out.count,
        ct_sha256=out.digest.hexdigest(),
        header_sha256=hashlib.sha256(out.head[: header.size]).hexdigest(),
        cipher=header.cipher,
    )
    return EncryptedFile(entry, tensors, metadata)

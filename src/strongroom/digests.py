"""SHA-256 of files, and the inventory of a directory's files, as signed bundles list them.

    sha256_file(path)        # (size, hex digest), read in chunks
    file_inventory(root)     # {"a/b.bin": {"size": 3, "sha256": "..."}, ...}, sorted

Airgap transfer bundles, backups and model signatures hash with these, so a
listed size and digest mean the same thing everywhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_inventory", "sha256_file"]


def sha256_file(path: Path) -> tuple[int, str]:
    """The size of ``path`` as read and its SHA-256 (hex)."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        size = fh.tell()
    return size, digest.hexdigest()


def file_inventory(root: Path) -> dict[str, dict[str, int | str]]:
    """Every regular file under ``root`` by POSIX path relative to it: size and SHA-256."""
    files: dict[str, dict[str, int | str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size, digest = sha256_file(path)
        files[path.relative_to(root).as_posix()] = {"size": size, "sha256": digest}
    return files

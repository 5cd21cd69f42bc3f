"""Which payload mode each stored blob is in: age's ChaCha20-Poly1305 or AES-256-GCM.

For reports (``strongroom doctor``, the posture assessment), not for access::

    modes = payload_modes(store)          # {"chacha20-poly1305": [...], "aes-256-gcm": [...]}
    modes["aes-256-gcm"]                  # ["name@version/path", ...]
    payload_modes(store, manifest_key)    # only manifests that verify; the rest under "unverified"

Without a key the stored manifests are read as they are (the doctor runs
without the barrier); with one, each is verified first. A load never relies
on this: the reader takes the cipher from the blob's pinned header.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

from sqlalchemy import select

from strongroom.crypto.stream import CHACHA20_POLY1305, CIPHERS
from strongroom.errors import StrongroomError
from strongroom.store.tables.vault import Artifact
from strongroom.vault.manifest import Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.store.db import Store

__all__ = ["UNVERIFIED", "payload_modes", "summarize"]

#: Where files whose manifest did not verify (or did not parse) are counted.
UNVERIFIED = "unverified"


def _files(envelope: str, key: Ed25519PublicKey | None, ref: str) -> list[tuple[str, str]]:
    """(path, cipher) of every file the manifest lists; raises on a manifest that fails."""
    if key is not None:
        return [(f.path, f.cipher) for f in Manifest.verify(envelope, key, obj=ref).files]
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return [(str(f["path"]), str(f.get("cipher", CHACHA20_POLY1305))) for f in statement["files"]]


def payload_modes(store: Store, key: Ed25519PublicKey | None = None) -> dict[str, list[str]]:
    """cipher -> ``name@version/path`` of every stored file (every cipher present as a key)."""
    with store.session(readonly=True) as s:
        rows = [(a.name, a.version, a.manifest_json) for a in s.scalars(select(Artifact))]
    modes: dict[str, list[str]] = {c: [] for c in CIPHERS}
    for name, version, envelope in sorted(rows):
        ref = f"{name}@{version}"
        try:
            files = _files(envelope, key, ref)
        except (StrongroomError, ValueError, KeyError, TypeError):
            modes.setdefault(UNVERIFIED, []).append(ref)
            continue
        for path, cipher in files:
            modes.setdefault(cipher if cipher in CIPHERS else UNVERIFIED, []).append(
                f"{ref}/{path}")
    return modes


def summarize(modes: dict[str, list[str]]) -> str:
    """``3 files in aes-256-gcm, 12 in chacha20-poly1305`` (modes with none left out)."""
    parts = [f"{len(v)} {'file' if len(v) == 1 else 'files'} in {k}" for k, v in modes.items() if v]
    return ", ".join(parts) or "no files stored"

"""How many bytes a shard's file key opens, read from the artifact's signed manifest.

The release gate charges egress budgets with this figure, never with the
number a client sends (DESIGN rule 2, "derive, don't trust"): a file key
decrypts the whole shard, so a release is charged the shard's plaintext size
as the manifest signed by the barrier's manifest key states it. A blob that is
not the named shard of the named artifact in its signed manifest releases
nothing.

Use it like this::

    sizes = SignedShardSizes(store, lambda: keyring.signing_key("manifest").public_key())
    nbytes = sizes.size(request)   # request.artifact, .shard, .blob_id; never .nbytes
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from strongroom.errors import AccessDenied, IntegrityError
from strongroom.store.db import Store
from strongroom.store.tables.vault import Artifact
from strongroom.vault.manifest import Manifest

if TYPE_CHECKING:
    from strongroom.release.request import ReleaseRequest

__all__ = ["SignedShardSizes"]

#: Verified manifests kept (a manifest is immutable per ref and verifying key).
_CACHE_SIZE = 10_000


class SignedShardSizes:
    """Shard sizes from signed manifests, verified once per (artifact, manifest key)."""

    def __init__(self, store: Store, manifest_key: Callable[[], Ed25519PublicKey]) -> None:
        self.store = store
        self.manifest_key = manifest_key
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, bytes], dict[tuple[str, str], int]] = {}

    def size(self, request: ReleaseRequest) -> int:
        """The plaintext size of the request's shard, stored as its blob.

        Raises AccessDenied when the artifact has no manifest, the manifest does
        not verify, or it does not list this shard with this blob.
        """
        artifact, obj = request.artifact, request.obj
        mkey = self.manifest_key()
        cache_key = (artifact, mkey.public_bytes_raw())
        with self._lock:
            files = self._sizes.get(cache_key)
        if files is None:
            files = self._load(artifact, mkey, obj)
            with self._lock:
                if len(self._sizes) >= _CACHE_SIZE:
                    self._sizes.clear()
                self._sizes[cache_key] = files
        found = files.get((request.shard, request.blob_id))
        if found is None:
            raise AccessDenied("the blob is not this shard of this artifact in its signed "
                               "manifest", obj=obj, remedy="release keys only for the shards "
                               "the artifact's signed manifest lists")
        return found

    def _load(self, artifact: str, mkey: Ed25519PublicKey, obj: str) -> dict[tuple[str, str], int]:
        name, _, version = artifact.partition("@")
        if not name or not version.isdigit():
            raise AccessDenied("the artifact must be named name@version", obj=obj,
                               remedy="name the artifact as `strongroom weights ls` shows it")
        with self.store.session(readonly=True) as s:
            envelope = s.scalars(select(Artifact.manifest_json).where(
                Artifact.name == name, Artifact.version == int(version))).first()
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
        return {(f.path, f.blob): int(f.size) for f in manifest.files}

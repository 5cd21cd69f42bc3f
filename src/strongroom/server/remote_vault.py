"""Loading weights from a server: :class:`RemoteVault`, the client side of ``open_weights``.

With ``STRONGROOM_URL`` set, :func:`strongroom.open_weights` loads through this
class instead of a local data directory::

    with strongroom.open_weights("minilm") as w:          # STRONGROOM_URL, _IDENTITY set
        emb = w["embeddings.word_embeddings.weight"]

Per shard: the manifest is verified with the pinned manifest key, the blob's
header is checked against the manifest's pin, the file key is released by the
server's gate (signed evidence; audited and metered there; a full load asks for
every shard's key in one request under one load evidence, ``POST
/v1/keys/release-many``, a lazy load for each shard as it is opened), and the ciphertext
is read by byte ranges — on a full load each load thread reads its part of a
shard in order, :data:`READ_AHEAD_FACTOR` times what it asks per request (at
most :data:`READ_AHEAD` bytes); a lazy load fetches exactly the tensor's
chunks — and decrypted here, in memory. Nothing is written to disk. Tensors,
errors and ``Weights`` are the embedded ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from strongroom.server.client import Client
from strongroom.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Buffer

    from strongroom.crypto.age import AgeReader
    from strongroom.vault.loader import Weights
    from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["READ_AHEAD", "READ_AHEAD_FACTOR", "ReadAheadSource", "RemoteVault"]

#: Most bytes one ranged request of a full load fetches.
READ_AHEAD = 16 << 20
#: A full load's request fetches this many times the bytes asked for (up to READ_AHEAD).
READ_AHEAD_FACTOR = 4


class ReadAheadSource:
    """A :class:`~strongroom.crypto.age.ByteSource` for full loads: fewer, larger requests.

    The age reader's threads each decrypt a contiguous part of the shard,
    asking for a few MiB at a time in order. Each thread's read fetches
    ``READ_AHEAD_FACTOR`` times its size (at most ``READ_AHEAD`` bytes) and
    serves that thread's next reads from the surplus, so a 1 GiB shard takes
    about 70 requests instead of 260; what a thread over-reads at the end of its
    part is at most a few MiB. Each thread holds one window of ciphertext.
    """

    def __init__(self, client: Client, path: str, size: int, *,
                 window: int | None = None, factor: int = READ_AHEAD_FACTOR) -> None:
        self.client, self.path, self.size = client, path, size
        self.window, self.factor = window or READ_AHEAD, factor
        self._local = threading.local()

    def __len__(self) -> int:
        return self.size

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        """``size`` bytes at ``offset`` (fewer at the end), from this thread's window."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        held: tuple[int, bytes] | None = getattr(self._local, "window", None)
        if held is not None and held[0] <= offset and end <= held[0] + len(held[1]):
            return memoryview(held[1])[offset - held[0]: end - held[0]]
        stop = min(self.size, max(end, offset + min(self.window, self.factor * (end - offset))))
        data = self.client.byte_range(self.path, offset, stop, self.size)
        self._local.window = (offset, data)
        return memoryview(data)[: end - offset]


class RemoteVault:
    """The loading face of a vault that lives behind a strongroom server."""

    def __init__(self, client: Client, settings: Settings | None = None) -> None:
        self.client = client
        self.settings = settings or Settings()

    @classmethod
    def from_env(cls) -> RemoteVault:
        """``STRONGROOM_URL`` as ``STRONGROOM_IDENTITY`` (threads: ``STRONGROOM_THREADS``)."""
        return cls(Client.from_env())

    def manifest(self, name: str, version: int | None = None) -> Manifest:
        """The artifact's manifest, verified with the pinned manifest key."""
        return self.client.verified_manifest(name, version)

    @contextlib.contextmanager
    def open_reader(self, manifest: Manifest, entry: FileEntry, purpose: str
                    ) -> Iterator[AgeReader]:
        """A reader over one shard: key from the server's gate, ciphertext by exact range."""
        with self.client.open_reader(manifest, entry, purpose) as reader:
            yield reader

    def open_weights(self, name: str, version: int | None = None, *, lazy: bool = False,
                     framework: str = "numpy", into: Mapping[str, Buffer] | None = None
                     ) -> Weights:
        """A read-only mapping of tensor name -> array, decrypted in this process's memory.

        ``into``: the caller's buffers per shard path (see ``loader.shard_buffers``).
        """
        from strongroom.vault.loader import load_weights

        manifest = self.manifest(name, version)
        if lazy:
            return load_weights(self, manifest, lazy=True, framework=framework, into=into)
        with contextlib.closing(_FullLoad(self, manifest)) as full:  # zeroes keys left unused
            return load_weights(full, manifest, framework=framework, into=into)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> RemoteVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FullLoad:
    """The shard readers of a full load: every shard's key from one release up front
    (``POST /v1/keys/release-many``, one load evidence), ciphertext through a
    :class:`ReadAheadSource`.

    The keys are asked for at the first shard's reader, with its purpose; each is
    handed to its shard's reader (which zeroes it) and :meth:`close` zeroes any left.
    A reader for another purpose or manifest, or a shard the batch did not cover,
    has its key released alone, as does every shard of a server without the route.
    """

    def __init__(self, vault: RemoteVault, manifest: Manifest) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.manifest = manifest
        self._purpose: str | None = None  # the purpose the keys were released for
        self._keys: dict[str, bytearray] = {}
        self._lock = threading.Lock()

    def _key(self, manifest: Manifest, entry: FileEntry, purpose: str) -> bytearray | None:
        """``entry``'s key from the batch (released on the first call), or None."""
        from strongroom.errors import NotFound
        from strongroom.release.request import MAX_LOAD_SHARDS

        if manifest is not self.manifest:
            return None
        with self._lock:
            if self._purpose is None:
                self._purpose = purpose
                loads = [f for f in manifest.files if f.kind == "safetensors"]
                try:
                    for i in range(0, len(loads), MAX_LOAD_SHARDS):
                        part = loads[i: i + MAX_LOAD_SHARDS]
                        keys = self.vault.client.release_many(
                            manifest.ref, [(f.path, f.blob) for f in part], purpose)
                        self._keys.update(zip((f.path for f in part), keys, strict=True))
                except NotFound:
                    pass  # a server older than the route: shard by shard
            return self._keys.pop(entry.path, None) if purpose == self._purpose else None

    @contextlib.contextmanager
    def open_reader(self, manifest: Manifest, entry: FileEntry, purpose: str
                    ) -> Iterator[AgeReader]:
        """A reader over one shard whose whole ciphertext will be read."""
        client = self.vault.client
        key = self._key(manifest, entry, purpose)
        source = ReadAheadSource(
            client, f"/v1/weights/{manifest.name}/versions/{manifest.version}/blobs/{entry.blob}",
            entry.ct_size)
        with client.open_reader(manifest, entry, purpose, source=source, file_key=key) as reader:
            yield reader

    def close(self) -> None:
        """Zero the keys no reader took."""
        with self._lock:
            keys, self._keys = self._keys, {}
        for key in keys.values():
            key[:] = bytes(len(key))

"""Loading weights from a server: :class:`RemoteVault`, the client side of ``open_weights``.

With ``STRONGROOM_URL`` set, :func:`strongroom.open_weights` loads through this
class instead of a local data directory::

    with strongroom.open_weights("minilm") as w:          # STRONGROOM_URL, _IDENTITY set
        emb = w["embeddings.word_embeddings.weight"]

Per shard: the manifest is verified with the pinned manifest key, the blob's
header is checked against the manifest's pin, the file key is released by the
server's gate (signed evidence; audited and metered there), and the ciphertext
is read by exact byte ranges — several at once on a full load, only the
tensor's chunks on a lazy one — and decrypted here, in memory. Nothing is
written to disk. Tensors, errors and ``Weights`` are the embedded ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from strongroom.server.client import Client
from strongroom.settings import Settings

if TYPE_CHECKING:
    from strongroom.crypto.age import AgeReader
    from strongroom.vault.loader import Weights
    from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["RemoteVault"]


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
        """A reader over one shard: key from the server's gate, ciphertext by range."""
        with self.client.open_reader(manifest, entry, purpose) as reader:
            yield reader

    def open_weights(self, name: str, version: int | None = None, *, lazy: bool = False,
                     framework: str = "numpy") -> Weights:
        """A read-only mapping of tensor name -> array, decrypted in this process's memory."""
        from strongroom.vault.loader import load_weights

        return load_weights(self, self.manifest(name, version), lazy=lazy, framework=framework)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> RemoteVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

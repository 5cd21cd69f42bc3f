"""The key service protocol: what the vault, the CLI and the server call to use keys.

:class:`KeyService` is the interface custody offers to the layers above it;
the implementations live in :mod:`strongroom.runtime.services`
(``LocalKeyService`` in process, ``AgentKeyService`` over the local agent's
socket; ``key_service()`` returns the agent-backed one). Code below the runtime
(the vault, model signing) types against this protocol and is handed an
implementation::

    def sign_manifest(keys: KeyService, payload: bytes) -> bytes:
        return keys.sign("manifest", payload)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from strongroom.crypto.age import Stanza
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.release.request import ReleaseRequest

__all__ = ["KeyService", "ShardKeyWrapping", "SignPurpose"]

SignPurpose = Literal["manifest", "checkpoint"]


class KeyService(Protocol):
    """What the vault and the server call: status, wrap, release (the gate), sign, public keys."""

    def status(self) -> KeyringStatus:
        """Initialised, sealed, threshold, progress, KEK versions, backend, ceremony nonce."""
        ...

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Stanza:
        """Wrap under the newest KEK, record it for ``blob_id``; Sealed when sealed."""
        ...

    def release(self, request: ReleaseRequest) -> bytearray:
        """Run the release gate and return the file key; the caller zeroes it."""
        ...

    def sign(self, purpose: SignPurpose, message: bytes) -> bytes:
        """Ed25519 signature with the barrier's manifest or checkpoint key."""
        ...

    def public_keys(self) -> dict[str, bytes]:
        """Raw Ed25519 public keys: ``manifest``, ``checkpoint``, ``officer:<key id>``."""
        ...


@runtime_checkable
class ShardKeyWrapping(Protocol):
    """A key service that binds each file key to its artifact and shard when wrapping it.

    The ``threshold`` backend (:mod:`strongroom.runtime.threshold_keys`) wraps to the
    key servers' group key with vault, artifact, shard and blob as associated data;
    the importer calls this instead of ``wrap_file_key`` when the service offers it.
    """

    def wrap_shard_file_key(self, artifact: str, shard: str, blob_id: str, file_key: bytes) -> Stanza:
        """Wrap ``file_key`` for ``artifact``'s ``shard`` stored as ``blob_id``."""
        ...

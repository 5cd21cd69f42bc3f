"""``strongroom serve``'s release route on a threshold vault: file keys come from k key servers.

With ``STRONGROOM_FILE_KEYS=threshold`` (and ``STRONGROOM_THRESHOLD_SERVERS``,
``STRONGROOM_THRESHOLD_COMMITMENTS``, as for the vault host's own loads), a
remote client's ``POST /v1/keys/release`` for a blob wrapped to the group key
is answered through the key servers: the server relays the caller's own signed
release evidence with the artifact's signed manifest and the blob's pinned
header (:class:`~strongroom.runtime.threshold_keys.ThresholdKeyService`), each
key server decides on its own, and k verified partials give the file key the
route returns. The host's own log records the decision under the caller's
name. Blobs without a threshold stanza are released by the host's gate as before.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from strongroom.runtime.threshold_keys import wrapped_to_group

if TYPE_CHECKING:
    from collections.abc import Sequence

    from strongroom.crypto.age import Stanza
    from strongroom.release.request import ReleaseRequest
    from strongroom.runtime.threshold_keys import ThresholdKeyService
    from strongroom.server.context import ServerContext

__all__ = ["ThresholdReleases"]


class ThresholdReleases:
    """Releases of threshold blobs for one server process (the key servers' client built once)."""

    def __init__(self, ctx: ServerContext) -> None:
        from strongroom.keys.config import KeysSettings

        self.ctx = ctx
        self.enabled = KeysSettings().file_keys == "threshold"
        self._service: ThresholdKeyService | None = None
        self._lock = threading.Lock()

    def handles(self, stanzas: Sequence[Stanza]) -> bool:
        """Whether a blob with these header stanzas is released through the key servers."""
        return self.enabled and wrapped_to_group(stanzas)

    def service(self) -> ThresholdKeyService:
        """The key servers' client, built on first use and closed with the context."""
        from strongroom.keys.config import KeysSettings
        from strongroom.runtime.threshold_keys import ThresholdKeyService

        with self._lock:
            if self._service is None:
                self._service = ThresholdKeyService.from_settings(self.ctx.keys, KeysSettings())
                self.ctx.on_close(self.close)  # the key servers' connections end with the process's context
            return self._service

    def close(self) -> None:
        """Close the connections to the key servers (a later release opens them again)."""
        with self._lock:
            service, self._service = self._service, None
        if service is not None:
            service.close()

    def release(self, request: ReleaseRequest, actor: str) -> bytearray:
        """The file key from k key servers (the caller zeroes it); AccessDenied naming each refusal."""
        from strongroom.vault.vault import Vault

        ctx = self.ctx
        keys = self.service()
        vault = Vault(ctx.settings, ctx.store, ctx.blobs, keys, ctx.audit(), actor=actor)
        return keys.release_through(vault, request)

"""The ``threshold`` file-key backend as a key service: the vault wraps to the group key, k key servers release.

:class:`ThresholdKeyService` is a :class:`~strongroom.keys.protocol.KeyService`
around the host's own one (the local agent's): status, manifest and checkpoint
signatures and public keys stay with the host's keyring, but each file key the
importer wraps goes to the key servers' group key
(:class:`~strongroom.keys.threshold.ThresholdRecipient`, bound to vault,
artifact, shard and blob), never to the host's KEK, and each release goes to the
key servers through a :class:`~strongroom.runtime.threshold_client.ThresholdClient`
with the artifact's signed manifest and the blob's pinned header. The host's
keyring cannot open such a blob alone. A blob without a threshold stanza (an
artifact imported before the vault switched, a secret document, which names no
shard and is wrapped by the host keyring) is released by the host's own gate
as before.

:func:`strongroom.runtime.services.open_vault` builds it when
``STRONGROOM_FILE_KEYS=threshold`` (``STRONGROOM_THRESHOLD_SERVERS``,
``STRONGROOM_THRESHOLD_COMMITMENTS``), so ``strongroom weights import`` and
``open_weights`` use it; by hand::

    keys = ThresholdKeyService.from_settings(key_service(home), KeysSettings())
    vault = Vault.open(settings, keys=keys)
    keys.attach(vault)          # manifests and blob headers are read through the vault
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from strongroom.artifacts import ArtifactRef
from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound, Sealed
from strongroom.keys.threshold import STANZA_TYPE, ThresholdRecipient
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.threshold.group import Element

if TYPE_CHECKING:
    from strongroom.crypto.age import Stanza
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.keys.protocol import KeyService, SignPurpose
    from strongroom.release.request import ReleaseRequest
    from strongroom.vault.vault import Vault

__all__ = ["ThresholdKeyService", "load_commitments", "parse_servers"]

_SETTING_SERVERS = "STRONGROOM_THRESHOLD_SERVERS"
_SETTING_COMMITMENTS = "STRONGROOM_THRESHOLD_COMMITMENTS"


def parse_servers(text: str, *, obj: str = _SETTING_SERVERS,
                  schemes: tuple[str, ...] = ("http://", "https://")) -> list[tuple[str, str]]:
    """``name=URL,name=URL`` as (name, URL) pairs; InvalidInput naming the bad item (``obj``: the setting)."""
    servers: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(schemes):
            raise InvalidInput(f"key server {item!r} is not name=URL", obj=obj,
                               remedy=f"list the key servers as ks-a={schemes[0]}...,ks-b=...")
        servers.append((name.strip(), url.strip()))
    if len({n for n, _ in servers}) != len(servers):
        raise InvalidInput("a key server name is given twice", obj=obj,
                           remedy="give each key server one distinct name")
    return servers


def load_commitments(data: Any, *, obj: str) -> list[Element]:
    """The pinned Feldman commitments from their JSON form (a list of hex, or ``{"commitments": [...]}``)."""
    if isinstance(data, dict):
        data = data.get("commitments")
    if not isinstance(data, list) or not data:
        raise InvalidInput("the commitments file holds no list of commitments", obj=obj,
                           remedy="write the commitments of `GET /v1/keyserver/status` as a JSON list")
    try:
        return [Element.decode(bytes.fromhex(str(c)), what=obj) for c in data]
    except ValueError:
        raise InvalidInput("a commitment is not hex", obj=obj,
                           remedy="copy the commitments exactly as the key servers show them") from None


class ThresholdKeyService:
    """A key service whose file keys only k of the key servers release (host keyring for the rest)."""

    def __init__(self, inner: KeyService, client: ThresholdClient, *, vault_id: str) -> None:
        self.inner = inner
        self.client = client
        self.vault_id = vault_id
        self.group_key = client.commitments[0]
        self._vault: Vault | None = None

    @classmethod
    def from_settings(cls, inner: KeyService, settings: KeysSettings) -> ThresholdKeyService:
        """Built from ``STRONGROOM_THRESHOLD_*``; the vault id is the host keyring's (Sealed if none)."""
        servers = parse_servers(settings.threshold_servers)
        if not servers:
            raise InvalidInput("the threshold backend has no key servers", obj=_SETTING_SERVERS,
                               remedy="set STRONGROOM_THRESHOLD_SERVERS, or STRONGROOM_FILE_KEYS=keyring")
        path = settings.threshold_commitments
        if path is None:
            raise InvalidInput("the threshold backend has no pinned commitments", obj=_SETTING_COMMITMENTS,
                               remedy="set it to a JSON file of the group's commitments")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound("the commitments file does not exist", obj=str(path),
                           remedy=f"check {_SETTING_COMMITMENTS}") from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"the commitments file cannot be read ({type(exc).__name__})", obj=str(path),
                               remedy="write the commitments as a JSON list of hex strings") from None
        commitments = load_commitments(data, obj=str(path))
        status = inner.status()
        if status.vault_id is None:
            raise Sealed("the vault is not initialised", obj="keyring", remedy="run `strongroom init`")
        return cls(inner, ThresholdClient(servers, commitments, vault_id=status.vault_id),
                   vault_id=status.vault_id)

    def attach(self, vault: Vault) -> None:
        """Read signed manifests and blob headers through ``vault`` (the key servers check both)."""
        self._vault = vault

    def close(self) -> None:
        """Close the connections to the key servers."""
        self.client.close()

    # -- KeyService --------------------------------------------------------------

    def status(self) -> KeyringStatus:
        """The host keyring's status."""
        return self.inner.status()

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Stanza:
        """The host keyring's wrapping, for callers that name no shard (secret documents).

        Weights are imported through :meth:`wrap_shard_file_key`; documents stay
        under the keyring (``docs/threshold.md``, what is not built yet).
        """
        return self.inner.wrap_file_key(blob_id, file_key)

    def wrap_shard_file_key(self, artifact: str, shard: str, blob_id: str, file_key: bytes) -> Stanza:
        """One ``strongroom-threshold`` stanza: the file key wrapped to the group key only."""
        recipient = ThresholdRecipient(self.group_key, vault_id=self.vault_id, artifact=artifact,
                                       shard=shard, blob_id=blob_id)
        return recipient.wrap(file_key)[0]

    def release(self, request: ReleaseRequest) -> bytearray:
        """The file key from k key servers (the caller zeroes it); the host's gate for other blobs."""
        if not any(s.type == STANZA_TYPE for s in request.stanzas):
            return self.inner.release(request)
        vault = self._vault
        if vault is None:
            raise Sealed("the threshold key service is not attached to a vault", obj=request.obj,
                         remedy="open the vault through strongroom.runtime.services.open_vault")
        ref = ArtifactRef.parse(request.artifact)
        if ref.version is None:
            raise InvalidInput("the release names no artifact version", obj=request.obj)
        envelope = vault.manifest_envelope(ref.name, ref.version)
        source = vault.blobs.open(request.blob_id)
        try:
            header, head = age.read_header(source)
            head_bytes = bytes(head[: header.size])
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        released = self.client.release(request, envelope, head_bytes)
        # The host's own log says which key servers released it, and any that refused on policy.
        refused = [f"{r.server}: {r.kind}" for r in released.refusals if r.on_policy]
        vault.record("key.release", request.obj, "allow",
                     reason="key servers disagreed" if released.disagreement else "",
                     shard=request.shard, nbytes=request.nbytes, key_servers=released.answered,
                     refused=refused, purpose=request.purpose)
        return released.key

    def sign(self, purpose: SignPurpose, message: bytes) -> bytes:
        """The host keyring signs manifests and checkpoints."""
        return self.inner.sign(purpose, message)

    def public_keys(self) -> dict[str, bytes]:
        """The host keyring's public keys."""
        return self.inner.public_keys()

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

Rotating the group key: the key servers run a new ``dkg`` (each keeps its old
share, retired, for the blobs still wrapped to it); then
``keys.rewrap(old_commitments)`` releases each such blob's file key through the
old group (audited, purpose ``rewrap``), writes the blob again as a new blob
whose header wraps the same file key to the new group key (the payload is
copied as it is), re-signs the artifact's manifest and deletes the old blob;
finally the key servers' officers ``retire`` the old group key.

The commitments file pins each key server to its share index when it is
written by :func:`pins_from_statuses` and :func:`write_pins` (``strongroom
keyserver pin``, after setup and after every re-sharing); a list-only file
still works, but :meth:`ThresholdKeyService.from_settings` warns on stderr
(:func:`unpinned_warning`) because partials are then not pinned to servers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.artifacts import ArtifactRef
from strongroom.crypto import age
from strongroom.errors import InvalidInput, NotFound, Sealed, StrongroomError
from strongroom.keys.threshold import STANZA_TYPE, ThresholdRecipient, group_key_id
from strongroom.runtime.threshold_client import ThresholdClient, pinned_indices
from strongroom.threshold.group import Element
from strongroom.threshold.shares import public_share

if TYPE_CHECKING:
    from strongroom.crypto.age import Stanza
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.keys.protocol import KeyService, SignPurpose
    from strongroom.release.request import ReleaseRequest
    from strongroom.vault.manifest import FileEntry, Manifest
    from strongroom.vault.vault import Vault

__all__ = [
    "ThresholdKeyService",
    "load_commitments",
    "load_indices",
    "parse_servers",
    "pins_from_statuses",
    "unpinned_warning",
    "wrapped_to_group",
    "write_pins",
]

_SETTING_SERVERS = "STRONGROOM_THRESHOLD_SERVERS"
_SETTING_COMMITMENTS = "STRONGROOM_THRESHOLD_COMMITMENTS"


def wrapped_to_group(stanzas: Sequence[Stanza]) -> bool:
    """Whether a blob's header wraps its file key to a threshold group key."""
    return any(s.type == STANZA_TYPE for s in stanzas)


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


def load_indices(data: Any, *, obj: str) -> dict[str, int] | None:
    """Each key server's share index as recorded at setup (``{"commitments": [...], "indices":
    {"ks-a": 1, ...}}``); None for a file without them (partials are then not pinned to servers)."""
    if not isinstance(data, dict) or data.get("indices") is None:
        return None
    indices = data["indices"]
    if not isinstance(indices, dict):
        raise InvalidInput("the commitments file's indices are not an object", obj=obj,
                           remedy='write them as {"ks-a": 1, "ks-b": 2, ...}')
    return {str(name): index for name, index in indices.items()}


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


def unpinned_warning(path: Path | str) -> str:
    """What to tell the operator about a list-only commitments file at ``path`` (no indices)."""
    return (f"warning: the threshold commitments file {path} pins no share indices (a list-only file): "
            "a key server that relays another server's partial is counted as its own answer; run "
            f"`strongroom keyserver pin --out {path}` to pin each key server to its index")


#: Commitments files already warned about in this process (one warning each, not one per vault open).
_WARNED: set[str] = set()


def pins_from_statuses(statuses: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The pinned commitments file (``{"commitments": [...], "indices": {name: index}}``) from each
    configured key server's ``GET /v1/keyserver/status``; every server must be unsealed, set up,
    hold a share, and show the same commitments (else the server is named with the remedy)."""
    if not statuses:
        raise InvalidInput("no key servers to pin", obj=_SETTING_SERVERS,
                           remedy="list the key servers as ks-a=https://...,ks-b=...")
    commitments: list[str] | None = None
    first = ""
    indices: dict[str, int] = {}
    for name, st in statuses.items():
        if st.get("sealed", True):
            raise InvalidInput("the key server is sealed", obj=name,
                               remedy="unseal it with its custodians, then run `keyserver pin` again")
        if "index" not in st or "commitments" not in st:
            raise InvalidInput("the key server holds no share yet (no setup, or no accepted dealing)",
                               obj=name, remedy="finish the key generation or re-sharing on it first")
        shown = [str(c) for c in st["commitments"]]
        decoded = load_commitments(shown, obj=name)
        index = st["index"]
        if isinstance(index, int) and not isinstance(index, bool) and 1 <= index <= 255 and \
                public_share(index, decoded).hex() != st.get("public_share"):
            raise InvalidInput(f"the key server's public share is not the commitments' at its index {index}",
                               obj=name, remedy="it claims another server's index or shows the wrong share: "
                               "investigate it before pinning; nothing was written")
        if commitments is None:
            commitments, first = shown, name
        elif shown != commitments:
            raise InvalidInput(f"the key server shows other commitments than {first!r}", obj=name,
                               remedy="finish the re-sharing on every key server (each one's `accept`), "
                               "compare their status, then run `keyserver pin` again")
        indices[name] = index
    assert commitments is not None
    return {"commitments": commitments, "indices": pinned_indices(list(statuses), indices)}


def write_pins(path: Path, pins: Mapping[str, Any]) -> Path | None:
    """Write the pinned commitments file at ``path`` (whole or not at all). When ``path`` held
    another group key's commitments they are kept at ``<path>.previous`` (for ``keyserver rewrap
    --old-commitments``), and that path is returned."""
    load_commitments(pins, obj=str(path))
    pinned_indices(list(pins.get("indices") or {}), pins.get("indices"))
    previous: Path | None = None
    try:
        old = load_commitments(json.loads(path.read_text(encoding="utf-8")), obj=str(path))
    except (OSError, ValueError, StrongroomError):
        old = None
    if old is not None and old[0].hex() != pins["commitments"][0]:
        previous = path.with_name(path.name + ".previous")
        previous.write_bytes(path.read_bytes())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(pins), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    _WARNED.discard(str(path))
    return previous


class ThresholdKeyService:
    """A key service whose file keys only k of the key servers release (host keyring for the rest)."""

    def __init__(self, inner: KeyService, client: ThresholdClient, *, vault_id: str) -> None:
        self.inner = inner
        self.client = client
        self.vault_id = vault_id
        self.group_key = client.commitments[0]
        self._vault: Vault | None = None
        #: Clients of earlier group keys (by key id), for blobs not yet rewrapped.
        self._previous: dict[str, ThresholdClient] = {}

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
        indices = load_indices(data, obj=str(path))
        if indices is None and str(path) not in _WARNED:
            _WARNED.add(str(path))
            sys.stderr.write(f"strongroom: {unpinned_warning(path)}\n")
        status = inner.status()
        if status.vault_id is None:
            raise Sealed("the vault is not initialised", obj="keyring", remedy="run `strongroom init`")
        client = ThresholdClient(servers, commitments, vault_id=status.vault_id, indices=indices)
        return cls(inner, client, vault_id=status.vault_id)

    def attach(self, vault: Vault) -> None:
        """Read signed manifests and blob headers through ``vault`` (the key servers check both);
        closing the vault closes this service's connections to the key servers."""
        self._vault = vault
        vault.on_close(self.close)

    def close(self) -> None:
        """Close the connections to the key servers (of earlier group keys too)."""
        previous, self._previous = list(self._previous.values()), {}
        for client in previous:
            client.close()
        self.client.close()

    def _attached(self, obj: str) -> Vault:
        if self._vault is None:
            raise Sealed("the threshold key service is not attached to a vault", obj=obj,
                         remedy="open the vault through strongroom.runtime.services.open_vault")
        return self._vault

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
        if not wrapped_to_group(request.stanzas):
            return self.inner.release(request)
        return self.release_through(self._attached(request.obj), request)

    def release_through(self, vault: Vault, request: ReleaseRequest) -> bytearray:
        """The file key of a threshold blob from k key servers, the manifest and header read (and
        the host's decision recorded) through ``vault``: what ``strongroom serve``'s release route
        calls with a vault acting for its verified caller."""
        kids = [s.args[0] for s in request.stanzas if s.type == STANZA_TYPE and s.args]
        current = group_key_id(self.group_key)
        client = self.client if current in kids else next(
            (self._previous[k] for k in kids if k in self._previous), self.client)
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
        try:
            released = client.release(request, envelope, head_bytes)
        except StrongroomError as exc:  # the host's log records the refusal too (the servers' name each)
            vault.record("key.release", request.obj, "deny", reason=exc.message[:500], shard=request.shard,
                         error=type(exc).__name__, purpose=request.purpose)
            raise
        # The host's own log says which key servers released it, any that refused on policy, and
        # any that misbehaved (a partial that does not verify, or under another server's index).
        refused = [f"{r.server}: {r.kind}" for r in released.refusals if r.on_policy]
        bad = released.misbehaving
        vault.record("key.release", request.obj, "allow",
                     reason="key servers disagreed" if released.disagreement
                     else f"key server misbehaved: {', '.join(bad)}" if bad else "",
                     shard=request.shard, nbytes=request.nbytes, key_servers=released.answered,
                     refused=refused, purpose=request.purpose, **({"misbehaved": bad} if bad else {}))
        return released.key

    def sign(self, purpose: SignPurpose, message: bytes) -> bytes:
        """The host keyring signs manifests and checkpoints."""
        return self.inner.sign(purpose, message)

    def public_keys(self) -> dict[str, bytes]:
        """The host keyring's public keys."""
        return self.inner.public_keys()

    # -- rotation ------------------------------------------------------------------

    def rewrap(self, old_commitments: list[Element]) -> list[str]:
        """Rewrap every blob wrapped to the old group key to the current one; the artifacts changed.

        Each changed artifact version is one step: its blobs are written anew, its
        manifest re-signed and stored with the new blobs in one transaction, then
        the old blobs are deleted (a failure leaves the old version intact).
        """
        from sqlalchemy import select

        from strongroom.store.tables.vault import Artifact

        vault = self._attached("rewrap")
        old_kid = group_key_id(old_commitments[0])
        if old_kid == group_key_id(self.group_key):
            raise InvalidInput("the old commitments are the current group's", obj="rewrap",
                               remedy="pass the commitments of the group key rotated away from")
        self._previous[old_kid] = ThresholdClient(self.client.links, old_commitments, vault_id=self.vault_id,
                                                  indices=self.client.indices)
        with vault.store.session(readonly=True) as s:
            versions = list(s.execute(select(Artifact.name, Artifact.version)).all())
        changed = []
        for name, version in versions:
            manifest = vault.manifest(name, version)
            if self._rewrap_artifact(vault, manifest, old_kid):
                changed.append(manifest.ref)
        return changed

    def _rewrap_artifact(self, vault: Vault, manifest: Manifest, old_kid: str) -> bool:
        from strongroom.vault.blobs import new_blob_id

        files: list[FileEntry] = []
        written: list[str] = []
        try:
            for entry in manifest.files:
                new = self._rewrap_blob(vault, manifest, entry, old_kid, new_blob_id())
                if new is not None:
                    written.append(new.blob)
                files.append(new or entry)
            if not written:
                return False
            rewrapped = dataclasses.replace(manifest, files=tuple(files))
            envelope = rewrapped.sign((vault.manifest_key, lambda m: self.sign("manifest", m)))
            vault.record("weights.rewrap", manifest.ref, "allow", files=len(written),
                         old_group_key=old_kid, group_key=group_key_id(self.group_key))
            _store_rewrapped(vault, rewrapped, envelope)
        except BaseException:
            for blob in written:
                with contextlib.suppress(Exception):
                    vault.blobs.delete(blob)
            raise
        for old, new in zip(manifest.files, files, strict=True):
            if old.blob != new.blob:
                with contextlib.suppress(Exception):
                    vault.blobs.delete(old.blob)
        return True

    def _rewrap_blob(self, vault: Vault, manifest: Manifest, entry: FileEntry, old_kid: str,
                     blob_id: str) -> FileEntry | None:
        """The blob written again with its file key wrapped to the current group key (None: not old)."""
        source = vault.blobs.open(entry.blob)
        try:
            header, _ = age.read_header(source)
            if not any(s.type == STANZA_TYPE and s.args == (old_kid,) for s in header.stanzas):
                return None
            key = vault.release_file_key(manifest, entry, "rewrap")
            try:
                kept = [s for s in header.stanzas if s.type != STANZA_TYPE]  # escrow stays
                recipients: list[age.Recipient] = [ThresholdRecipient(self.group_key, vault_id=self.vault_id, artifact=manifest.ref,
                                                 shard=entry.path, blob_id=blob_id), _Fixed(kept)]
                head = age.build_header(bytes(key), recipients, cipher=header.cipher)
            finally:
                key[:] = bytes(len(key))
            digest = hashlib.sha256(head)
            size = len(head)
            with vault.blobs.writer(blob_id) as writer:
                writer.write(head)
                offset, end = header.size, len(source)
                while offset < end:
                    chunk = source.read_at(offset, min(1 << 20, end - offset))
                    writer.write(chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    size += len(chunk)
                writer.commit()
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        return dataclasses.replace(entry, blob=blob_id, ct_size=size, ct_sha256=digest.hexdigest(),
                                   header_sha256=hashlib.sha256(head).hexdigest())


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A recipient whose stanzas already exist (the escrow stanzas a rewrap keeps)."""

    stanzas: list[Stanza]

    def wrap(self, file_key: bytes) -> list[Stanza]:
        return list(self.stanzas)


def _store_rewrapped(vault: Vault, manifest: Manifest, envelope: str) -> None:
    """Replace the artifact's signed manifest and its files' blob rows in one transaction."""
    from sqlalchemy import select

    from strongroom.store.tables.vault import Artifact

    with vault.store.session() as s:
        row = s.scalars(select(Artifact).where(Artifact.name == manifest.name,
                                               Artifact.version == manifest.version)).one()
        row.manifest_json = envelope
        by_path = {f.path: f for f in manifest.files}
        for f in row.files:
            entry = by_path[f.path]
            f.blob_id, f.ct_size, f.ct_sha256 = entry.blob, entry.ct_size, entry.ct_sha256

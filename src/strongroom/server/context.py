"""The server's shared state: settings, store, blob store, key service, audit log.

One :class:`ServerContext` per process. In single-process mode (``strongroom
serve --workers 1``) it holds a :class:`~strongroom.runtime.services.LocalKeyService`
— the keyring and the release gate in this process — and uses the gate's own
audit log. With several workers each worker process holds a context over the
local key agent (:class:`~strongroom.runtime.services.AgentKeyService`): the
unsealed root key lives in the agent alone, and each worker opens its own store
and audit-log handle the way :meth:`strongroom.vault.vault.Vault.open` does::

    ctx = ServerContext.local(Settings())          # or ServerContext.agent(Settings())
    ctx.keys.submit_share(submission)              # unseal over the API
    with ctx.vault(identity=None, actor="alice") as vault:
        vault.list_artifacts()                     # close() is a no-op: the context owns it
    ctx.directory().principal(kid)                 # officer-verified directory view
    ctx.close()

Everything built here shares the context's store, blob store, key service and
audit log; do not close those yourself, close the context.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.errors import Sealed, StrongroomError
from strongroom.settings import Settings
from strongroom.store.db import Store
from strongroom.vault.blobs import BlobStore, blob_store_from_settings
from strongroom.vault.vault import Vault

if TYPE_CHECKING:
    from collections.abc import Callable

    from strongroom.access.directory import Directory, DirectoryReader
    from strongroom.audit.log import AuditLog
    from strongroom.keys.identity import Identity
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.keys.officers import Officers
    from strongroom.monitor.alerts import AlertManager
    from strongroom.runtime.services import AgentKeyService, LocalKeyService
    from strongroom.vault.shards import SignedShards

__all__ = ["ServerContext", "SharedVault"]


class SharedVault(Vault):
    """A :class:`Vault` on the context's shared handles; closing it leaves them open."""

    def close(self) -> None:
        """Nothing to release: the server context owns the store and the audit log."""


class ServerContext:
    """Settings, store, blobs and key service shared by every request of one process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keys: LocalKeyService | AgentKeyService,
        blobs: BlobStore | None = None,
        *,
        owns_store: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.blobs = blobs if blobs is not None else blob_store_from_settings(settings)
        self._owns_store = owns_store
        self._lock = threading.RLock()
        self._own_audit: AuditLog | None = None
        self._alerts: AlertManager | None = None
        self._alerts_audit: AuditLog | None = None
        self._reader: DirectoryReader | None = None
        self._reader_key: tuple[tuple[str, ...], tuple[str, ...], int] | None = None
        self._shards: SignedShards | None = None
        self._manifest_key: Ed25519PublicKey | None = None
        #: Closed by :meth:`close` before the key service and the store (``on_close``).
        self._on_close: list[Callable[[], None]] = []

    # -- construction --------------------------------------------------------

    @classmethod
    def local(cls, settings: Settings | None = None) -> ServerContext:
        """Single-process mode: the keyring and the release gate live in this process."""
        from strongroom.runtime.services import LocalKeyService

        settings = settings or Settings()
        home = settings.resolved_home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store.open(settings.resolved_database_url, schema="current")
        try:
            keys = LocalKeyService(store, alerts_file=home / "alerts.jsonl")
            return cls(settings, store, keys)
        except BaseException:
            store.close()
            raise

    @classmethod
    def agent(cls, settings: Settings | None = None, *, start: bool = True) -> ServerContext:
        """Worker mode: keys through the local key agent of the data directory.

        ``start=False`` (``strongroom serve``'s workers): never start an agent;
        without the one ``serve`` owns the vault is sealed.
        """
        from strongroom.runtime.services import key_service

        settings = settings or Settings()
        home = settings.resolved_home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = key_service(home, start=start)
        store = Store.open(settings.resolved_database_url, schema="current")
        try:
            return cls(settings, store, keys)
        except BaseException:
            store.close()
            raise

    @property
    def in_process(self) -> bool:
        """True when the keyring and the gate live in this process."""
        return hasattr(self.keys, "keyring")

    # -- audit -----------------------------------------------------------------

    def audit(self) -> AuditLog:
        """The audit log (the gate's own in single-process mode); Sealed while sealed."""
        if self.in_process:
            log: AuditLog | None = getattr(self.keys, "audit", None)
            if log is None:
                raise Sealed("the vault is sealed", obj="audit log",
                             remedy="unseal it: custodians submit shares (`strongroom unseal`)")
            return log
        with self._lock:
            if self._own_audit is None:
                self._own_audit = self._open_agent_audit()
            return self._own_audit

    def _open_agent_audit(self) -> AuditLog:
        from strongroom.audit.config import AuditSettings

        keys = self.keys
        if keys.status().sealed:
            raise Sealed("the vault is sealed", obj="audit log",
                         remedy="unseal it: custodians submit shares (`strongroom unseal`)")
        from strongroom.runtime.metrics import observe_audit

        checkpoint = Ed25519PublicKey.from_public_bytes(keys.public_keys()["checkpoint"])
        log = AuditSettings().open_log(
            self.store, (checkpoint, lambda message: keys.sign("checkpoint", message)),
            anchor_path=self.settings.resolved_home / "audit" / "latest-checkpoint",
        )
        observe_audit(log)  # this worker's own appends (refusals, statements)
        return log

    def seal_host(self, actor: str, *, all_hosts: bool = False, via: str = "api",
                  **details: Any) -> KeyringStatus:
        """Seal this host for ``actor`` (already authorised as a security officer).

        With ``all_hosts`` a seal order (``keys.seal-all``) is appended to the shared
        audit log first: every host's state guard that sees it seals that host. The
        request itself is audited as ``keys.seal-request`` (who, how, which host)
        before the key service wipes its keys; returns the status once sealed.
        """
        from strongroom.runtime.state_guard import SEAL_ORDER_ACTION

        if not all_hosts and self.keys.status().sealed:
            return self.keys.status()  # nothing to wipe; a sealed host cannot sign an entry
        log = self.audit()
        facts = {"server": self.settings.host_id, "via": via, **details}
        if all_hosts:
            log.append(actor=actor, action=SEAL_ORDER_ACTION, obj="keyring", decision="allow",
                       reason="every host sharing the database", details=facts)
        else:
            log.append(actor=actor, action="keys.seal-request", obj="keyring",
                       decision="allow", reason="this host", details=facts)
        status = self.keys.seal()
        self.forget_sealed()
        return status or self.keys.status()

    def forget_sealed(self) -> None:
        """Drop handles bound to an unseal that has ended (call after sealing)."""
        with self._lock:
            if self._own_audit is not None:
                with contextlib.suppress(StrongroomError):
                    self._own_audit.close()
            self._own_audit = None
            self._alerts = None
            self._alerts_audit = None
            self._reader = None
            self._reader_key = None

    # -- views -------------------------------------------------------------------

    def vault(self, identity: Identity | None = None, *, actor: str | None = None) -> Vault:
        """A vault on the shared handles, acting as ``identity`` (or ``actor``); Sealed while sealed."""
        return SharedVault(self.settings, self.store, self.blobs, self.keys, self.audit(),
                           identity=identity, actor=actor)

    def signed_shards(self) -> SignedShards:
        """The verified manifests and pinned header stanzas this process caches (immutable once
        recorded): the release route and the blob route read them here."""
        from strongroom.vault.shards import SignedShards

        with self._lock:
            if self._shards is None:
                self._shards = SignedShards(self.store, self._barrier_manifest_key)
            return self._shards

    def _barrier_manifest_key(self) -> Ed25519PublicKey:
        """The barrier's manifest key, asked of the key service once (it never changes)."""
        if self._manifest_key is None:
            raw = self.keys.public_keys()["manifest"]
            self._manifest_key = Ed25519PublicKey.from_public_bytes(raw)
        return self._manifest_key

    def officers(self) -> dict[str, Ed25519PublicKey]:
        """The security officers pinned in the keyring, by key id (Sealed while sealed)."""
        return dict(self.officer_pins().ed25519)

    def officer_pins(self) -> Officers:
        """The pinned officers with the ML-DSA-65 keys of hybrid ones (Sealed while sealed)."""
        from strongroom.keys.officers import Officers

        return Officers.from_public_keys(self.keys.public_keys())

    def officer_threshold(self, officers: dict[str, Any] | None = None) -> int:
        """How many officers must sign a directory statement."""
        keyring = getattr(self.keys, "keyring", None)
        if keyring is not None:
            return int(keyring.officer_threshold)
        reported = getattr(self.keys, "officer_threshold", None)
        if callable(reported):
            return int(reported())
        status = self.keys.status()
        # Until the agent reports the pinned threshold, demand every officer.
        count = len(officers if officers is not None else self.officers())
        return int(getattr(status, "officer_threshold", 0) or count or 1)

    def directory_reader(self) -> DirectoryReader:
        """The verifying reader over the officers pinned now (kept while they do not change)."""
        from strongroom.access.directory import DirectoryReader

        pins = self.officer_pins()
        threshold = self.officer_threshold(dict(pins.ed25519))
        key = (tuple(sorted(pins.ed25519)), tuple(sorted(pins.mldsa)), threshold)
        with self._lock:
            if self._reader is None or self._reader_key != key:
                self._reader = DirectoryReader.for_officers(self.store, pins, threshold)
                self._reader_key = key
            return self._reader

    def directory(self, *, key_ids: list[str] | None = None,
                  resources: list[str] | None = None) -> Directory:
        """An officer-verified directory view (Sealed while sealed)."""
        return self.directory_reader().view(key_ids=key_ids, resources=resources)

    def alerts(self) -> AlertManager:
        """The alert manager, auditing into this context's audit log."""
        from strongroom.monitor.alerts import AlertManager, JsonLinesSink

        audit = self.audit()
        with self._lock:
            if self._alerts is None or self._alerts_audit is not audit:
                sink = JsonLinesSink(self.settings.resolved_home / "alerts.jsonl")
                self._alerts = AlertManager(self.store, audit=audit, sinks=[sink])
                self._alerts_audit = audit
            return self._alerts

    # -- lifecycle -------------------------------------------------------------------

    def on_close(self, close: Callable[[], None]) -> None:
        """Have :meth:`close` call ``close`` first (clients a route opened, such as the key servers')."""
        with self._lock:
            self._on_close.append(close)

    def close(self) -> None:
        """Close what routes opened, seal an in-process keyring, close the audit log and the store."""
        with self._lock:
            hooks, self._on_close = self._on_close, []
        for hook in reversed(hooks):
            with contextlib.suppress(Exception):  # one failing close must not keep the store open
                hook()
        self.forget_sealed()
        close = getattr(self.keys, "close", None)
        if self.in_process and callable(close):
            close()
        if self._owns_store:
            self.store.close()

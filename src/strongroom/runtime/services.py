"""The key services: the two implementations of :class:`~strongroom.keys.protocol.KeyService`.

One module because its two key services (in process, and over the agent's socket)
implement one protocol and share the wiring done at unseal; reading them side by side
is how a reviewer checks they agree.

The protocol (what the vault, the CLI and the server call to use keys) lives in
:mod:`strongroom.keys.protocol`; here are its implementations, and the wiring
that builds the release gate when the keyring unseals (``_after_unseal``,
:func:`grant_evidence`, the unseal-failure memory):

* :class:`LocalKeyService` — the keyring and the release gate in this process
  (``strongroom serve`` and the local agent run one);
* :class:`AgentKeyService` — a client of the local agent over the Unix socket
  ``<STRONGROOM_HOME>/agent.sock``, so that separate CLI invocations and a
  ``strongroom serve`` on the same directory share one unsealed state. Only
  ``unseal`` (``key_service(start=True)``) and ``serve`` start an agent; without
  one the vault is sealed, and a directory without a vault is refused.

Use ``key_service()`` to get the agent-backed service for the configured home,
and ``open_vault()`` for the vault the faces use (on that service)::

    vault = open_vault()                                # Vault.open(keys=key_service())
    keys = key_service()
    keys.status().sealed
    stanza = keys.wrap_file_key(blob_id, file_key)     # at import
    file_key = keys.release(request)                    # the gate; zero it after use

Do not cache released file keys or signing keys outside the service, and do not
construct a :class:`LocalKeyService` next to a running agent for the same data
directory when you need one shared unseal state (each holds its own).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto.age import Stanza
from strongroom.errors import (
    AttestationRefused,
    ConfigError,
    IntegrityError,
    InvalidInput,
    Sealed,
    StrongroomError,
)
from strongroom.keys.config import KeysSettings
from strongroom.keys.keyring import Keyring, KeyringStatus
from strongroom.keys.protocol import SignPurpose
from strongroom.release import (
    EgressPort,
    EvidenceVerifier,
    ReleaseGate,
    ReleaseRequest,
    ShardLocator,
    ShardSizes,
)
from strongroom.store.db import Store

if TYPE_CHECKING:
    from strongroom.attest.admission import AttestedClaim
    from strongroom.audit.log import AuditLog
    from strongroom.audit.publisher import CheckpointPublisher
    from strongroom.keys.identity import Identity
    from strongroom.monitor.alert_outbox import RouteDeliverer
    from strongroom.monitor.alerts import AlertManager
    from strongroom.runtime.agent import AgentClient
    from strongroom.runtime.agent_async import AsyncAgentClient
    from strongroom.runtime.monitor_loop import MonitorLoop
    from strongroom.runtime.state_guard import StateGuard
    from strongroom.settings import Settings
    from strongroom.vault.vault import Vault

__all__ = [
    "AgentKeyService",
    "LocalKeyService",
    "RekeyOutcome",
    "grant_evidence",
    "key_service",
    "open_vault",
]

_log = logging.getLogger(__name__)
AuditFactory = Callable[[Store, Ed25519PrivateKey], "AuditLog"]
RekeyOutcome = tuple[KeyringStatus, list[tuple[str, bytes]] | None]
#: Builds the gate's evidence rule once unsealed (the deployment's: :func:`grant_evidence`),
#: given the shard locator the gate uses too.
EvidenceFactory = Callable[[Keyring, Store, "AuditLog", ShardLocator], EvidenceVerifier]
#: Where the gate reads shard sizes; ``None``: the shard locator over barrier-signed manifests
#: (the deployment's, :func:`strongroom.runtime.wiring.shard_locator`).
SizesFactory = Callable[[Keyring], ShardSizes]


def grant_evidence(keyring: Keyring, store: Store, audit: AuditLog,
                   shards: ShardLocator) -> EvidenceVerifier:
    """The deployment rule: a release needs a valid Grant (or break-glass), checked from signatures.

    Officers and their threshold come from the sealed keyring, the artifacts'
    signed manifests from ``shards`` (the gate's locator); used nonces and bytes
    charged per Grant are rebuilt from the audit log's recent releases.
    """
    from strongroom.access.evidence import GrantEvidence

    rule = GrantEvidence(keyring.officers, lambda: keyring.officer_threshold, store,
                         shards=shards, officer_mldsa=keyring.officer_mldsa)
    rule.seed_from_audit(audit, time.time())
    return rule


def _host_id() -> str:
    """This host's id for the release entries (``STRONGROOM_HOST_ID``, default the hostname)."""
    from strongroom.settings import Settings

    return Settings().host_id


def _default_audit(store: Store, key: Ed25519PrivateKey) -> AuditLog:
    from strongroom.audit.config import AuditSettings

    return AuditSettings().open_log(store, key)


#: Failed unseal attempts this many or more since the last unseal raise a high alert.
UNSEAL_FAILURE_ALERT_AT = 3


class _UnsealFailures:
    """Failed unseal attempts made while sealed, kept until there is a log to write them to.

    A sealed keyring has no audit key, so a wrong HSM PIN or a bad share cannot
    be audited when it happens. They are kept in memory and, when the data
    directory is known, in ``unseal-failures.jsonl`` there (mode 0600, one JSON
    line each: time, kind, error; never the PIN or the share), and written to
    the audit log by the next successful unseal.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, exc: StrongroomError) -> None:
        entry = {"id": secrets.token_hex(8), "time": int(time.time()), "kind": kind,
                 "error": type(exc).__name__, "message": exc.message[:200]}
        with self._lock:
            self._memory.append(entry)
            if self.path is not None:
                with contextlib.suppress(OSError):
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    with os.fdopen(fd, "a") as f:
                        f.write(json.dumps(entry, sort_keys=True) + "\n")
                        f.flush()
                        os.fsync(f.fileno())

    def take(self) -> list[dict[str, Any]]:
        """Every recorded failure (file and memory, without duplicates); clears them."""
        with self._lock:
            found = {str(e["id"]): e for e in self._memory}
            if self.path is not None:
                with contextlib.suppress(OSError):
                    for line in self.path.read_text().splitlines():
                        with contextlib.suppress(ValueError):
                            entry = json.loads(line)
                            if isinstance(entry, dict):
                                found.setdefault(str(entry.get("id")), entry)
            return sorted(found.values(), key=lambda e: int(e.get("time", 0)))

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()
            if self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()


class LocalKeyService:
    """The keyring and the release gate in this process."""

    def __init__(
        self,
        store: Store,
        settings: KeysSettings | None = None,
        *,
        audit_factory: AuditFactory = _default_audit,
        actor: str | None = None,
        alerts_file: Path | None = None,
        evidence_factory: EvidenceFactory = grant_evidence,
        checkpoint_interval: float | None = None,
        sizes_factory: SizesFactory | None = None,
    ) -> None:
        self.store = store
        self._alerts_file = alerts_file
        self._evidence_factory = evidence_factory
        self._sizes_factory = sizes_factory
        self._guard: StateGuard | None = None
        self._monitor: MonitorLoop | None = None
        self._routes: RouteDeliverer | None = None
        self.settings = settings or KeysSettings()
        self.keyring = Keyring(store, self.settings)
        self._audit_factory = audit_factory
        self._audit: AuditLog | None = None
        self._gate: ReleaseGate | None = None
        self._publisher: CheckpointPublisher | None = None
        self._alerts: AlertManager | None = None
        self._checkpoint_interval = checkpoint_interval
        self.actor = actor or os.environ.get("STRONGROOM_ACTOR") or getpass.getuser()
        self._failures = _UnsealFailures(
            alerts_file.with_name("unseal-failures.jsonl") if alerts_file else None)

    # -- lifecycle ------------------------------------------------------------

    def _after_unseal(self, status: KeyringStatus) -> KeyringStatus:
        if not status.sealed and self._gate is None:
            try:
                self._audit = self._audit_factory(
                    self.store, self.keyring.signing_key("checkpoint"))
                from strongroom.runtime.metrics import ReleaseMetrics, observe_audit

                observe_audit(self._audit)
                rollback = self._start_publisher(self._audit)
                self._audit.append(actor=self.actor, action="keys.unseal",
                                   obj=f"vault {status.vault_id}", decision="allow",
                                   reason=f"{status.backend} unseal",
                                   details={"server": _host_id()})  # the console's host list
                from strongroom.monitor.alerts import AlertManager, JsonLinesSink
                from strongroom.monitor.canaries import CanaryRegistry
                from strongroom.runtime.attestation import attestation_service
                from strongroom.runtime.wiring import default_meter, shard_locator

                sinks = [JsonLinesSink(self._alerts_file)] if self._alerts_file else []
                alerts = AlertManager(self.store, audit=self._audit, sinks=sinks)
                self._alerts = alerts
                if rollback is not None:
                    self._rollback_alert(rollback)
                self._report_failures(status, alerts)
                canaries = CanaryRegistry(self.store, alerts)
                # No backfill here: rows the log says exist but the ledger lacks are the
                # state guard's to put back (its first, full check runs next, before any
                # release), and it alerts on each (SR-STATE-TAMPER). A backfill first would
                # restore rows deleted while the vault was sealed without a word.
                meter = default_meter(self.store, self._audit, alerts=alerts, backfill=False)
                guard = self._start_guard(meter, alerts)
                shards = shard_locator(self.keyring)  # the gate's and the rule's, verified once
                rule = self._evidence_factory(self.keyring, self.store, self._audit, shards)
                if guard.egress is not None:
                    guard.egress.remember_nonce = getattr(rule, "remember", None)
                if hasattr(rule, "on_change"):  # restore deleted rows before it reads them
                    rule.on_change = guard.journal.changed
                self._gate = ReleaseGate(
                    self.keyring, self._audit, evidence=rule, egress=meter, canaries=canaries,
                    sizes=self._sizes_factory(self.keyring) if self._sizes_factory else shards,
                    guard=guard, server=_host_id(), observer=ReleaseMetrics(),
                    attestation=attestation_service(self.keyring, self.store, self._audit),
                )
                alerts.deliver_pending()
                self._start_monitor(alerts)
            except BaseException:
                self.seal()
                raise
        return status

    def _start_guard(self, meter: EgressPort, alerts: AlertManager) -> StateGuard:
        """Re-derive restrictive state from the log now (before any release), then on an interval."""
        from strongroom.monitor.egress import EgressMeter as DurableMeter
        from strongroom.runtime.state_guard import StateGuard

        assert self._audit is not None
        guard = StateGuard(self.store, self._audit,
                           meter if isinstance(meter, DurableMeter) else None, alerts,
                           actor=self.actor, interval_s=self.settings.state_check_interval_s,
                           on_seal_order=lambda order: self.seal())
        self._guard = guard
        guard.reconcile()
        guard.start()
        return guard

    def _start_monitor(self, alerts: AlertManager) -> None:
        """Run the detectors over the log while unsealed (one leader per database)."""
        from strongroom.runtime.monitor_loop import (
            MonitorLease,
            MonitorLoop,
            MonitorSettings,
            deployment_engine,
        )

        assert self._audit is not None
        conf = MonitorSettings()
        lease = MonitorLease(self.store, _host_id(), ttl_s=conf.lease_ttl_s,
                             interval_s=conf.interval_s)
        self._monitor = MonitorLoop(
            self._audit, alerts,
            lambda: deployment_engine(self.keyring, self.store, self.settings.egress_cap_bytes),
            lease, interval_s=conf.interval_s, replay_s=conf.replay_days * 86400)
        self._start_routes(self._monitor, alerts)
        self._monitor.start()

    def _start_routes(self, loop: MonitorLoop, alerts: AlertManager) -> None:
        """Deliver to the routes of alerts.yaml after each scan the loop leads (a bad file: alert)."""
        from strongroom.monitor.alert_config import alerts_config_path
        from strongroom.monitor.alert_outbox import route_deliverer
        from strongroom.monitor.alerts import Alert

        home = self._alerts_file.parent if self._alerts_file else None
        if home is None and not os.environ.get("STRONGROOM_ALERTS_CONFIG"):
            return
        path = alerts_config_path(home or Path.cwd())
        try:
            self._routes = route_deliverer(self.store, path, leading=lambda: loop.leading,
                                           interval_s=loop.interval_s)
        except ConfigError as exc:  # alerts stay stored; the routes catch up once it is fixed
            _log.error("alerts: %s", exc)
            alerts.raise_alert(Alert(
                rule="SR-ALERT-ROUTES", severity="high", subject=_host_id(), obj=str(path),
                message=f"alert routes not loaded: {exc}"[:2000],
                dedup_key=f"alert-routes:{_host_id()}:{int(time.time())}"))
            return
        if self._routes is not None:
            loop.after_scan = self._routes.wake
            self._routes.start()

    @property
    def monitor(self) -> MonitorLoop | None:
        """The monitor loop while unsealed (``None`` while sealed)."""
        return self._monitor

    def _start_publisher(self, audit: AuditLog) -> IntegrityError | None:
        """Check the log against its high-water marks and witnesses; sign on an interval.

        Returns the rollback found at unseal (its alert waits for the alert
        manager); the log then refuses releases (``AuditLog.require_intact``).
        """
        from strongroom.audit.config import AuditSettings
        from strongroom.audit.highwater import HIGH_WATER_NAME, HighWater
        from strongroom.audit.publisher import CheckpointPublisher

        interval = self._checkpoint_interval or AuditSettings().checkpoint_interval_s
        path = self._alerts_file.with_name(HIGH_WATER_NAME) if self._alerts_file else None
        found: list[IntegrityError] = []
        publisher = CheckpointPublisher(audit, HighWater(path, audit), interval,
                                        on_rollback=found.append)
        publisher.start()
        publisher.on_rollback = self._rollback_alert
        self._publisher = publisher
        return found[0] if found else None

    @property
    def publisher(self) -> CheckpointPublisher | None:
        """The checkpoint publisher while unsealed (``None`` while sealed)."""
        return self._publisher

    def vitals(self) -> dict[str, Any]:
        """What only the key service knows, for the metrics: each witness's cosignature lag."""
        publisher = self._publisher
        lag = publisher.status().witness_lag_s if publisher is not None else {}
        return {"witness_lag_s": dict(lag)}

    def _rollback_alert(self, exc: IntegrityError) -> None:
        from strongroom.monitor.alerts import Alert

        if self._alerts is None or self._audit is None:
            return
        origin = self._audit.origin
        self._alerts.raise_alert(Alert(
            rule="SR-AUDIT-ROLLBACK", severity="critical", subject=origin, obj=exc.obj or origin,
            message=f"{exc.message}; key releases are refused until the log is restored",
            dedup_key=f"SR-AUDIT-ROLLBACK:{origin}:{exc.message[:120]}",
            details={"finding": exc.message[:500]},
            techniques=("T1070",)))

    def _report_failures(self, status: KeyringStatus, alerts: Any) -> None:
        """Audit the unseal attempts that failed while sealed; alert on several."""
        from strongroom.monitor.alerts import Alert

        assert self._audit is not None
        failures = self._failures.take()
        if not failures:
            return
        self._audit.append_many(
            {"actor": self.actor, "action": "keys.unseal-failed", "obj": f"vault {status.vault_id}",
             "decision": "deny", "reason": str(f.get("message", ""))[:300],
             "details": {"attempted_at": int(f.get("time", 0)), "kind": str(f.get("kind")),
                         "error": str(f.get("error"))}}
            for f in failures)
        self._failures.clear()  # after the entries are durable: a crash between repeats them
        if len(failures) >= UNSEAL_FAILURE_ALERT_AT:
            kinds = sorted({str(f.get("kind")) for f in failures})
            alerts.raise_alert(Alert(
                rule="SR-UNSEAL-FAILURES", severity="high", subject=f"vault {status.vault_id}",
                obj="keyring",
                message=f"{len(failures)} failed unseal attempts ({', '.join(kinds)}) while "
                        "sealed, before this unseal: a guessed HSM PIN or forged shares?",
                dedup_key=f"SR-UNSEAL-FAILURES:{status.vault_id}:{int(time.time())}",
                details={"failures": len(failures), "kinds": kinds},
                techniques=("T1110",)))

    @property
    def audit(self) -> AuditLog | None:
        """The gate's audit log while unsealed (``None`` while sealed)."""
        return self._audit

    @property
    def alerts(self) -> AlertManager | None:
        """The alert manager of this unseal session (``None`` while sealed)."""
        return self._alerts

    @property
    def gate(self) -> ReleaseGate | None:
        """The release gate while unsealed (``None`` while sealed)."""
        return self._gate

    def _record(self, action: str, obj: str, reason: str = "", **details: Any) -> None:
        if self._audit is None:
            raise Sealed("the vault is sealed", obj="keyring")
        self._audit.append(actor=self.actor, action=action, obj=obj, decision="allow",
                           reason=reason, details=details or None)

    def status(self) -> KeyringStatus:
        """The keyring's status."""
        return self.keyring.status()

    def submit_share(self, submission: bytes) -> KeyringStatus:
        """One custodian's share for the current unseal ceremony."""
        sealed = self.keyring.status().sealed
        try:
            status = self.keyring.submit_share(submission)
        except StrongroomError as exc:
            if sealed:
                self._failures.add("share", exc)
            raise
        return self._after_unseal(status)

    def reset(self) -> KeyringStatus:
        """Discard unseal (or rekey) progress; a new nonce starts."""
        return self.keyring.reset()

    def unseal_hsm(self, pin: str | None = None) -> KeyringStatus:
        """HSM backend: log in and unseal."""
        sealed = self.keyring.status().sealed
        try:
            status = self.keyring.unseal_hsm(pin)
        except StrongroomError as exc:
            if sealed:
                self._failures.add("hsm-pin", exc)
            raise
        return self._after_unseal(status)

    def seal(self) -> KeyringStatus:
        """Wipe key material from memory; closes the gate and its audit log."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if self._routes is not None:
            self._routes.stop()
            self._routes = None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._audit is not None:
            with contextlib.suppress(StrongroomError):  # sealing must not wait on the log
                self._record("keys.seal", "keyring", server=_host_id())
            self._audit.close()
        self._audit = None
        self._alerts = None
        self._gate = None
        return self.keyring.seal()

    def close(self) -> None:
        """Seal and release the keyring's connections (the store stays the caller's)."""
        self.seal()
        self.keyring.close()

    # -- the protocol ------------------------------------------------------------

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Stanza:
        """Wrap under the newest KEK and record it."""
        return self.keyring.wrap_file_key(blob_id, file_key)

    def release(self, request: ReleaseRequest) -> bytearray:
        """Run the gate (which checks the seal itself)."""
        gate = self._gate
        if gate is None:
            self.keyring.require_unsealed()
            raise Sealed("the release gate is not open", obj="keyring")
        return gate.release(request)

    def release_many(self, requests: Sequence[ReleaseRequest]) -> list[bytearray | StrongroomError]:
        """Run the gate for several requests at once: each its key or its own refusal."""
        gate = self._gate
        if gate is None:
            try:
                self.keyring.require_unsealed()
            except Sealed as exc:
                return [exc] * len(requests)
            return [Sealed("the release gate is not open", obj="keyring")] * len(requests)
        return gate.release_many(requests)

    def attest_nonce(self) -> bytes:
        """A fresh single-use nonce from the gate for an enclave's evidence."""
        return self._attested_gate().attestation.desk.challenge()  # type: ignore[union-attr]

    def release_attested(self, request: ReleaseRequest, claim: AttestedClaim) -> Stanza:
        """Run the gate for an enclave: the file key only as a stanza to its ephemeral key."""
        return self._attested_gate().release_attested(request, claim)

    def _attested_gate(self) -> ReleaseGate:
        gate = self._gate
        if gate is None:
            self.keyring.require_unsealed()
            raise Sealed("the release gate is not open", obj="keyring")
        if gate.attestation is None:
            raise AttestationRefused("evidence", "this gate verifies no attestation evidence",
                                     obj="release gate")
        return gate

    def sign(self, purpose: SignPurpose, message: bytes) -> bytes:
        """Sign with a barrier key."""
        return self.keyring.signing_key(purpose).sign(message)

    def public_keys(self) -> dict[str, bytes]:
        """Public keys from the barrier."""
        return self.keyring.public_keys()

    # -- administration ----------------------------------------------------------

    def rotate(self) -> int:
        """New KEK version."""
        version = self.keyring.rotate()
        self._record("keys.rotate", f"KEK version {version}")
        return version

    def rewrap(self) -> int:
        """Wrap every file key under the newest version too."""
        count = self.keyring.rewrap()
        self._record("keys.rewrap", f"KEK version {self.keyring.newest_version()}",
                     count=count)
        return count

    def retire(self, version: int) -> int:
        """Retire a KEK version nothing depends on."""
        removed = self.keyring.retire(version)
        self._record("keys.retire", f"KEK version {version}", removed=removed)
        return removed

    def usage(self) -> dict[int, tuple[int, int]]:
        """Per KEK version: file keys wrapped, and those wrapped by it alone."""
        return self.keyring.usage()

    def rekey_start(self, custodians: list[str], threshold: int) -> KeyringStatus:
        """Begin a rekey; the current quorum then submits shares."""
        return self.keyring.rekey_start(custodians, threshold)

    def rekey_submit(self, submission: bytes) -> RekeyOutcome:
        """Submit a share to the rekey; on quorum, returns the new share files (not committed)."""
        from strongroom.keys.ceremony import encrypt_share_files

        status = self.keyring.submit_share(submission)
        if status.ceremony != "rekey" or not status.rekey_ready or status.nonce is None:
            return status, None
        config, shares = self.keyring.rekey_result(status.nonce)
        return status, encrypt_share_files(config, shares)

    def rekey_commit(self, nonce: str) -> KeyringStatus:
        """Commit the completed rekey once its files are safely written."""
        config, _ = self.keyring.rekey_result(nonce)
        status = self.keyring.rekey_commit(nonce)
        self._record("keys.rekey", f"vault {config.vault_id}",
                     reason=f"{config.threshold}-of-{len(config.custodians)}",
                     generation=config.generation)
        return status


class AgentKeyService:
    """A :class:`KeyService` backed by the local agent (started on first need)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self._async: AsyncAgentClient | None = None

    def status(self) -> KeyringStatus:
        """The agent's keyring status."""
        return KeyringStatus.from_dict(self.client.call("status"))

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Stanza:
        """Wrap through the agent."""
        from strongroom.runtime.agent import b64, stanza_from_json

        return stanza_from_json(self.client.call("wrap_file_key", blob_id=blob_id,
                                                 file_key=b64(file_key)))

    def release(self, request: ReleaseRequest) -> bytearray:
        """Run the agent's gate."""
        from strongroom.runtime.agent import request_to_json, unb64

        return bytearray(unb64(self.client.call("release", request=request_to_json(request))))

    def attest_nonce(self) -> bytes:
        """A fresh nonce from the agent's gate."""
        from strongroom.runtime.agent import unb64

        return unb64(self.client.call("attest_nonce"))

    def release_attested(self, request: ReleaseRequest, claim: AttestedClaim) -> Stanza:
        """Run the agent's gate for an enclave; the file key comes back wrapped to it."""
        from strongroom.runtime.agent import request_to_json, stanza_from_json
        from strongroom.runtime.attestation import claim_to_json

        return stanza_from_json(self.client.call("release_attested",
                                                 request=request_to_json(request),
                                                 claim=claim_to_json(claim)))

    async def release_async(self, request: ReleaseRequest) -> bytearray:
        """Run the agent's gate from an event loop (raises AgentUnavailable when none runs)."""
        if self._async is None:  # the import runs once, not on every release
            from strongroom.runtime.agent_async import AsyncAgentClient

            self._async = AsyncAgentClient(self.client.home)
        return await self._async.release(request)

    def vitals(self) -> dict[str, Any]:
        """The agent's :meth:`LocalKeyService.vitals`."""
        result = self.client.call("vitals")
        return dict(result) if isinstance(result, dict) else {}

    def sign(self, purpose: SignPurpose, message: bytes) -> bytes:
        """Sign through the agent."""
        from strongroom.runtime.agent import b64, unb64

        return unb64(self.client.call("sign", purpose=purpose, message=b64(message)))

    def public_keys(self) -> dict[str, bytes]:
        """Public keys through the agent."""
        from strongroom.runtime.agent import unb64

        return {k: unb64(v) for k, v in self.client.call("public_keys").items()}

    def submit_share(self, submission: bytes) -> KeyringStatus:
        """Submit one share."""
        from strongroom.runtime.agent import b64

        return KeyringStatus.from_dict(self.client.call("submit_share", submission=b64(submission)))

    def reset(self) -> KeyringStatus:
        """Reset unseal progress."""
        return KeyringStatus.from_dict(self.client.call("reset"))

    def unseal_hsm(self, pin: str | None = None) -> KeyringStatus:
        """HSM unseal in the agent (the PIN travels over the 0600 socket only)."""
        return KeyringStatus.from_dict(self.client.call("unseal_hsm", pin=pin))

    def seal(self) -> KeyringStatus | None:
        """Seal and stop the agent (no-op when none runs)."""
        if not self.client.running():
            return None
        return KeyringStatus.from_dict(self.client.call("seal"))

    def rotate(self) -> int:
        """New KEK version."""
        return int(self.client.call("rotate"))

    def rewrap(self) -> int:
        """Rewrap every file key."""
        return int(self.client.call("rewrap"))

    def retire(self, version: int) -> int:
        """Retire a KEK version."""
        return int(self.client.call("retire", version=version))

    def usage(self) -> dict[int, tuple[int, int]]:
        """KEK usage."""
        return {int(k): (int(v[0]), int(v[1])) for k, v in self.client.call("usage").items()}

    def rekey_start(self, custodians: list[str], threshold: int) -> KeyringStatus:
        """Begin a rekey."""
        return KeyringStatus.from_dict(self.client.call("rekey_start", custodians=custodians,
                                                        threshold=threshold))

    def rekey_submit(self, submission: bytes) -> RekeyOutcome:
        """Submit a share to the rekey."""
        from strongroom.runtime.agent import b64, unb64

        out = self.client.call("rekey_submit", submission=b64(submission))
        files = out["files"]
        return (KeyringStatus.from_dict(out["status"]),
                None if files is None else [(n, unb64(d)) for n, d in files])

    def rekey_commit(self, nonce: str) -> KeyringStatus:
        """Commit the rekey."""
        return KeyringStatus.from_dict(self.client.call("rekey_commit", nonce=nonce))


def key_service(home: Path | None = None, *, start: bool = False) -> AgentKeyService:
    """The agent-backed key service for ``home`` (default: ``STRONGROOM_HOME``).

    ``start=True`` (``strongroom unseal`` only) starts the agent when none runs.
    """
    from strongroom.runtime.agent import AgentClient
    from strongroom.settings import Settings

    home = home or Settings().resolved_home
    if not isinstance(home, Path):
        raise InvalidInput("home must be a path", obj=str(home))
    return AgentKeyService(AgentClient(home, start=start))


def open_vault(
    settings: Settings | None = None,
    *,
    identity: Identity | None = None,
    actor: str | None = None,
) -> Vault:
    """The vault of ``settings`` (default: the environment) on the local agent's key service.

    With ``STRONGROOM_FILE_KEYS=threshold`` the agent's service is wrapped in a
    :class:`~strongroom.runtime.threshold_keys.ThresholdKeyService`: file keys go to
    the key servers' group key and come back only from k of them.

    What the CLI and :func:`strongroom.open_weights` open; raises
    :class:`~strongroom.errors.Sealed` when the vault is not initialised or unsealed.
    """
    from strongroom.settings import Settings
    from strongroom.vault.vault import Vault

    settings = settings or Settings()
    from strongroom.datadir import require_vault

    require_vault(settings.resolved_home, settings.database_url)  # before anything is created
    from strongroom.keys.config import KeysSettings

    keys_settings = KeysSettings()
    agent = key_service(settings.resolved_home)
    if keys_settings.file_keys != "threshold":
        return Vault.open(settings, keys=agent, identity=identity, actor=actor)
    # File keys wrapped to the key servers' group key and released only by k of them.
    from strongroom.runtime.threshold_keys import ThresholdKeyService

    keys = ThresholdKeyService.from_settings(agent, keys_settings)
    vault = Vault.open(settings, keys=keys, identity=identity, actor=actor)
    keys.attach(vault)
    return vault

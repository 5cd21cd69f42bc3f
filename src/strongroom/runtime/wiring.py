"""The gate's collaborators as a deployment builds them at unseal: egress meter and shard locator.

:class:`~strongroom.release.gate.ReleaseGate` builds nothing itself; the key
service (``LocalKeyService._after_unseal``) composes it from these and from the
evidence rule, canary registry and state guard. The gate and the evidence rule
share one shard locator, so each signed manifest is verified once::

    meter = default_meter(store, audit, alerts=alerts)
    shards = shard_locator(keyring)
    rule = grant_evidence(keyring, store, audit, shards)   # strongroom.runtime.services
    gate = ReleaseGate(keyring, audit, evidence=rule, egress=meter,
                       sizes=shards, canaries=canaries, guard=guard)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strongroom.keys.config import KeysSettings
from strongroom.monitor.alerts import AlertManager
from strongroom.monitor.egress import DEFAULT_BUDGETS, Budget, EgressMeter
from strongroom.vault.shards import SignedShards

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from strongroom.audit.log import AuditLog
    from strongroom.keys.keyring import Keyring
    from strongroom.store.db import Store

__all__ = ["EGRESS_WINDOW_S", "default_meter", "shard_locator"]

#: The window of the configured per-principal egress cap.
EGRESS_WINDOW_S = 24 * 3600


def default_meter(
    store: Store,
    audit: AuditLog,
    *,
    alerts: Any = None,
    clock: Callable[[], float] = time.time,
    backfill: bool = False,
) -> EgressMeter:
    """The monitor's durable egress meter with the configured per-principal cap.

    ``STRONGROOM_EGRESS_CAP_BYTES`` caps each principal per 24 h; the artifact and
    lab-wide budgets are the monitor's defaults (see docs/monitoring.md). Alerts
    near and at a cap go to the alert store and the audit log.

    ``backfill`` charges the log's releases that the ledger lacks, silently. Off by
    default: a ledger row that is missing was deleted (absence is evidence), and the
    state guard's first check puts it back *with* an ``SR-STATE-TAMPER`` alert; a
    backfill before that check erased the evidence (the unseal bug fixed in 263313a).
    Turn it on only for a store known to predate the ledger.
    """
    cap = KeysSettings().egress_cap_bytes
    budgets = [Budget("principal", "*", EGRESS_WINDOW_S, cap), *DEFAULT_BUDGETS[1:]]
    meter = EgressMeter(
        store, budgets=budgets, alerts=alerts or AlertManager(store, audit=audit), clock=clock
    )
    if backfill:
        meter.backfill(audit)
    return meter


def shard_locator(keyring: Keyring) -> SignedShards:
    """The deployment's shard locator: manifests signed by the barrier's manifest key.

    It gives the gate each shard's size and the evidence rule its artifact's
    kind and compartments; hand both the same one.
    """
    return SignedShards(keyring.store, _manifest_public(keyring))


def _manifest_public(keyring: Keyring) -> Callable[[], Ed25519PublicKey]:
    """The barrier's current manifest public key, derived once per private key.

    Asked twice per release (the gate's size and the rule's lookup); deriving an
    Ed25519 public key is a scalar multiplication (~2 us on a quiet core, ~13 us
    under the release bench's load). The private key is still fetched each time,
    so a sealed keyring refuses and a rekeyed one is followed.
    """
    cached: list[tuple[Ed25519PrivateKey, Ed25519PublicKey]] = []

    def public() -> Ed25519PublicKey:
        private = keyring.signing_key("manifest")
        last = cached[0] if cached else None
        if last is not None and last[0] is private:
            return last[1]
        derived = private.public_key()
        cached[:] = [(private, derived)]
        return derived

    return public

"""The gate's collaborators as a deployment builds them (``strongroom.runtime.wiring``)."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete

from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.runtime.wiring import default_meter
from strongroom.store.db import Store
from strongroom.store.tables.monitor import EgressCharge


def _released(store: Store, n: int) -> tuple[AuditLog, list[str]]:
    """A log of ``n`` allowed releases, each charged in the ledger; (log, charge ids)."""
    log = AuditLog(store, Ed25519Signer("wiring.test/log", Ed25519PrivateKey.generate()))
    ids = [f"nonce-{i:016d}" for i in range(n)]
    for i, charge_id in enumerate(ids):
        log.append(actor="alice", action="key.release", obj=f"m@1/s{i}", decision="allow",
                   shard=f"s{i}", nbytes=100, details={"nonce": charge_id})
    meter = default_meter(store, log, backfill=True)  # charges what the log holds
    assert meter.missing(ids) == set()
    return log, ids


def test_a_new_meter_leaves_a_deleted_ledger_row_missing_for_the_guard(store: Store) -> None:
    """Absence is evidence: building the meter must not quietly put back a row a database
    administrator deleted; the state guard puts it back with an alert (SR-STATE-TAMPER)."""
    log, ids = _released(store, 3)
    try:
        with store.session() as s:  # the DBA
            s.execute(delete(EgressCharge).where(EgressCharge.charge_id == ids[1]))
        meter = default_meter(store, log, clock=time.time)
        assert meter.missing(ids) == {ids[1]}
        # the explicit backfill (a store that predates the ledger) does restore it, silently
        default_meter(store, log, backfill=True)
        assert meter.missing(ids) == set()
    finally:
        log.close()

"""Kill -9 while releases are charged: every acknowledged release is charged once, nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.monitor.egress import DAY, Budget, EgressMeter
from strongroom.store.db import Store

ORIGIN = "egress.test/log"
SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from strongroom.audit.log import AuditLog
    from strongroom.crypto.note import Ed25519Signer
    from strongroom.monitor.egress import Budget, EgressMeter
    from strongroom.store.db import Store
    store = Store.open(sys.argv[1])
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
    log = AuditLog(store, Ed25519Signer(sys.argv[3], key))
    meter = EgressMeter(store, budgets=[Budget("principal", "*", 86400, 10**15)])
    lock = threading.Lock()
    def worker(n):
        i = 0
        while True:
            nonce = f"crash-{n}-{i:08d}"
            i += 1
            meter.charge_with_event(log, "alice", 7, time.time(), artifact="m@1",
                                    charge_id=nonce, event={
                                        "actor": "alice", "action": "key.release",
                                        "obj": "m@1/s", "decision": "allow", "shard": "s",
                                        "nbytes": 7, "details": {"nonce": nonce}})
            with lock:
                print(nonce, flush=True)
    for n in range(8):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    threading.Event().wait()
""")


def test_kill_9_while_charging_with_the_audit_log(db_url: str) -> None:
    key = Ed25519PrivateKey.generate()
    Store.open(db_url).close()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, db_url,
                             key.private_bytes_raw().hex(), ORIGIN],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked: list[str] = []
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 600:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked += proc.stdout.read().split()
    store = Store.open(db_url)
    log = AuditLog(store, Ed25519Signer(ORIGIN, key))
    try:
        assert log.verify().size == log.size()
        released = [e.details["nonce"] for e in log.events() if e.action == "key.release"]
        assert len(released) == len(set(released))
        with store.engine.connect() as conn:
            charged = [str(r[0]) for r in conn.exec_driver_sql(
                "SELECT charge_id FROM egress_charges")]
        # Acknowledged releases survived; ledger and log hold exactly the same releases.
        assert set(acked) <= set(released)
        assert set(charged) == set(released) and len(charged) == len(released)
        meter = EgressMeter(store, budgets=[Budget("principal", "*", DAY, 10**15)])
        assert meter.backfill(log) == 0  # nothing to re-derive: no release went uncharged
        assert meter.usage("alice", "m@1")[0].used == 7 * len(released)
    finally:
        log.close()
        store.close()

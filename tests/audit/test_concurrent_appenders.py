"""Several processes (server replicas) appending to one PostgreSQL log at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store

SCRIPT = textwrap.dedent("""
    import sys, threading
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from strongroom.audit import AuditLog
    from strongroom.crypto.note import Ed25519Signer
    from strongroom.store.db import Store
    url, seed, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = Store.open(url)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    log = AuditLog(store, Ed25519Signer("strongroom.test/replicas", key))
    def worker(t):
        for i in range(n // 4):
            log.append(actor=name, action="replica.write", obj=f"{t}:{i}", decision="allow")
            if i % 50 == 0:
                log.checkpoint()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    log.close()
""")


def test_four_processes_one_tree(pg_url: str) -> None:
    key = Ed25519PrivateKey.generate()
    Store.open(pg_url).close()
    n, procs = 200, 4
    workers = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, pg_url, key.private_bytes_raw().hex(),
                          f"replica{p}", str(n)])
        for p in range(procs)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0] * procs
    store = Store.open(pg_url)
    log = AuditLog(store, Ed25519Signer("strongroom.test/replicas", key))
    try:
        assert log.size() == procs * n
        events = log.events()
        assert [e.index for e in events] == list(range(procs * n))  # no gaps
        assert {e.actor for e in events} == {f"replica{p}" for p in range(procs)}
        log.checkpoint()
        report = log.verify()  # one tree: every checkpoint any replica signed is consistent
        assert report.size == procs * n and report.checkpoints >= procs
    finally:
        log.close()
        store.close()

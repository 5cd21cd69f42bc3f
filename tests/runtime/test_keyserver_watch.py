"""The log-divergence detector over real key servers' audit logs (three in this process)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied, InvalidInput, StorageError
from strongroom.runtime.keyserver import PartialRequest
from strongroom.runtime.keyserver_watch import WatchSettings, divergences, keyserver_watch
from strongroom.runtime.threshold_client import ThresholdClient
from threshold_fixtures import VAULT, inprocess_keyservers, make_blob, release_request


def test_divergent_logs_are_reported(tmp_path: Path) -> None:
    manifest_key = Ed25519PrivateKey.generate()
    enclave = Ed25519PrivateKey.generate()
    mpub = manifest_key.public_key().public_bytes_raw()
    servers, commitments = inprocess_keyservers(tmp_path, 3, 2, mpub, [enclave.public_key().public_bytes_raw()])
    since = time.time() - 1
    try:
        blob = make_blob(commitments[0], manifest_key, size=4096)
        client = ThresholdClient([(s.name, s.ask) for s in servers], commitments, vault_id=VAULT)

        def logs() -> dict[str, list[object]]:
            return {s.name: list(s.server.svc.audit.recent(since)) for s in servers}

        client.release(release_request(enclave, blob), blob.manifest, blob.header)
        assert divergences(logs(), threshold=2) == []  # ks-1 and ks-2 both allowed; ks-3 never asked

        # ks-2 and ks-3 un-pin the principal; ks-1 still answers: a disagreement
        for s in servers[1:]:
            s.admin("setup", index=s.index, manifest_key=base64.b64encode(mpub).decode(), principals=[])
        with pytest.raises(AccessDenied):
            client.release(release_request(enclave, blob), blob.manifest, blob.header)
        found = divergences(logs(), threshold=2)
        assert [(d.kind, d.allowed, d.denied) for d in found] == [("disagreement", ("ks-1",), ("ks-2", "ks-3"))]
        assert "inference-enclave" in found[0].describe()

        # a partial only ks-1 gave (the requester asked no one else): below the threshold
        servers[0].ask(PartialRequest(release_request(enclave, blob), blob.manifest, blob.header))
        kinds = [d.kind for d in divergences(logs(), threshold=2)]
        assert kinds == ["disagreement", "below threshold"]
        client.close()
    finally:
        for s in servers:
            s.close()


def test_the_scheduled_watch_alerts_once_per_divergent_release(tmp_path: Path) -> None:
    """ks-1's watch reads its own log and its peers' databases and alerts through its own AlertManager."""
    manifest_key = Ed25519PrivateKey.generate()
    enclave = Ed25519PrivateKey.generate()
    mpub = manifest_key.public_key().public_bytes_raw()
    servers, commitments = inprocess_keyservers(tmp_path, 3, 2, mpub, [enclave.public_key().public_bytes_raw()])
    try:
        blob = make_blob(commitments[0], manifest_key, size=4096)
        client = ThresholdClient([(s.name, s.ask) for s in servers], commitments, vault_id=VAULT)
        own = servers[0].server.svc
        alerts = own.alerts
        assert alerts is not None
        # what `keyserver serve` starts: its own log, and its peers' databases named in the environment
        with pytest.raises(InvalidInput, match="not name=URL"):
            keyserver_watch(servers[0].server, WatchSettings(peer_logs="ks-2=/tmp/x.db"))
        assert keyserver_watch(servers[0].server, WatchSettings()) is None
        peers = ",".join(f"{s.name}=sqlite:///{tmp_path / s.name / 'strongroom.db'}" for s in servers[1:])
        watch = keyserver_watch(servers[0].server, WatchSettings(name="ks-1", peer_logs=peers))
        assert watch is not None and sorted(watch.sources) == ["ks-1", "ks-2", "ks-3"]
        clock = [time.time()]
        watch.clock = lambda: clock[0]

        client.release(release_request(enclave, blob), blob.manifest, blob.header)
        clock[0] += 60
        assert watch.tick() == []  # a clean release alerts nothing

        # a partial only ks-1 gave: not judged while it may still be in flight, then alerted once
        servers[0].ask(PartialRequest(release_request(enclave, blob), blob.manifest, blob.header))
        clock[0] = time.time()
        assert watch.tick() == []
        clock[0] += 60
        (raised,) = watch.tick()
        assert raised.new and raised.rule == "keyserver.divergence" and raised.severity == "high"
        assert "below threshold" in raised.message and "inference-enclave" in raised.message
        again = watch.tick()
        assert [a.id for a in again] == [raised.id] and not again[0].new  # de-duplicated
        # stored in ks-1's own alert table and audited in its own log
        assert [a.id for a in alerts.recent(subject="inference-enclave")] == [raised.id]
        assert any(e.action == "alert.raise" for e in own.audit.recent(clock[0] - 3600))

        # a peer's log that cannot be read is alerted, and nothing is compared that round
        def down(since: float) -> list[object]:
            raise StorageError("connection refused", obj="ks-3 database")

        watch.sources["ks-3"] = down  # type: ignore[assignment]
        (unreadable,) = watch.tick()
        assert unreadable.rule == "keyserver.log-unreadable" and unreadable.subject == "ks-3"
        client.close()
    finally:
        for s in servers:
            s.close()

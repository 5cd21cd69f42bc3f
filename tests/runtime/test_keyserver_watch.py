"""The log-divergence detector over real key servers' audit logs (three in this process)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied
from strongroom.runtime.keyserver import PartialRequest
from strongroom.runtime.keyserver_watch import divergences
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

"""A key server's partial route: what it caches between requests never outlives a change of set-up.

Three key servers in this process (2-of-3, pinned-principals mode). A manifest a
server verified once is not verified again for the next release of the same
blob; re-pinning the vault's manifest key (`setup`) or un-pinning the principal
must take effect on the very next request all the same.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied
from strongroom.runtime.keyserver import PartialRequest
from strongroom.runtime.threshold_client import ThresholdClient
from threshold_fixtures import VAULT, inprocess_keyservers, make_blob, release_request


def _b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


def test_a_cached_manifest_or_principal_does_not_outlive_a_new_setup(tmp_path: Path) -> None:
    manifest_key, principal = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    servers, commitments = inprocess_keyservers(
        tmp_path,
        3,
        2,
        manifest_key.public_key().public_bytes_raw(),
        [principal.public_key().public_bytes_raw()],
    )
    client = ThresholdClient([(s.name, s.ask) for s in servers], commitments, vault_id=VAULT)
    try:
        blob = make_blob(commitments[0], manifest_key, size=512)
        for _ in range(2):  # the second release finds the manifest verified already
            released = client.release(release_request(principal, blob), blob.manifest, blob.header)
            assert len(released.answered) == 2
        ks = servers[0]
        ks.server.partial(
            PartialRequest(release_request(principal, blob), blob.manifest, blob.header)
        )
        assert ks.server.prepared.located is None  # what the gate was handed is not kept

        # Every server's officers pin another vault manifest key: the manifest signed by the old
        # one is refused although each server verified (and cached) it a moment ago.
        other = Ed25519PrivateKey.generate()
        for s in servers:
            s.admin("setup", index=s.index, manifest_key=_b64(other), principals=[_b64(principal)])
        with pytest.raises(AccessDenied, match="0 of the 2 key servers") as err:
            client.release(release_request(principal, blob), blob.manifest, blob.header)
        assert (
            "ks-1: IntegrityError" in err.value.message or "ks-1: AccessDenied" in err.value.message
        )

        # Back to the vault's key, and the principal un-pinned on two servers: refused at once.
        for s in servers:
            pinned = [_b64(principal)] if s.index == 3 else []
            s.admin("setup", index=s.index, manifest_key=_b64(manifest_key), principals=pinned)
        with pytest.raises(AccessDenied, match="1 of the 2 key servers"):
            client.release(release_request(principal, blob), blob.manifest, blob.header)
    finally:
        client.close()
        for s in servers:
            s.close()

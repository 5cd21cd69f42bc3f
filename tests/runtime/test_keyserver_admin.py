"""Key server administration: officer-signed, single use across restarts, malformed input named."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, Sealed
from threshold_fixtures import admin_statement, inprocess_keyservers


def test_admin_statements_are_officer_signed_and_single_use(tmp_path: Path) -> None:
    principal = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    servers, commitments = inprocess_keyservers(tmp_path, 2, 2, bytes(32), [principal])
    ks = servers[0]
    try:
        status = ks.server.status()
        assert status["index"] == 1 and status["epoch"] == 1
        assert status["commitments"] == [c.hex() for c in commitments]
        assert "value" not in str(status)
        # a stranger's statement is refused
        with pytest.raises(IntegrityError):
            ks.server.admin(admin_statement(Ed25519PrivateKey.generate(), "setup", index=1))
        # a statement is spent once, and stays spent after the server restarts
        import base64

        stmt = admin_statement(ks.officer, "setup", index=1, manifest_key=base64.b64encode(bytes(32)).decode(),
                               principals=[])
        ks.server.admin(stmt)
        with pytest.raises(AccessDenied):
            ks.server.admin(stmt)
        ks.unseal()
        with pytest.raises(AccessDenied):
            ks.server.admin(stmt)
        assert ks.server.status()["epoch"] == 1  # the share survived the restart, sealed in the barrier
        # malformed administration is named, not a crash
        with pytest.raises(InvalidInput, match="unknown operation"):
            ks.admin("format-disk")
        with pytest.raises(InvalidInput, match="malformed dealing"):
            ks.admin("accept", mode="dkg", dealings=[{"dealer": 2, "commitments": [], "pieces": {}}])
        with pytest.raises(InvalidInput, match="deal needs"):
            ks.admin("deal", mode="dkg")
        # sealing forgets the share held in memory; nothing answers until the custodians unseal again
        ks.server.seal()
        with pytest.raises(Sealed):
            ks.server.share()
        with pytest.raises(Sealed):
            ks.admin("setup", index=1)
        assert "epoch" not in ks.server.status()
        ks.unseal()
        assert ks.server.share()[0].public_key == commitments[0]
    finally:
        for s in servers:
            s.close()

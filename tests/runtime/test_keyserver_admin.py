"""Key server administration: officer-signed, single use across restarts, malformed input named."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, Sealed, WeakPublicKey
from threshold_fixtures import admin_statement, inprocess_keyservers


def test_admin_statements_are_officer_signed_and_single_use(tmp_path: Path) -> None:
    principal = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    manifest_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    servers, commitments = inprocess_keyservers(tmp_path, 2, 2, manifest_key, [principal])
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

        # a key no key generation makes (here the small-order point of all zero bytes) is refused
        # by name, before anything is set up
        weak = base64.b64encode(bytes(32)).decode()
        with pytest.raises(WeakPublicKey, match=r"keyserver-admin setup.*small order"):
            ks.server.admin(admin_statement(ks.officer, "setup", index=1, manifest_key=weak, principals=[]))
        with pytest.raises(WeakPublicKey, match="small order"):
            ks.server.admin(admin_statement(ks.officer, "setup", index=1, principals=[weak],
                                            manifest_key=base64.b64encode(principal).decode()))
        stmt = admin_statement(ks.officer, "setup", index=1, manifest_key=base64.b64encode(manifest_key).decode(),
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


def test_http_face_refuses_bad_input_with_named_errors(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from strongroom.runtime.keyserver import PartialRequest
    from strongroom.runtime.keyserver_app import create_app
    from threshold_fixtures import make_blob, release_request

    manifest_key = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    servers, commitments = inprocess_keyservers(
        tmp_path, 2, 2, manifest_key.public_key().public_bytes_raw(), [])
    try:
        http = TestClient(create_app(servers[0].server))
        assert http.get("/v1/keyserver/status").json()["index"] == 1
        for body, status in ((b"not json", 400), (b"[1, 2]", 400), (b'{"principal": 3}', 400)):
            r = http.post("/v1/keyserver/partial", content=body)
            assert r.status_code == status and r.json()["error"]["type"] == "InvalidInput", r.text
        assert http.post("/v1/keyserver/unseal", json={"submission": "%%"}).status_code == 400
        assert http.post("/v1/keyserver/admin", json={"envelope": 7}).status_code == 400
        blob = make_blob(commitments[0], manifest_key, size=1024)
        body = PartialRequest(release_request(stranger, blob), blob.manifest, blob.header).to_json()
        r = http.post("/v1/keyserver/partial", json=body)
        assert r.status_code == 403 and "not pinned on this key server" in r.json()["error"]["message"]
        r = http.post("/v1/keyserver/partial", json=body | {"header": "AAAA"})
        assert r.status_code in (400, 409) and "Traceback" not in r.text
        http.close()
    finally:
        for s in servers:
            s.close()

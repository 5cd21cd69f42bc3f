"""A key server's setup pins hybrid directory officers' ML-DSA-65 keys (issue 23 item 3).

``officers_mldsa`` (base64 ML-DSA-65 keys by the officer's Ed25519 key id) beside
``officers``: the server's Grant rule then counts such an officer's
enrollments and labels only with both signatures (the directory rule, tested in
tests/access/test_hybrid_officers.py). A key id that is not among the officers,
or a malformed key, is refused and nothing is pinned.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyserver_procs import admin_statement, start_keyserver
from strongroom.keys.identity import Identity


def test_setup_pins_hybrid_officers_and_refuses_a_stray_key(tmp_path: Path) -> None:
    mpub = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    hybrid, classical = Identity.generate("olivia", pq=True), Identity.generate("oscar")
    assert hybrid.mldsa_key is not None
    pq = base64.b64encode(hybrid.mldsa_key.public_key().public_bytes_raw()).decode()
    setup = {"manifest_key": base64.b64encode(mpub).decode(), "principals": [],
             "officers": [base64.b64encode(o.public.public_bytes).decode()
                          for o in (hybrid, classical)], "officer_threshold": 2}
    server = start_keyserver(tmp_path, 1, None, mpub, [])
    try:
        def refused(**fields: object) -> str:
            env = admin_statement(server.officer, "setup", index=1, **setup, **fields)
            r = server.http.post(f"{server.url}/v1/keyserver/admin", json={"envelope": env})
            assert r.status_code == 400, r.text
            return r.text

        stray = Identity.generate("elsewhere").public.key_id
        assert "not among the officers" in refused(officers_mldsa={stray: pq})
        assert "setup needs" in refused(officers_mldsa={hybrid.public.key_id: "bm90IGEga2V5"})
        out = server.admin("setup", index=1, **setup,
                           officers_mldsa={hybrid.public.key_id: pq})
        assert out["mode"] == "grant" and out["officer_threshold"] == 2, out
    finally:
        server.stop()

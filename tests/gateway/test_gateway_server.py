"""The gateway end to end: encrypted MiniLM, signed code, loopback HTTP, audit and alerts."""

from __future__ import annotations

import json
import random
import string

import httpx
import numpy as np
import pytest

from strongroom.errors import AccessDenied, IntegrityError
from strongroom.gateway import (
    EMBEDDINGS_PATH,
    AllowList,
    AuditAlertSink,
    GatewayConfig,
    GatewayServer,
    SignedRequestAuth,
    sign_release,
    sign_request,
    start_gateway,
)
from strongroom.gateway.codesign import release_statement
from strongroom.gateway.defence import DetectorConfig
from strongroom.keys.identity import Identity
from strongroom.vault.vault import Vault

from gateway_helpers import REFERENCE, minilm_dir

OWNERS = [Identity.generate(n) for n in ("alice", "bob", "carol")]
IVY = Identity.generate("ivy")
MALLORY = Identity.generate("mallory")


def _post(client: httpx.Client, who: Identity, doc: dict[str, object]) -> httpx.Response:
    body = json.dumps(doc).encode()
    return client.post(EMBEDDINGS_PATH, content=body,
                       headers=sign_request(who, "POST", EMBEDDINGS_PATH, body))


def test_serves_reference_embeddings_to_an_infer_principal(vault: Vault) -> None:
    vault.import_weights(minilm_dir(), "minilm")
    cases = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"][:4]
    gw = start_gateway(
        vault, "minilm", release=sign_release(OWNERS[:2]),
        code_owners=[o.public for o in OWNERS], threshold=2,
        auth=SignedRequestAuth([IVY.public, MALLORY.public]),
        authorizer=AllowList({"ivy", "mallory"}), alerts=AuditAlertSink(vault.audit),
        config=GatewayConfig(detector=DetectorConfig(random_texts=16)),
    )
    try:
        assert gw.memory is not None and gw.memory.wanted_bytes > 80 << 20
        with GatewayServer(gw) as server, httpx.Client(base_url=server.url) as client:
            reply = _post(client, IVY, {"input": [c["text"] for c in cases]})
            assert reply.status_code == 200, reply.text
            data = reply.json()
            assert data["model"] == "minilm@1" and data["dimensions"] == 384
            for got, case in zip(data["data"], cases, strict=True):
                ref = np.array(case["embedding"])
                assert 1 - float(np.array(got["embedding"]) @ ref) < 1e-4
            rng = random.Random(3)
            noise = ["".join(rng.choice(string.ascii_letters) for _ in range(30)) for _ in range(20)]
            assert _post(client, MALLORY, {"input": noise}).status_code == 429
            assert _post(client, MALLORY, {"input": "a fair question"}).status_code == 429
            assert _post(client, IVY, {"input": "still served"}).status_code == 200
    finally:
        gw.close()
    events = vault.audit.tail(20)
    served = [e for e in events if e.action == "gateway.infer" and e.decision == "allow"]
    assert len(served) == 2
    assert {"input_sha256", "output_sha256"} <= set(served[0].details)
    assert all(cases[0]["text"].encode() not in e.body for e in events)
    alerts = [e for e in events if e.action == "gateway.alert"]
    assert [(a.object, a.details["kind"]) for a in alerts] == [("mallory", "near-random-inputs")]
    starts = [e for e in events if e.action == "gateway.start"]
    assert starts[0].details["release_signers"] == ["alice", "bob"]


def test_an_infer_principal_cannot_load_the_weights(vault: Vault) -> None:
    vault.import_weights(minilm_dir(), "minilm")
    as_ivy = Vault(vault.settings, vault.store, vault.blobs, vault.keys, vault.audit, identity=IVY)
    with pytest.raises(AccessDenied):
        as_ivy.open_weights("minilm")


def test_refuses_to_start_when_the_code_differs_from_the_release(vault: Vault) -> None:
    vault.import_weights(minilm_dir(), "minilm")
    from strongroom.crypto.dsse import sign_statement
    from strongroom.gateway.codesign import PAYLOAD_TYPE

    statement = release_statement()
    statement["files"]["strongroom/gateway/server.py"] = "0" * 64
    forged = sign_statement(statement, PAYLOAD_TYPE, *(o.private_key for o in OWNERS[:2]))
    with pytest.raises(IntegrityError, match=r"gateway/server\.py"):
        start_gateway(vault, "minilm", release=forged, code_owners=[o.public for o in OWNERS],
                      threshold=2, auth=SignedRequestAuth([]), authorizer=AllowList(()),
                      alerts=AuditAlertSink(vault.audit))
    last = vault.audit.tail(1)[0]
    assert (last.action, last.decision) == ("gateway.start", "deny")

"""tlog-witness add-checkpoint: status codes, persistence, and a real HTTP server."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog, Witness, WitnessClient, create_app, open_checkpoint
from strongroom.audit.checkpoint import Checkpoint, sign_checkpoint
from strongroom.audit.merkle import Frontier, consistency_proof, leaf_hash
from strongroom.crypto.note import SIG_COSIGNATURE_V1, Ed25519Signer, generate_key, new_signer
from strongroom.store.db import Store

from audit_helpers import ORIGIN, MakeWitness, fill


def tree(n: int) -> tuple[bytes, dict[tuple[int, int], bytes]]:
    f, nodes = Frontier(), {}
    for i in range(n):
        h = leaf_hash(b"%d" % i)
        nodes[(0, i)] = h
        for level, idx, nh in f.append(h):
            nodes[(level, idx)] = nh
    return f.root(), nodes


def body(old: int, proof: list[bytes], note: str) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


def test_status_codes(make_witness: MakeWitness, signer: Ed25519Signer, tmp_path: Path) -> None:
    witness, client = make_witness("witness.test/w1", [signer.vkey])
    root5 = tree(5)[0]
    root8, nodes = tree(8)
    cp5 = sign_checkpoint(Checkpoint(ORIGIN, 5, root5), signer)
    cp8 = sign_checkpoint(Checkpoint(ORIGIN, 8, root8), signer)
    status, _, lines = witness.add_checkpoint(body(0, [], cp5))
    assert status == 200 and lines.startswith("— witness.test/w1 ")
    opened = open_checkpoint(cp5 + lines, log_key=signer.vkey, witness_keys=[witness.vkey], quorum=1)
    assert opened.cosigners == ("witness.test/w1",)
    # Stale old size: 409 with the witness's size.
    assert witness.add_checkpoint(body(0, [], cp8)) == (409, "text/x.tlog.size", "5\n")
    # A wrong proof: 422.
    assert witness.add_checkpoint(body(5, [b"\x00" * 32] * 3, cp8))[0] == 422
    proof = consistency_proof(5, 8, lambda keys: {k: nodes[k] for k in keys})
    assert witness.add_checkpoint(body(5, proof, cp8))[0] == 200
    # Unknown log key: 403; unknown origin: 404; malformed: 400; old > size: 400.
    other = Ed25519Signer(ORIGIN, Ed25519PrivateKey.generate())
    assert witness.add_checkpoint(body(8, [], sign_checkpoint(Checkpoint(ORIGIN, 8, root8), other)))[0] == 403
    stranger = Ed25519Signer("elsewhere.example/log", signer.private)
    assert witness.add_checkpoint(body(0, [], sign_checkpoint(Checkpoint("elsewhere.example/log", 1, root8), stranger)))[0] == 404
    assert witness.add_checkpoint(b"old 01\n\n" + cp8.encode())[0] == 400
    assert witness.add_checkpoint(body(9, [], cp8))[0] == 400
    # The view survives a restart (persisted atomically before answering).
    again = Witness(witness.signer, [signer.vkey], state_path=witness.state_path)
    assert again.latest(ORIGIN) == (8, root8)
    assert client.name == "witness.test/w1"


def test_witness_over_http(db_url: str, signer: Ed25519Signer, tmp_path: Path) -> None:
    """A real uvicorn witness; the log publishes to it with a quorum of one."""
    skey, vkey = generate_key("witness.test/http", SIG_COSIGNATURE_V1)
    witness = Witness(new_signer(skey), [signer.vkey], state_path=tmp_path / "w.json")  # type: ignore[arg-type]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(witness), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    store = Store.open(db_url)
    client = WitnessClient(f"http://127.0.0.1:{port}", vkey)
    log = AuditLog(store, signer, ORIGIN, witnesses=[client], quorum=1)
    try:
        fill(log, 5)
        note = log.checkpoint()
        fill(log, 5)
        note = log.checkpoint()
        cp = open_checkpoint(note, log_key=signer.vkey, witness_keys=[vkey], quorum=1)
        assert cp.checkpoint.size == 10 and cp.cosigners == ("witness.test/http",)
        assert log.verify().cosignatures == 2
        proof = log.prove(3)
        assert proof.verify(signer.vkey, [vkey], quorum=1).index == 3
    finally:
        log.close()
        store.close()
        client.close()
        server.should_exit = True
        thread.join()

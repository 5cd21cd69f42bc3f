"""Attestation nonces live in the deployment's database: any host spends them, once.

Two server hosts on one database (SQLite and PostgreSQL, one world each): the
nonce host A issued is spent on host B, and one issued by a host that then
stopped is spent on a host started after it (nothing kept in memory). A replay
is refused on either host; a nonce whose row a DBA inserted (with no gate's
MAC), or whose issued row a DBA deleted, is refused, fail closed.

The same world loads the labelled weights as an enclave would (what ``gateway
serve --attest`` does, with the test platform's evidence), and ``gateway serve
--attest`` on a host with no TEE stops with a named error.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from server_kit import (  # noqa: F401
    ARTIFACT,
    ServerWorld,
    SignedClient,
    second_host,
    server_db,
)
from sqlalchemy import delete, insert, update
from test_server_attested_release import GOOD, trusting_world

from strongroom.attest.admission import binding
from strongroom.attest.enclave import TEST_CHIP_ENV, Enclave, evidence_source
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.crypto.age import Stanza, X25519Identity
from strongroom.errors import AccessDenied
from strongroom.store.tables.attest import AttestNonce

from cli_fixtures import strongroom_exe


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Milan")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    vendor: ForgedVendor,
    server_db: str | None,  # noqa: F811
) -> Iterator[ServerWorld]:
    yield from trusting_world(tmp_path_factory.mktemp("attest-nonces"), vendor, server_db)


def _nonce(client: SignedClient) -> bytes:
    r = client.post("/v1/keys/attest/nonce", {})
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["nonce"])


def _release(
    w: ServerWorld,
    client: SignedClient,
    chip: ForgedChip,
    nonce: bytes,
    enclave: X25519Identity,
    recipient: str | None = None,
) -> httpx.Response:
    report = chip.report(
        report_data=binding(enclave.recipient.public_bytes, nonce), measurement=GOOD
    )
    pems = [chip.vcek_pem(), chip.ask.public_bytes(Encoding.PEM)]
    return client.post(
        "/v1/keys/release-attested",
        {
            **w.release_body(),
            "recipient": recipient or str(enclave.recipient),
            "platform": "sev-snp-test",
            "report": base64.b64encode(report).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "collateral": [base64.b64encode(p).decode() for p in pems],
        },
    )


def _opens(r: httpx.Response, enclave: X25519Identity) -> bool:
    assert r.status_code == 200, r.text
    out = r.json()
    stanza = Stanza(
        out["stanza_type"], tuple(out["stanza_args"]), base64.b64decode(out["stanza_body"])
    )
    key = enclave.unwrap([stanza])
    return key is not None and len(key) == 16


def _refused(r: httpx.Response, check: str) -> None:
    assert r.status_code == 403, r.text
    assert check in r.text and "Traceback" not in r.text


def test_a_nonce_from_one_host_is_spent_once_on_another_and_after_a_restart(
    world: ServerWorld, vendor: ForgedVendor
) -> None:
    w, chip = world, vendor.chip()
    alice = w.people["alice"]
    a = w.client("alice")
    with second_host(w, "host-b") as http_b:
        b = SignedClient(http_b, alice)
        enclave = X25519Identity.generate()
        nonce = _nonce(a)  # issued by host A, evidence brought to host B
        assert _opens(_release(w, b, chip, nonce, enclave), enclave)
        # replayed (same report, same nonce) on either host: the nonce is spent
        _refused(_release(w, a, chip, nonce, X25519Identity.generate()), "nonce")
        _refused(_release(w, b, chip, nonce, X25519Identity.generate()), "nonce")
        later = _nonce(b)  # issued by host B, which then stops
    with second_host(w, "host-c") as http_c:  # a host started afterwards: no shared memory
        enclave = X25519Identity.generate()
        c = SignedClient(http_c, alice)
        assert _opens(_release(w, c, chip, later, enclave), enclave)
        _refused(_release(w, a, chip, later, X25519Identity.generate()), "nonce")


def test_rows_a_dba_writes_or_deletes_admit_nothing(
    world: ServerWorld, vendor: ForgedVendor
) -> None:
    w, chip = world, vendor.chip()
    a = w.client("alice")
    table = AttestNonce.__table__
    # a nonce the DBA made up, with its row: no gate's MAC, refused before the row is read
    forged = os.urandom(12) + (2**62).to_bytes(8, "big") + os.urandom(12)
    with w.ctx.store.engine.begin() as conn:
        conn.execute(insert(table).values(nonce_id=forged[:12].hex(), expires=2.0**40))
    _refused(_release(w, a, chip, forged, X25519Identity.generate()), "MAC")
    # a real nonce whose row the DBA deleted: not spendable (fail closed)
    issued = _nonce(a)
    with w.ctx.store.engine.begin() as conn:
        assert (
            conn.execute(delete(table).where(table.c.nonce_id == issued[:12].hex())).rowcount == 1
        )
    _refused(_release(w, a, chip, issued, X25519Identity.generate()), "nonce")
    # a spent nonce the DBA marks unspent again: the replay still binds the first enclave's
    # key, so it is refused for any other (and the first enclave holds its own key anyway)
    enclave = X25519Identity.generate()
    nonce = _nonce(a)
    assert _opens(_release(w, a, chip, nonce, enclave), enclave)
    with w.ctx.store.engine.begin() as conn:
        conn.execute(update(table).where(table.c.nonce_id == nonce[:12].hex()).values(spent=None))
    thief = X25519Identity.generate()
    report = _release(w, a, chip, nonce, enclave, recipient=str(thief.recipient))
    _refused(report, "binding")


def test_a_workload_loads_weights_as_an_enclave(
    world: ServerWorld, vendor: ForgedVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``gateway serve --attest`` does: the vault asks for each file key through the
    attested path, with the test platform's evidence, and opens it with its ephemeral key."""
    w = world
    chip = tmp_path / "chip.json"
    vendor.chip().save(chip, GOOD)
    monkeypatch.setenv(TEST_CHIP_ENV, str(chip))
    vault = w.ctx.vault(identity=w.people["alice"])
    with pytest.raises(AccessDenied, match="attested"):
        vault.open_weights(ARTIFACT)  # not an enclave: refused
    enclave = Enclave(evidence_source("sev-snp"))
    assert enclave.platform == "sev-snp-test"
    vault.enclave = enclave
    weights = vault.open_weights(ARTIFACT)
    try:
        for name, array in w.model.items():
            assert np.array_equal(weights[name], array)
    finally:
        weights.close()
    mine = str(enclave.identity.recipient)
    admits = [
        e
        for e in w.ctx.audit().recent(0)
        if e.action == "attest.admit" and e.details.get("recipient") == mine
    ]
    assert [e.decision for e in admits] == ["allow"]
    released = [
        e
        for e in w.ctx.audit().recent(0)
        if e.action == "key.release"
        and e.decision == "allow"
        and e.details.get("attestation", {}).get("recipient") == mine
    ]
    assert released and all(e.details["attestation"]["measurement"] == GOOD.hex() for e in released)
    # the gate forgot the key (a restart): the workload attests again, unasked
    w.ctx.keys._attested_gate().attestation.desk._admitted.clear()  # type: ignore[union-attr]
    vault.open_weights(ARTIFACT).close()
    admits = [
        e
        for e in w.ctx.audit().recent(0)
        if e.action == "attest.admit" and e.details.get("recipient") == mine
    ]
    assert [e.decision for e in admits] == ["allow", "allow"]


def test_gateway_attest_without_a_tee_is_a_named_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [
            strongroom_exe(),
            "gateway",
            "serve",
            ARTIFACT,
            "--release",
            str(tmp_path / "r.json"),
            "--attest",
            "sev-snp",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "no sev-snp evidence" in out.stderr and "/sys/kernel/config/tsm/report" in out.stderr

"""Grants that say ``attested: <policy>``: filed and approved through the CLI, enforced by the server.

A real server (uvicorn on loopback; SQLite and PostgreSQL, one world each) whose
gate trusts a test vendor's roots (test only). alice files ``access request
--attested strict`` with the CLI and bob and carol approve it with the CLI:
their approvals sign the requirement with the request. The server's gate then
releases that Grant's keys only into an enclave ``strict`` admits, though the
artifact's label says nothing of attestation. Once the label says ``attested:
inference`` too, the evidence must satisfy both policies.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from server_kit import (  # noqa: F401
    ARTIFACT,
    ServerWorld,
    UvicornThread,
    build_world,
    run_cli,
    server_db,
)

from strongroom.access import statements
from strongroom.access.directory import ResourceLabel, Rule, level
from strongroom.attest.admission import binding
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.policy import AttestationPolicy, sign_policy
from strongroom.crypto.age import Stanza, X25519Identity

GOOD, OTHER = b"\x21" * 48, b"\x22" * 48


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Genoa")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    vendor: ForgedVendor,
    server_db: str | None,  # noqa: F811
) -> Iterator[ServerWorld]:
    tmp = tmp_path_factory.mktemp("attested-grants")
    roots = tmp / "test-roots.pem"
    roots.write_bytes(vendor.ark.public_bytes(Encoding.PEM))
    server = UvicornThread()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STRONGROOM_ATTEST_TEST_ROOTS", str(roots))
            for w in build_world(tmp, http_factory=server, db_url=server_db):
                # "inference" admits either image; "strict" only GOOD
                for name, allowed in (("inference", {GOOD, OTHER}), ("strict", {GOOD})):
                    policy = AttestationPolicy(
                        name=name,
                        serial=1,
                        platforms=("sev-snp-test",),
                        measurements=frozenset(m.hex() for m in allowed),
                    )
                    env = sign_policy(policy, w.officer.private_key)
                    statements.put(w.ctx.store, "attest-policy", env, subject=name)
                for who in ("bob", "carol"):
                    w.people[who].save(w.tmp / f"{who}.identity")
                yield w
    finally:
        server.stop()


def _release(
    w: ServerWorld, chip: ForgedChip, measurement: bytes
) -> tuple[httpx.Response, X25519Identity]:
    alice = w.client("alice")
    r = alice.post("/v1/keys/attest/nonce", {})
    assert r.status_code == 200, r.text
    nonce = base64.b64decode(r.json()["nonce"])
    enclave = X25519Identity.generate()
    report = chip.report(
        report_data=binding(enclave.recipient.public_bytes, nonce), measurement=measurement
    )
    pems = [chip.vcek_pem(), chip.ask.public_bytes(Encoding.PEM)]
    body = {
        **w.release_body(),
        "recipient": str(enclave.recipient),
        "platform": "sev-snp-test",
        "report": base64.b64encode(report).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "collateral": [base64.b64encode(p).decode() for p in pems],
    }
    return alice.post("/v1/keys/release-attested", body), enclave


def _opened(r: httpx.Response, enclave: X25519Identity) -> bool:
    assert r.status_code == 200, r.text
    out = r.json()
    stanza = Stanza(
        out["stanza_type"], tuple(out["stanza_args"]), base64.b64decode(out["stanza_body"])
    )
    return enclave.unwrap([stanza]) is not None


def _allowed(w: ServerWorld) -> list[Any]:
    """The allowed key releases in the audit log, oldest first."""
    entries = [e for e in w.ctx.audit().recent(0) if e.action == "key.release"]
    return sorted((e for e in entries if e.decision == "allow"), key=lambda e: e.time)


def test_a_grant_that_says_attested_releases_only_into_enclaves_its_policy_admits(
    world: ServerWorld, vendor: ForgedVendor
) -> None:
    w, chip = world, vendor.chip()
    out = run_cli(
        w,
        "alice",
        "access",
        "request",
        ARTIFACT,
        "--purpose",
        "enclave eval",
        "--attested",
        "strict",
    ).stdout
    assert "attested: strict" in out
    request_id = out.split()[1]
    shown = json.loads(run_cli(w, "bob", "access", "show", request_id, "--json").stdout)
    assert shown["attested"] == "strict"  # what the approver signs, shown before they sign
    for who in ("bob", "carol"):
        run_cli(w, who, "access", "approve", request_id)

    plain = w.client("alice").post("/v1/keys/release", w.release_body())
    assert plain.status_code == 403, plain.text
    assert "the Grant says attested: strict" in plain.text

    refused, _ = _release(w, chip, OTHER)  # an image strict does not list
    assert refused.status_code == 403, refused.text
    assert "measurement" in refused.text
    ok, enclave = _release(w, chip, GOOD)
    assert _opened(ok, enclave)
    (entry,) = _allowed(w)
    assert entry.details["attestation"]["policy"] == "strict"

    # the label now says attested: inference as well: the evidence must satisfy both
    lab = ResourceLabel(
        ARTIFACT,
        level("secret"),
        ("atlas",),
        {"load": Rule.parse("2 of approvers")},
        serial=2,
        issued=int(time.time()),
        attested="inference",
    ).sign(w.officer.private_key)
    r = w.client("officer").post("/v1/statements", {"kind": "label", "envelope": lab})
    assert r.status_code == 201, r.text
    refused, _ = _release(w, chip, OTHER)  # inference admits it, strict does not
    assert refused.status_code == 403, refused.text
    assert "measurement" in refused.text
    admits = {
        (e.details["policy"], e.decision, e.details.get("also"))
        for e in w.ctx.audit().recent(0)
        if e.action == "attest.admit"
    }  # the evidence checked once (under inference), then held to strict too
    assert {("inference", "allow", None), ("strict", "deny", "inference")} <= admits
    ok, enclave = _release(w, chip, GOOD)
    assert _opened(ok, enclave)
    att = _allowed(w)[-1].details["attestation"]
    assert (att["policy"], att["grant_policy"]) == ("inference", "strict")


def test_a_request_naming_no_valid_policy_is_refused_by_name(world: ServerWorld) -> None:
    out = run_cli(
        world,
        "alice",
        "access",
        "request",
        ARTIFACT,
        "--purpose",
        "p",
        "--attested",
        "Not A Policy",
        ok=False,
    )
    assert out.returncode != 0
    assert "attestation policy name" in out.stderr + out.stdout

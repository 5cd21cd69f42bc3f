"""Attested release over the HTTP API: the deployment's gate verifies enclave evidence.

A real server world (server_kit: a 2-of-3 vault unsealed over the API, an artifact,
people enrolled, a Grant over approvals) whose gate is given a test vendor's roots
through ``STRONGROOM_ATTEST_TEST_ROOTS`` (test only); the artifact is relabelled
``attested: inference`` and the officers pin a policy for the ``sev-snp-test``
platform. The enclave asks for a nonce, binds it with its ephemeral key in the
report data, and gets back only an age stanza its key opens. This is the one test
that proves the HTTP path (SQLite and PostgreSQL, one world each).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from server_kit import ARTIFACT, ServerWorld, build_world, server_db  # noqa: F401

from strongroom.access import statements
from strongroom.access.directory import ResourceLabel, Rule, level
from strongroom.attest.admission import binding
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.policy import AttestationPolicy, sign_policy
from strongroom.crypto.age import Stanza, X25519Identity
from strongroom.posture.assess import ControlResult, assess
from strongroom.posture.facts import collect

GOOD = b"\x5a" * 48


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Genoa")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, vendor: ForgedVendor,
          server_db: str | None) -> Iterator[ServerWorld]:  # noqa: F811
    yield from trusting_world(tmp_path_factory.mktemp("attested"), vendor, server_db)


def trusting_world(tmp: Path, vendor: ForgedVendor, db_url: str | None) -> Iterator[ServerWorld]:
    """The attested world, its gate given ``vendor``'s roots (test only) while it lives."""
    roots = tmp / "test-roots.pem"
    roots.write_bytes(vendor.ark.public_bytes(Encoding.PEM))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRONGROOM_ATTEST_TEST_ROOTS", str(roots))
        yield from _attested_world(tmp, db_url)


def _attested_world(tmp: Path, db_url: str | None) -> Iterator[ServerWorld]:
    for w in build_world(tmp, db_url=db_url):
        officer = w.officer
        policy = AttestationPolicy(name="inference", serial=1, platforms=("sev-snp-test",),
                                   measurements=frozenset({GOOD.hex()}))
        statements.put(w.ctx.store, "attest-policy", sign_policy(policy, officer.private_key),
                       subject="inference")
        lab = ResourceLabel(ARTIFACT, level("secret"), ("atlas",),
                            {"load": Rule.parse("2 of approvers")}, serial=2,
                            issued=int(time.time()), attested="inference"
                            ).sign(officer.private_key)
        r = w.client("officer").post("/v1/statements", {"kind": "label", "envelope": lab})
        assert r.status_code == 201, r.text
        w.grant_load()
        yield w


def _claim(w: ServerWorld, chip: ForgedChip, enclave: X25519Identity, **report: object
           ) -> dict[str, object]:
    r = w.client("alice").post("/v1/keys/attest/nonce", {})
    assert r.status_code == 200, r.text
    nonce = base64.b64decode(r.json()["nonce"])
    rep = chip.report(report_data=binding(enclave.recipient.public_bytes, nonce),
                      **report)  # type: ignore[arg-type]
    pems = [chip.vcek_pem(), chip.ask.public_bytes(Encoding.PEM)]
    return {"recipient": str(enclave.recipient), "platform": "sev-snp-test",
            "report": base64.b64encode(rep).decode(), "nonce": base64.b64encode(nonce).decode(),
            "collateral": [base64.b64encode(p).decode() for p in pems]}


def test_enclave_gets_only_a_stanza_its_key_opens_and_replays_are_refused(
        world: ServerWorld, vendor: ForgedVendor, monkeypatch: pytest.MonkeyPatch) -> None:
    w, chip = world, vendor.chip()
    alice = w.client("alice")
    # the labelled artifact's key is not released in clear
    plain = alice.post("/v1/keys/release", w.release_body())
    assert plain.status_code == 403, plain.text
    assert "attested" in plain.text

    enclave = X25519Identity.generate()
    claim = _claim(w, chip, enclave, measurement=GOOD)
    r = alice.post("/v1/keys/release-attested", {**w.release_body(), **claim})
    assert r.status_code == 200, r.text
    out = r.json()
    assert "file_key" not in out
    stanza = Stanza(out["stanza_type"], tuple(out["stanza_args"]),
                    base64.b64decode(out["stanza_body"]))
    file_key = enclave.unwrap([stanza])
    assert file_key is not None and len(file_key) == 16
    assert X25519Identity.generate().unwrap([stanza]) is None

    # the admission stands for the ephemeral key: no evidence on the next release
    again = alice.post("/v1/keys/release-attested",
                       {**w.release_body(), "recipient": str(enclave.recipient)})
    assert again.status_code == 200, again.text

    # the same report and nonce replayed for another ephemeral key: refused, named
    thief = X25519Identity.generate()
    replay = alice.post("/v1/keys/release-attested",
                        {**w.release_body(), **claim, "recipient": str(thief.recipient)})
    assert replay.status_code == 403, replay.text
    assert "nonce" in replay.text
    # an unlisted measurement, with a fresh nonce: refused, named
    other = X25519Identity.generate()
    bad = alice.post("/v1/keys/release-attested",
                     {**w.release_body(), **_claim(w, chip, other, measurement=b"\x01" * 48)})
    assert bad.status_code == 403, bad.text
    assert "measurement" in bad.text

    # every admission decision is in the audit log with the nonce it spent
    entries = [e for e in w.ctx.audit().recent(0) if e.action == "attest.admit"]
    spent = {e.details["nonce"] for e in entries}
    assert base64.b64decode(str(claim["nonce"])).hex() in spent
    assert {e.decision for e in entries} == {"allow", "deny"}
    assert all(file_key.hex() not in str(e.details) for e in entries)


    # posture W-4: critical while the gate trusts test roots; met once they are gone
    # (the one model is labelled attested and both its releases were bound to evidence)
    w4 = _w4(w)
    assert w4.status == "not met" and "critical" in w4.evidence
    monkeypatch.delenv("STRONGROOM_ATTEST_TEST_ROOTS")
    w4 = _w4(w)
    assert w4.status == "met", w4.evidence
    assert "2 release(s)" in w4.evidence


def _w4(w: ServerWorld) -> ControlResult:
    facts = collect(w.ctx.settings.resolved_home, w.ctx.store, w.ctx.keys)
    return next(c for f in assess(facts).families for c in f.controls if c.id == "W-4")


def test_malformed_claim_is_a_named_error(world: ServerWorld) -> None:
    r = world.client("alice").post("/v1/keys/release-attested",
                                   {**world.release_body(), "recipient": "age1notakey000"})
    assert r.status_code in (400, 422), r.text
    assert "Traceback" not in r.text

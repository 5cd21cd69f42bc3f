"""The API end to end: unseal over HTTP, a Grant made by three people's signatures, a key
release over a real uvicorn socket that decrypts the shard, audit and alerts reads."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world, server_db  # noqa: F401

from strongroom.audit.log import InclusionProof
from strongroom.errors import AccessDenied
from strongroom.server.client import Client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from build_world(tmp_path_factory.mktemp("api"), http_factory=server,
                               db_url=server_db)
    finally:
        server.stop()


def test_seal_status_is_public_and_shows_unsealed(world: ServerWorld) -> None:
    st = world.client(None).get("/v1/sys/seal-status").json()
    assert st["initialized"] and not st["sealed"] and st["threshold"] == 2


def test_whoami_names_the_signer(world: ServerWorld) -> None:
    assert world.client("bob").get("/v1/whoami").json()["name"] == "bob"
    assert world.client("officer").get("/v1/whoami").json()["officer"] is True


def test_people_and_compartments(world: ServerWorld) -> None:
    people = {p["name"]: p for p in world.client("bob").get("/v1/people").json()}
    assert {"alice", "bob", "carol", "eve"} <= set(people)
    assert people["bob"]["roles"] == ["approvers"] and people["bob"]["clearance"] == "secret"
    comps = {c["compartment"]: c for c in world.client("bob").get("/v1/compartments").json()}
    assert "alice" in comps["atlas"]["people"]


def test_authorised_key_release_over_http_decrypts_the_shard(world: ServerWorld) -> None:
    grant = world.grant_load()
    grants = world.client("alice").get("/v1/access/grants").json()
    assert [g["grant_id"] for g in grants if g["holder"] == "alice"] == [grant]
    assert sorted(next(g for g in grants if g["grant_id"] == grant)["approvers"]) == ["bob", "carol"]
    assert world.client("alice").get("/v1/weights").json()[0]["name"] == ARTIFACT
    client = Client(str(world.http.base_url), world.people["alice"], http=world.http)
    ref, files, nbytes = client.verify(ARTIFACT, purpose="load")
    assert (ref, files) == (f"{ARTIFACT}@1", 1) and nbytes > 0
    last = world.ctx.audit().tail(1)[0]
    assert (last.action, last.decision, last.actor) == ("key.release", "allow", "alice")
    assert last.details.get("grant_id") == grant


def test_release_evidence_replayed_is_refused(world: ServerWorld) -> None:
    body = world.release_body("alice")
    first = world.client("alice").post("/v1/keys/release", body)
    assert first.status_code == 200, first.text
    key = base64.b64decode(first.json()["file_key"])
    assert len(key) == 16
    again = world.client("alice").post("/v1/keys/release", body)  # new HTTP nonce, same evidence
    assert again.status_code == 403 and "file_key" not in again.text


def test_audit_reads_need_the_auditor_role(world: ServerWorld) -> None:
    with pytest.raises(AccessDenied, match="needs one of the roles"):
        Client(str(world.http.base_url), world.people["alice"], http=world.http).get(
            "/v1/audit/tail")
    eve = world.client("eve")
    tail = eve.get("/v1/audit/tail?n=5").json()
    assert len(tail) == 5
    index = tail[-1]["index"]
    assert eve.get(f"/v1/audit/entries/{index}").json()["action"] == tail[-1]["action"]
    world.ctx.audit().checkpoint(require_quorum=False)
    cp = eve.get("/v1/audit/checkpoint").json()
    assert cp["checkpoint"] and cp["size"] >= index
    proof = InclusionProof.parse(eve.get(f"/v1/audit/entries/{index}/proof").json()["proof"])
    assert proof.index == index
    assert proof.entry == world.ctx.audit().event(index).body
    cons = eve.get(f"/v1/audit/consistency?old=1&new={cp['size']}").json()
    assert cons["old"] == 1 and isinstance(cons["hashes"], list)


def test_alerts_list_and_ack(world: ServerWorld) -> None:
    from strongroom.monitor.alerts import Alert

    stored = world.ctx.alerts().raise_alert(Alert(rule="test.rule", severity="warning",
                                                  subject="alice", obj=ARTIFACT,
                                                  message="<b>x</b>", dedup_key="server-test"))
    eve = world.client("eve")
    assert any(a["id"] == stored.id for a in eve.get("/v1/alerts?unacked=true").json())
    assert eve.post(f"/v1/alerts/{stored.id}/ack", {"note": "x"}).status_code == 403
    r = world.client("officer").post(f"/v1/alerts/{stored.id}/ack", {"note": "handled"})
    assert r.status_code == 200 and r.json()["acked_by"].startswith("officer")


def test_a_red_team_identity_acknowledges_only_alerts_about_itself(world: ServerWorld) -> None:
    from strongroom.monitor.alerts import Alert

    world.enroll("redteam", ("auditors", "red-team"))
    raise_ = world.ctx.alerts().raise_alert
    own = raise_(Alert(rule="test.rule", severity="warning", subject="redteam", obj=ARTIFACT,
                       message="raised by the red team", dedup_key="rt-own"))
    other = raise_(Alert(rule="test.rule", severity="warning", subject="alice", obj=ARTIFACT,
                         message="raised by alice", dedup_key="rt-other"))
    rt = world.client("redteam")
    refused = rt.post(f"/v1/alerts/{other.id}/ack", {"note": "red-team run"})
    assert refused.status_code == 403 and "only alerts about itself" in refused.text
    done = rt.post(f"/v1/alerts/{own.id}/ack", {"note": "red-team run rt1-01"})
    assert done.status_code == 200 and done.json()["acked_by"] == "redteam"
    assert world.ctx.alerts().get(other.id).acked_at is None


def test_seal_over_api_needs_an_officer(world: ServerWorld) -> None:
    r = world.client("bob").post("/v1/sys/seal")
    assert r.status_code == 403
    assert not world.client(None).get("/v1/sys/seal-status").json()["sealed"]


def test_streamed_import_by_an_officer_then_refusals(world: ServerWorld) -> None:
    from strongroom.errors import AlreadyExists
    from strongroom.server.client import Client

    from vault_fixtures import make_model

    path = world.tmp / "upload.safetensors"
    make_model(path, seed=7)
    officer = Client(str(world.http.base_url), world.officer, http=world.http)
    out = officer.import_weights(path, "uploaded", compartments=("atlas",))
    assert out["ref"] == "uploaded@1" and out["manifest"]["compartments"] == ["atlas"]
    assert "uploaded" in {a["name"] for a in world.client("alice").get("/v1/weights").json()}
    with pytest.raises(AlreadyExists):
        officer.import_weights(path, "uploaded")
    alice = Client(str(world.http.base_url), world.people["alice"], http=world.http)
    with pytest.raises(AccessDenied, match="importers"):
        alice.import_weights(path, "by-alice")
    assert not list(Path("/dev/shm").glob("strongroom-upload-*"))


def test_streamed_import_with_a_wrong_digest_stores_nothing(world: ServerWorld) -> None:
    import hashlib

    from strongroom.server.signatures import sign_request

    data = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    headers = sign_request(world.officer.private_key, "POST", "/v1/weights/forged/import",
                           body_sha256=hashlib.sha256(b"something else").digest())
    headers["content-type"] = "application/octet-stream"
    r = world.http.post("/v1/weights/forged/import", content=data, headers=headers)
    assert r.status_code == 400 and "Content-Digest" in r.json()["error"]
    names = {a["name"] for a in world.client("alice").get("/v1/weights").json()}
    assert "forged" not in names
    unsigned = world.http.post("/v1/weights/forged/import", content=data)
    assert unsigned.status_code == 401


def test_revoked_grant_stops_releases(world: ServerWorld) -> None:
    from strongroom.access import statements

    world.enroll("frank", ("requesters",))
    grant = world.grant_load("frank")
    assert world.client("frank").post("/v1/keys/release",
                                      world.release_body("frank")).status_code == 200
    # the statement strongroom.access.grants.revoke_grant signs, posted instead of stored
    env = statements.sign("grant-revocation", {
        "grant": grant, "by": "frank", "by_key": world.people["frank"].public.key_id,
        "reason": "done", "issued": int(time.time())}, world.people["frank"].private_key)
    bad = world.client("bob").post(f"/v1/access/grants/{grant[:12]}/revocations",
                                   {"envelope": env})
    assert bad.status_code == 403 and "not signed by the caller" in bad.json()["error"]
    r = world.client("frank").post(f"/v1/access/grants/{grant[:12]}/revocations",
                                   {"envelope": env})
    assert r.status_code == 201, r.text
    again = world.client("frank").post("/v1/keys/release", world.release_body("frank"))
    assert again.status_code == 403 and "file_key" not in again.text


def test_denied_request_gets_no_grant(world: ServerWorld) -> None:
    from strongroom.access.approvals import AccessRequest, approve, deny
    from strongroom.access.grants import build_grant

    alice = world.people["alice"]
    req = AccessRequest.new("alice", alice.public.key_id, ARTIFACT, "load", "denied one", 600,
                            1 << 20, time.time()).sign(alice.private_key)
    digest = world.client("alice").post("/v1/access/requests", {"envelope": req}).json()["digest"]
    for who in ("bob", "carol"):
        env = approve(world.people[who].private_key, who, req, now=time.time())
        world.client(who).post(f"/v1/access/requests/{digest}/approvals", {"envelope": env})
    d = deny(world.people["bob"].private_key, "bob", req, now=time.time(), reason="no")
    r = world.client("bob").post(f"/v1/access/requests/{digest}/denials", {"envelope": d})
    assert r.status_code == 201, r.text
    assert world.client("alice").get(f"/v1/access/requests/{digest}").json()["denied"] is True
    # a veto is final: eve's approval after bob's denial is refused (403) and not stored
    late = approve(world.people["eve"].private_key, "eve", req, now=time.time())
    r = world.client("eve").post(f"/v1/access/requests/{digest}/approvals", {"envelope": late})
    assert r.status_code == 403, r.text
    assert set(r.json()) == {"error", "object", "remedy", "type"}
    assert "denied by bob ('no')" in r.json()["error"] and r.json()["type"] == "AccessDenied"
    # and the requester's own approval, or a second one by carol, is refused too
    for who in ("alice", "carol"):
        own = approve(world.people[who].private_key, who, req, now=time.time())
        r = world.client(who).post(f"/v1/access/requests/{digest}/approvals", {"envelope": own})
        assert 400 <= r.status_code < 500 and r.json()["remedy"], r.text
    bundle = world.client("alice").get(f"/v1/access/requests/{digest}").json()
    assert len(bundle["approval_envelopes"]) == 2
    grant = build_grant(alice.private_key, bundle["envelope"], bundle["approval_envelopes"],
                        now=time.time())
    r = world.client("alice").post("/v1/access/grants", {"envelope": grant})
    assert r.status_code == 403 and "denied" in r.json()["error"]


def test_break_glass_is_recorded_as_critical(world: ServerWorld) -> None:
    from strongroom.access.breakglass import take

    env = take(world.people["carol"].private_key, "carol", ARTIFACT, "load", "incident 42",
               now=time.time())

    forged = world.client("bob").post("/v1/access/break-glass", {"envelope": env})
    assert forged.status_code == 403
    # not listed on the label: refused as the embedded service and the gate refuse it
    r = world.client("carol").post("/v1/access/break-glass", {"envelope": env})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == f"carol is not listed for break-glass on {ARTIFACT}"
    world.list_for_break_glass("carol")
    r = world.client("carol").post("/v1/access/break-glass", {"envelope": env})
    assert r.status_code == 201, r.text
    last = world.ctx.audit().tail(1)[0]
    assert last.actor == "carol" and last.details.get("severity") == "critical"

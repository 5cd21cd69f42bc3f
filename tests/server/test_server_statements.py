"""State changes over the API as statements the caller signs (issue 17 item 2), SQLite and PostgreSQL.

Grant revocation, break-glass and its review, enrollment, key revocation, labels
and cosigning through ``Client``: each is a DSSE statement signed by the caller's
identity that the server verifies as the vault host does. For each route: the
wrong person is refused, a statement signed by someone else than the HTTP signer
is refused, and a replayed HTTP request is refused.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from server_kit import ARTIFACT, YEAR, ServerWorld, build_world, server_db  # noqa: F401

from strongroom.errors import AccessDenied, NotFound
from strongroom.keys.identity import Identity
from strongroom.server.client import Client
from strongroom.server.signatures import sign_request


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("statements"), db_url=server_db)


def client(world: ServerWorld, who: str) -> Client:
    ident = world.officer if who == "officer" else world.people[who]
    key = base64.b64encode(world.ctx.keys.public_keys()["manifest"]).decode()
    return Client("http://testserver", ident, http=world.http, manifest_key=key)


def replayed(world: ServerWorld, who: Identity, path: str, body: object) -> httpx.Response:
    """Send one signed POST twice, byte for byte; the second answer."""
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json",
               **sign_request(who.private_key, "POST", path, content)}
    world.http.post(path, content=content, headers=headers)
    return world.http.post(path, content=content, headers=headers)


def test_revoke_grant_by_its_requester_stops_releases(world: ServerWorld) -> None:
    from strongroom.access import statements
    from strongroom.access.grants import revocation_statement

    grant = world.grant_load()
    assert client(world, "alice").post("/v1/keys/release", world.release_body()).get("file_key")
    # eve is neither requester nor approver nor officer: her revocation would not count
    with pytest.raises(AccessDenied, match="would not count"):
        client(world, "eve").revoke_grant(grant[:12], reason="not mine")
    # bob's revocation sent under eve's HTTP signature: the statement is not the caller's
    env = statements.sign("grant-revocation", revocation_statement(
        grant, "bob", world.people["bob"].public.key_id, "x", now=time.time()),
        world.people["bob"].private_key)
    r = world.client("eve").post(f"/v1/access/grants/{grant}/revocations", {"envelope": env})
    assert r.status_code == 403 and "not signed by the caller" in r.json()["error"]
    assert replayed(world, world.people["bob"], f"/v1/access/grants/{grant}/revocations",
                    {"envelope": env}).status_code == 401
    out = client(world, "alice").revoke_grant(grant[:12], reason="done with it")
    assert (out["grant"], out["by"]) == (grant, "alice")
    # the signed revocation comes back too (the CLI pushes it to key servers from it)
    assert statements.unverified_payload(out["envelope"])["grant"] == grant
    r = world.client("alice").post("/v1/keys/release", world.release_body())
    assert r.status_code == 403 and "revoked" in r.json()["error"]
    last = [e for e in world.ctx.audit().tail(20) if e.action == "access.revoke"][-1]
    assert (last.actor, last.reason) == ("alice", "done with it")


def test_enroll_label_cosign_and_revoke_key_by_an_officer(world: ServerWorld) -> None:
    officer = client(world, "officer")
    dave = Identity.generate("dave")
    now = int(time.time())
    with pytest.raises(AccessDenied, match="not a security officer"):
        client(world, "bob").enroll("dave", dave.public, vetting_expires=now + YEAR)
    out = officer.enroll("dave", dave.public, vetting_expires=now + YEAR, clearance="secret",
                         roles=["security-officers"], compartments=["atlas"])
    assert (out["name"], out["serial"], out["signatures"], out["threshold"]) == \
        ("dave", 1, 1, 1)
    assert out["key_id"] == dave.public.key_id
    people = {p["name"]: p for p in officer.people()}
    assert people["dave"]["roles"] == ["security-officers"] and people["dave"]["current"]
    again = officer.enroll("dave", dave.public, vetting_expires=now + YEAR, clearance="secret",
                           roles=["security-officers", "approvers"], compartments=["atlas"])
    assert again["serial"] == 2
    assert officer.cosign(again["statement"][:10])["signatures"] == 1  # the same officer's key
    with pytest.raises(NotFound):
        officer.cosign("0123456789abcdef")
    labelled = officer.label(ARTIFACT, classification="secret", compartments=["atlas"],
                             rules={"load": "2 of approvers"}, break_glass=["carol"],
                             window_s=600)
    assert labelled["serial"] >= 2
    assert world.ctx.directory().label(ARTIFACT).break_glass == ("carol",)
    actions = [e.action for e in world.ctx.audit().tail(10)]
    assert {"people.enroll", "people.cosign", "compartments.label"} <= set(actions)
    gone = officer.revoke_key("dave", reason="left")
    assert gone["key_id"] == dave.public.key_id
    assert "dave" not in {p["name"] for p in officer.people()}


def test_statement_lookup_needs_a_signed_caller_and_a_known_id(world: ServerWorld) -> None:
    assert world.client(None).get("/v1/statements?kind=label&subject=tiny").status_code == 401
    labels = client(world, "alice").statements("label", ARTIFACT)
    assert labels and all(s["kind"] == "label" for s in labels)
    found = client(world, "alice").statement(labels[0]["digest"][:8], "label")
    assert found["envelope"] == labels[0]["envelope"]
    r = world.client("alice").get(f"/v1/statements/{labels[0]['digest'][:8]}?kind=bogus")
    assert r.status_code == 400


def test_break_glass_taken_reviewed_by_two_officers_not_the_taker(world: ServerWorld) -> None:
    officer = client(world, "officer")
    now = int(time.time())
    for name in ("sam", "sue"):
        world.people[name] = Identity.generate(name)
        officer.enroll(name, world.people[name].public, vetting_expires=now + YEAR,
                       clearance="secret", roles=["security-officers"], compartments=["atlas"])
    officer.label(ARTIFACT, classification="secret", compartments=["atlas"],
                  rules={"load": "2 of approvers"}, break_glass=["carol"], window_s=600)
    taken = client(world, "carol").break_glass(f"{ARTIFACT}@1", reason="incident 7",
                                               window_s=3600)
    assert (taken["principal"], taken["resource"], taken["window_s"]) == ("carol", ARTIFACT, 600)
    bg = taken["break_glass"]
    pending = {r["break_glass"]: r for r in client(world, "bob").break_glass_pending()}
    assert pending[bg]["reviewed"] is False and pending[bg]["reviewed_by"] == []
    assert set(pending[bg]) == {"break_glass", "principal", "resource", "reason", "reviewed_by",
                                "reviewed"}
    with pytest.raises(AccessDenied, match="cannot review it"):
        client(world, "carol").break_glass_review(bg[:10], verdict="justified")
    with pytest.raises(AccessDenied, match="not an enrolled"):
        officer.break_glass_review(bg[:10], verdict="justified")  # the pinned officer
    from strongroom.access import statements
    from strongroom.access.breakglass import review

    env = review(world.people["sam"].private_key, "sam",
                 statements.by_digest(world.ctx.store, bg) or "", "justified", now=time.time())
    path = f"/v1/access/break-glass/{bg}/reviews"
    r = world.client("sue").post(path, {"envelope": env})
    assert r.status_code == 403 and "not signed by the caller" in r.json()["error"]
    assert replayed(world, world.people["sam"], path, {"envelope": env}).status_code == 401
    assert client(world, "sue").break_glass_review(bg[:10], verdict="justified") == \
        {"break_glass": bg, "reviewer": "sue", "verdict": "justified"}
    done = {r["break_glass"]: r for r in client(world, "bob").break_glass_pending()}[bg]
    assert done["reviewed"] is True and sorted(done["reviewed_by"]) == ["sam", "sue"]


def test_break_glass_under_another_signer_and_replayed_is_refused(world: ServerWorld) -> None:
    from strongroom.access.breakglass import take

    env = take(world.people["carol"].private_key, "carol", ARTIFACT, "load", "incident 8",
               now=time.time(), window_s=60)
    r = world.client("bob").post("/v1/access/break-glass", {"envelope": env})
    assert r.status_code == 403
    assert replayed(world, world.people["carol"], "/v1/access/break-glass",
                    {"envelope": env}).status_code == 401

"""Steps against the API server and its console: a replayed release, CSRF, a sign-in flood."""

from __future__ import annotations

import json
import secrets

from strongroom.errors import StrongroomError
from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import shard_of, step
from strongroom.redteam.target import ARTIFACT


@step("server_release_replay")
def server_release_replay(ctx: RunContext, victim: str) -> None:
    """``victim`` releases a key over the signed API; the captured request is sent again."""
    from strongroom.access.evidence import make_evidence
    from strongroom.server.signatures import sign_request

    t = ctx.target
    client = t.server()
    ident = ctx.person(victim)
    manifest = t.vault.manifest(ARTIFACT)
    shard = shard_of(manifest)
    entry = manifest.file(shard)
    evidence = make_evidence(ident.private_key, artifact=manifest.ref, shard=shard,
                             blob_id=entry.blob, purpose="load",
                             grant=ctx.vars.get(f"grant:{victim}"))
    body = json.dumps({"artifact": manifest.ref, "shard": shard, "purpose": "load",
                       "evidence": evidence}).encode()
    headers = {**sign_request(ident.private_key, "POST", "/v1/keys/release", body),
               "Content-Type": "application/json"}
    first = client.post("/v1/keys/release", content=body, headers=headers)
    ctx.vars["replay_after"] = t.audit.size()
    ctx.saw(f"{ctx.actor(victim)}'s signed release over the API: HTTP {first.status_code}")
    for attempt in range(3):
        again = client.post("/v1/keys/release", content=body, headers=headers)
        ctx.saw(f"replay {attempt + 1} of the captured request: HTTP {again.status_code} "
                f"{again.json().get('error', '')[:80]}")


@step("console_csrf_approve")
def console_csrf_approve(ctx: RunContext, victim: str, requester: str) -> None:
    """A page on another site makes the signed-in approver's browser start an approval."""
    from strongroom.server.console.sessions import COOKIE, Sessions

    t = ctx.target
    client = t.server()
    approver = ctx.person(victim)
    value, _ = Sessions(t.store).new(approver.public.key_id)  # the victim is signed in
    ctx.vars["csrf_session"] = value
    digest = ctx.vars["digest:" + requester]
    body = json.dumps({"request": digest}).encode()
    cookie = {"Cookie": f"{COOKIE}={value}", "Content-Type": "application/json"}
    attempts = {
        "cross-site Origin": {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        "Sec-Fetch-Site cross-site, no Origin": {"Sec-Fetch-Site": "cross-site"},
        "no Origin, no token (old browser)": {},
    }
    for label, extra in attempts.items():
        r = client.post("/webauthn/approve/begin", content=body, headers={**cookie, **extra})
        ctx.saw(f"CSRF POST ({label}) to /webauthn/approve/begin: HTTP {r.status_code}")


@step("console_signin_flood")
def console_signin_flood(ctx: RunContext, victim: str, attempts: int = 25) -> None:
    """Someone holding the victim's credential id (from a log) but not the key tries again and
    again to sign in to the console, from one address."""
    import base64
    import hashlib
    import os
    from urllib.parse import urlsplit

    from starlette.testclient import TestClient

    from strongroom.redteam.target import console_origin
    from strongroom.server.console.sessions import COOKIE

    t = ctx.target
    origin = console_origin()
    rp_id = os.environ.get("STRONGROOM_CONSOLE_RP_ID") or urlsplit(origin).hostname or "localhost"
    who = t.reader().view().by_name(ctx.actor(victim))
    if who is None or not who.security_keys:
        raise StrongroomError("the victim has no console security key", obj=victim)
    credential = who.security_keys[0].id
    attacker = TestClient(t.server().app, base_url=origin,
                          client=(f"attacker.{ctx.marker}", 40000))
    page = attacker.get("/console/sign-in")
    csrf = page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
    # The session cookie is Secure; a browser sends it to http://localhost, httpx does not.
    headers = {"X-CSRF-Token": csrf, "Origin": origin,
               "Cookie": f"{COOKIE}={page.cookies.get(COOKIE)}"}

    def b64url(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    statuses: list[int] = []
    for _ in range(attempts):
        begin = attacker.post("/webauthn/login/begin", json={"name": ctx.actor(victim)},
                              headers=headers)
        if begin.status_code != 200:
            statuses.append(begin.status_code)
            continue
        client_data = json.dumps({"type": "webauthn.get", "origin": origin,
                                  "challenge": begin.json()["options"]["challenge"]}).encode()
        auth_data = hashlib.sha256(rp_id.encode()).digest() + b"\x05" + (7).to_bytes(4, "big")
        forged = {"id": credential, "rawId": credential, "type": "public-key",
                  "response": {"clientDataJSON": b64url(client_data),
                               "authenticatorData": b64url(auth_data),
                               "signature": b64url(secrets.token_bytes(64))}}
        done = attacker.post("/webauthn/login/finish", json={"credential": forged},
                             headers=headers)
        statuses.append(done.status_code)
    ctx.vars["flood_statuses"] = statuses
    ctx.saw(f"{attempts} forged sign-ins with {ctx.actor(victim)}'s credential id: "
            f"{statuses.count(200)} accepted, {statuses.count(403)} refused (403), "
            f"{statuses.count(429)} throttled (429)")

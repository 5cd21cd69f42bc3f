"""The console over HTTP (no browser): sign-in, approval and Grant with a software key; the attacks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from console_kit import ORIGIN, Env
from fido_softkey import SoftKey, add_keys

from strongroom.access import fido, statements
from strongroom.access.directory import DirectoryReader, Resource
from strongroom.access.registration import (
    endorsed_enrollment,
    make_register_token,
    store_pending,
    verify_register_token,
)
from strongroom.errors import AccessDenied, Sealed
from strongroom.server.console.sessions import COOKIE

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def _approve(e: Env, name: str, digest: str, csrf: str, key: SoftKey | None = None,
             **headers: str) -> int:
    begin = e.client.post("/webauthn/approve/begin", json={"request": digest},
                          headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert begin.status_code == 200, begin.text
    k = key or e.keys[name]
    a = k.assertion(fido.unb64url(begin.json()["options"]["challenge"]))
    done = e.client.post("/webauthn/approve/finish", json={"credential": k.browser_json(a)},
                         headers=headers or {"X-CSRF-Token": csrf, "Origin": ORIGIN})
    return done.status_code


def test_approve_and_issue_with_security_keys_then_the_gate_releases(env_any: Env) -> None:
    e = env_any
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    for name in ("bob", "carol"):
        csrf = e.sign_in(name)
        assert digest in e.client.get("/console/inbox").text
        assert _approve(e, name, digest, csrf) == 200
    csrf = e.sign_in("carol")
    begin = e.client.post("/webauthn/grant/begin", json={"request": digest},
                          headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert begin.status_code == 200, begin.text
    k = e.keys["carol"]
    done = e.client.post("/webauthn/grant/finish", json={"credential": k.browser_json(
        k.assertion(fido.unb64url(begin.json()["options"]["challenge"])))},
        headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert done.status_code == 200, done.text
    assert sorted(done.json()["approvers"]) == ["bob", "carol"]
    again = e.client.post("/webauthn/grant/begin", json={"request": digest},
                          headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert again.status_code == 409  # one Grant per request from the console
    with e.w.vault_as("alice").open_weights("minilm") as weights:
        assert len(weights) > 0


@pytest.mark.parametrize("how", ["no token", "wrong token", "cross-site origin",
                                 "cross-site fetch"])
def test_csrf_on_approve_is_refused_and_changes_nothing(env: Env, how: str) -> None:
    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    csrf = e.sign_in("bob")
    headers = {"no token": {"Origin": ORIGIN},
               "wrong token": {"X-CSRF-Token": "x" * 43, "Origin": ORIGIN},
               "cross-site origin": {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
               "cross-site fetch": {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}}[how]
    r = e.client.post("/webauthn/approve/begin", json={"request": digest}, headers=headers)
    assert r.status_code == 403 and ("CSRF" in r.json()["error"] or "cross-site" in
                                     r.json()["error"])
    # the finish step is protected the same way, whatever the session holds
    assert _approve(e, "bob", digest, csrf, **headers) == 403
    assert statements.envelopes(e.w.store, "approval", subject=digest) == []
    refused = [x for x in e.w.vault.audit.tail(10) if x.action == "console.csrf"]
    assert refused and refused[-1].decision == "deny"  # visible to the detectors


def test_csrf_on_the_alert_acknowledgement_form(env: Env) -> None:
    from strongroom.monitor.alerts import Alert

    e = env
    alerts = e.w.vault.audit  # the alert manager audits into the same log
    from strongroom.monitor.alerts import AlertManager

    stored = AlertManager(e.w.store, audit=alerts).raise_alert(Alert(
        "test", "high", "mallory", "minilm", f"odd egress {XSS}", "k1"))
    csrf = e.sign_in("dave")
    page = e.client.get("/console/alerts").text
    assert XSS not in page and "&lt;script&gt;" in page
    r = e.client.post(f"/console/alerts/{stored.id}/ack", data={"note": "seen"},
                      headers={"Origin": ORIGIN})
    assert r.status_code == 403
    r = e.client.post(f"/console/alerts/{stored.id}/ack", data={"note": "seen", "csrf": csrf},
                      headers={"Origin": ORIGIN}, follow_redirects=False)
    assert r.status_code == 303
    assert f'id="alert-{stored.id}"' not in e.client.get("/console/alerts").text  # open only
    row = e.client.get("/console/alerts?state=acknowledged").text.split(
        f'id="alert-{stored.id}"', 1)[1].split("</tr>", 1)[0]
    assert "acknowledged by dave" in row and ": seen" in row


def test_approval_with_a_key_not_registered_to_the_approver_is_refused(env: Env) -> None:
    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    csrf = e.sign_in("bob")
    # carol's (enrolled, but not bob's) key, and a key nobody enrolled
    assert _approve(e, "bob", digest, csrf, key=e.keys["carol"]) == 403
    assert _approve(e, "bob", digest, csrf, key=SoftKey(rp_id="testserver", origin=ORIGIN)) == 403
    assert statements.envelopes(e.w.store, "approval", subject=digest) == []


def test_sign_in_with_an_unenrolled_key_is_refused(env: Env) -> None:
    e = env
    e.client.cookies.clear()
    csrf = e.csrf("/console/sign-in")
    begin = e.client.post("/webauthn/login/begin", json={}, headers={"X-CSRF-Token": csrf})
    rogue = SoftKey(rp_id="testserver", origin=ORIGIN)
    a = rogue.assertion(fido.unb64url(begin.json()["options"]["challenge"]))
    r = e.client.post("/webauthn/login/finish", json={"credential": rogue.browser_json(a)},
                      headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    page = e.client.get("/console/inbox", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/console/sign-in"
    assert e.client.post("/webauthn/approve/begin", json={"request": "0" * 64},
                         headers={"X-CSRF-Token": csrf}).status_code == 401


def test_html_in_reasons_is_escaped_and_headers_are_strict(env: Env) -> None:
    e = env
    from strongroom.access.approvals import AccessRequest

    alice = e.w.people["alice"]
    req = AccessRequest.new("alice", alice.public.key_id, "minilm", "load", f"eval {XSS}", 3600,
                            1 << 20, time.time()).sign(alice.private_key)
    from strongroom.access.approvals import submit_request

    digest = submit_request(e.w.store, req)
    e.sign_in("bob")
    for path in ("/console/inbox", f"/console/requests/{digest}"):
        r = e.client.get(path)
        assert XSS not in r.text and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
    refused = e.client.get("/console/requests/" + "0" * 64)
    assert refused.status_code == 404 and "content-security-policy" in refused.headers
    e.client.cookies.clear()
    raw = e.client.get("/console/sign-in").headers["set-cookie"].lower()
    assert raw.startswith(COOKIE.lower() + "=")
    assert "; secure" in raw and "; httponly" in raw and "samesite=strict" in raw
    assert "domain=" not in raw and "path=/" in raw
    assert e.client.get("/static/../__init__.py").status_code == 404
    assert e.client.get("/static/console.js").headers["content-type"].startswith(
        "text/javascript")


def test_registration_tokens_bind_a_key_to_the_enrolled_person(env: Env) -> None:
    e = env
    reader = DirectoryReader(e.w.store, lambda: {o.public.key_id: o.public.public_key
                                                 for o in e.w.officers}, 2)
    now = time.time()
    token = make_register_token(e.w.people["bob"], now=now)
    tok, who = verify_register_token(token, reader.view(), now=now)
    assert who.name == "bob"
    with pytest.raises(AccessDenied, match="expired"):
        verify_register_token(token, reader.view(), now=now + 901)
    from strongroom.keys.identity import Identity

    with pytest.raises(AccessDenied, match="not an enrolled"):
        verify_register_token(make_register_token(Identity.generate("bob")), reader.view(),
                              now=now)
    new = SoftKey(rp_id="testserver", origin=ORIGIN)
    store_pending(e.w.store, tok, new.security_key(), 0, now=now)
    with pytest.raises(AccessDenied, match="already used"):
        store_pending(e.w.store, tok, SoftKey().security_key(), 0, now=now)
    # nothing counts until k officers sign the updated enrollment
    assert all(k.credential_id != new.credential_id for k in reader.view().by_name("bob")
               .security_keys)  # type: ignore[union-attr]
    e2 = endorsed_enrollment(e.w.store, who, [new.security_key().id[:16]], now=now)
    from strongroom.access.directory import publish

    publish(e.w.store, "enrollment", e2.sign(e.w.officers[0].private_key))
    assert len(reader.view().by_name("bob").security_keys) == 1  # type: ignore[union-attr]
    publish(e.w.store, "enrollment", e2.sign(e.w.officers[1].private_key))
    assert len(reader.view().by_name("bob").security_keys) == 2  # type: ignore[union-attr]
    e.sign_in("bob", key=new)  # the endorsed key now signs in


def test_register_token_command_signs_with_the_cli_identity(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from strongroom.access.registration import REGISTER_PAYLOAD_TYPE
    from strongroom.cli.console_cmd import console_app
    from strongroom.crypto.dsse import verify_statement
    from strongroom.keys.identity import Identity

    bob = Identity.generate("bob")
    bob.save(tmp_path / "bob.identity")
    monkeypatch.setenv("STRONGROOM_IDENTITY", str(tmp_path / "bob.identity"))
    result = CliRunner().invoke(console_app, ["register-token", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    env = fido.unb64url(result.stdout.strip()).decode()
    st = verify_statement(env, REGISTER_PAYLOAD_TYPE, {bob.public.key_id: bob.public.public_key})
    assert st["name"] == "bob" and st["expires"] - st["issued"] == 60


def test_audit_and_alerts_are_for_auditors_and_security_officers(env: Env) -> None:
    e = env
    e.sign_in("bob")  # an approver only
    for path in ("/console/audit", "/console/alerts", "/console/audit/0/proof"):
        assert e.client.get(path).status_code == 403, path
    assert 'href="/console/audit"' not in e.client.get("/console/inbox").text
    e.sign_in("dave")  # a security officer
    assert e.client.get("/console/audit").status_code == 200
    proof = e.client.get("/console/audit/0/proof").json()
    assert proof["index"] == 0 and proof["size"] >= 1


JUNK: list[object] = [
    {}, [], "x", None, {"credential": None}, {"credential": "x"}, {"credential": {"id": 1}},
    {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}},
    {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                    "response": {"authenticatorData": "!!", "clientDataJSON": "e30",
                                 "signature": "", "attestationObject": "oA"}}},
    {"token": 5}, {"token": "e30"}, {"request": ["x"]}, {"request": "../../etc"}, {"name": {}},
]


@pytest.mark.parametrize("kind", ["register", "login", "approve", "grant"])
def test_malformed_bodies_get_a_4xx_and_change_nothing(env: Env, kind: str) -> None:
    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    csrf = e.sign_in("bob")
    hdrs = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    begin_body = {"register": {"token": make_register_token(e.w.people["bob"])},
                  "login": {"name": "bob"}, "approve": {"request": digest},
                  "grant": {"request": digest}}[kind]
    for junk in JUNK:
        for step in ("begin", "finish"):
            if step == "finish":  # with a ceremony in progress, so the body is what is judged
                e.client.post(f"/webauthn/{kind}/begin", json=begin_body, headers=hdrs)
            r = e.client.post(f"/webauthn/{kind}/{step}", json=junk, headers=hdrs)
            if (kind, step) == ("login", "begin") and isinstance(junk, dict) \
                    and "name" not in junk:
                assert r.status_code == 200  # sign-in without a name (discoverable keys)
                continue
            assert 400 <= r.status_code < 500, (kind, step, junk, r.status_code, r.text)
    r = e.client.post(f"/webauthn/{kind}/finish", content=b"\xff not json", headers=hdrs)
    assert r.status_code == 400
    r = e.client.post(f"/webauthn/{kind}/finish", content=b" " * (65 * 1024), headers=hdrs)
    assert r.status_code == 413
    assert statements.envelopes(e.w.store, "approval", subject=digest) == []
    assert statements.envelopes(e.w.store, "grant") == []


def test_sign_in_does_not_reveal_who_has_a_key(env: Env) -> None:
    e = env
    e.client.cookies.clear()
    csrf = e.csrf("/console/sign-in")

    def allowed(name: str) -> list[str]:
        r = e.client.post("/webauthn/login/begin", json={"name": name},
                          headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["options"]["allowCredentials"]]

    real = allowed("bob")
    ghost = allowed("nobody-here")
    assert len(real) == len(ghost) == 1 and real != ghost
    assert allowed("nobody-here") == ghost  # stable: asking twice tells nothing either


def test_failed_sign_ins_are_audited_and_throttled(env: Env) -> None:
    e = env
    e.client.cookies.clear()
    csrf = e.csrf("/console/sign-in")
    rogue = SoftKey(rp_id="testserver", origin=ORIGIN)
    statuses = []
    for _ in range(12):
        begin = e.client.post("/webauthn/login/begin", json={}, headers={"X-CSRF-Token": csrf})
        if begin.status_code != 200:
            statuses.append(begin.status_code)
            continue
        a = rogue.assertion(fido.unb64url(begin.json()["options"]["challenge"]))
        r = e.client.post("/webauthn/login/finish", json={"credential": rogue.browser_json(a)},
                          headers={"X-CSRF-Token": csrf})
        statuses.append(r.status_code)
    assert statuses[:10] == [403] * 10 and set(statuses[10:]) == {429}
    denied = [x for x in e.w.vault.audit.tail(50)
              if x.action == "console.sign-in" and x.decision == "deny"]
    failures = [x for x in denied if "throttled" not in x.reason]
    throttled = [x for x in denied if "throttled" in x.reason]
    assert len(failures) == 10 and failures[-1].details["failures_this_minute"] == 10
    assert failures[-1].details["host"] == "testclient"
    assert len(throttled) == 1  # the 1st refusal of the minute; the 10th, 100th ... follow
    for _ in range(9):
        begin = e.client.post("/webauthn/login/begin", json={}, headers={"X-CSRF-Token": csrf})
        assert begin.status_code == 429
    sampled = [x for x in e.w.vault.audit.tail(50)
               if x.action == "console.sign-in" and "throttled" in x.reason]
    assert len(sampled) == 2 and sampled[-1].details["suppressed"] == 8  # 10th stands for 9


def _ceremony(e: Env, name: str, kind: str, csrf: str, body: dict[str, str]
              ) -> tuple[int, str]:
    """Begin and finish a console signing ceremony with ``name``'s key: (status, text)."""
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    begin = e.client.post(f"/webauthn/{kind}/begin", json=body, headers=headers)
    if begin.status_code != 200:
        return begin.status_code, begin.json()["error"]
    k = e.keys[name]
    a = k.assertion(fido.unb64url(begin.json()["options"]["challenge"]))
    done = e.client.post(f"/webauthn/{kind}/finish", json={"credential": k.browser_json(a)},
                         headers=headers)
    return done.status_code, done.text


def _deny(e: Env, name: str, digest: str, csrf: str, reason: str) -> tuple[int, str]:
    return _ceremony(e, name, "deny", csrf, {"request": digest, "reason": reason})


def test_deny_with_a_security_key_closes_the_request(env: Env) -> None:
    from strongroom.access.grants import issue_grant
    from strongroom.access.policy import PolicyEngine

    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    csrf = e.sign_in("bob")
    assert _approve(e, "bob", digest, csrf) == 200
    csrf = e.sign_in("carol")
    assert _deny(e, "carol", digest, csrf, "")[0] == 400  # a denial says why
    status, text = _deny(e, "carol", digest, csrf, f"not this quarter {XSS}")
    assert status == 200, text
    denials = statements.envelopes(e.w.store, "denial", subject=digest)
    assert len(denials) == 1 and fido.is_webauthn(denials[0])
    page = e.client.get(f"/console/requests/{digest}").text
    assert "denied by carol" in page and XSS not in page
    begin = e.client.post("/webauthn/grant/begin", json={"request": digest},
                          headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert begin.status_code == 409
    m = e.w.vault.manifest("minilm")
    res = Resource(m.ref, m.kind, 3, tuple(m.compartments))
    with pytest.raises(AccessDenied, match="denied by carol"):
        issue_grant(e.w.store, e.w.people["alice"].private_key, digest, e.w.rule.reader.view(),
                    PolicyEngine(), res, now=time.time())
    entry = [x for x in e.w.vault.audit.tail(10) if x.action == "access.deny"][-1]
    assert entry.actor == "carol" and entry.details["via"] == "console security key"


def test_only_someone_who_may_approve_may_deny(env: Env) -> None:
    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    csrf = e.sign_in("alice")  # the requester never decides her own request
    status, error = _deny(e, "alice", digest, csrf, "changed my mind")
    assert status == 403 and "requester" in error
    assert statements.envelopes(e.w.store, "denial", subject=digest) == []


def test_an_approval_finished_after_a_denial_is_refused_and_not_stored(env: Env) -> None:
    """A veto is final: an approval begun before carol's denial is refused when it finishes
    (by the library's check, with the API's error body), and nothing is stored."""
    from strongroom.access.approvals import deny, submit_approval

    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    headers = {"X-CSRF-Token": e.sign_in("bob"), "Origin": ORIGIN}
    begin = e.client.post("/webauthn/approve/begin", json={"request": digest}, headers=headers)
    assert begin.status_code == 200, begin.text
    submit_approval(e.w.store, deny(e.w.people["carol"].private_key, "carol", req,
                                    now=time.time(), reason="not this quarter"), "denial",
                    directory=e.w.rule.reader.view())
    k = e.keys["bob"]
    a = k.assertion(fido.unb64url(begin.json()["options"]["challenge"]))
    done = e.client.post("/webauthn/approve/finish", json={"credential": k.browser_json(a)},
                         headers=headers)
    assert done.status_code == 403, done.text
    assert set(done.json()) == {"error", "object", "remedy", "type"}
    assert "denied by carol ('not this quarter')" in done.json()["error"]
    assert statements.envelopes(e.w.store, "approval", subject=digest) == []
    again = _ceremony(e, "bob", "approve", headers["X-CSRF-Token"], {"request": digest})
    assert again[0] == 403 and "denied by carol" in again[1]


def _revoke(e: Env, name: str, digest: str, csrf: str, reason: str) -> tuple[int, str]:
    return _ceremony(e, name, "revoke", csrf, {"request": digest, "reason": reason})


def test_an_approver_revokes_the_grant_with_a_security_key(env: Env) -> None:
    from strongroom.access.grants import issue_grant
    from strongroom.access.policy import PolicyEngine

    e = env
    req = e.w.request("alice", "minilm")
    digest = statements.payload_digest(req)
    for name in ("bob", "carol"):
        assert _approve(e, name, digest, e.sign_in(name)) == 200
    m = e.w.vault.manifest("minilm")
    issue_grant(e.w.store, e.w.people["alice"].private_key, digest, e.w.rule.reader.view(),
                PolicyEngine(), Resource(m.ref, m.kind, 3, tuple(m.compartments)),
                now=time.time())
    with e.w.vault_as("alice").open_weights("minilm") as weights:
        assert len(weights) > 0
    e.w.enroll("frank")  # an approver, but not of this Grant, and no security officer
    e.keys["frank"] = SoftKey(rp_id="testserver", origin=ORIGIN)
    frank = e.w.rule.reader.view().by_name("frank")
    assert frank is not None
    add_keys(e.w.store, frank, [e.keys["frank"].security_key()], e.w.officers)
    csrf = e.sign_in("frank")
    assert "Revoke Grant" not in e.client.get(f"/console/requests/{digest}").text
    assert _revoke(e, "frank", digest, csrf, "curious")[0] == 403
    e.sign_in("dave")  # a security officer may revoke any Grant
    assert "Revoke Grant" in e.client.get(f"/console/requests/{digest}").text
    csrf = e.sign_in("carol")
    assert "Revoke Grant" in e.client.get(f"/console/requests/{digest}").text
    status, text = _revoke(e, "carol", digest, csrf, f"project cancelled {XSS}")
    assert status == 200, text
    page = e.client.get(f"/console/requests/{digest}").text
    assert "Revoked by carol" in page and XSS not in page
    with pytest.raises(AccessDenied, match="revoked"):
        e.w.vault_as("alice").open_weights("minilm")
    assert _revoke(e, "carol", digest, csrf, "again")[0] == 403  # revoked already
    entry = [x for x in e.w.vault.audit.tail(20) if x.action == "access.revoke-grant"][-1]
    assert entry.actor == "carol" and entry.details["via"] == "console security key"


def test_a_security_officer_seals_the_vault_from_the_console_with_a_key(env_any: Env) -> None:
    e = env_any
    csrf = e.sign_in("bob")  # an approver, not a security officer: no button, and refused
    assert 'data-webauthn="seal"' not in e.client.get("/console/status").text
    status, text = _ceremony(e, "bob", "seal", csrf, {"reason": "drill", "scope": "host"})
    assert status == 403 and "security-officers" in text
    csrf = e.sign_in("dave")
    page = e.client.get("/console/status").text
    assert 'data-webauthn="seal"' in page and "unsealed" in page
    status, text = _ceremony(e, "dave", "seal", csrf, {"reason": "", "scope": "host"})
    assert status == 400 and "say why" in text  # a reason is required
    status, text = _ceremony(e, "dave", "seal", csrf, {"reason": "x", "scope": "galaxy"})
    assert status == 400
    assert not e.w.keys.svc.status().sealed
    dave = e.w.rule.reader.view().by_name("dave")
    assert dave is not None
    log = e.w.vault.audit
    size = log.size()
    status, text = _ceremony(e, "dave", "seal", csrf,
                             {"reason": "suspected compromise of host-a", "scope": "host"})
    assert status == 200, text
    assert e.w.keys.svc.status().sealed  # sealed when the answer came back
    with pytest.raises(Sealed):
        e.w.vault_as("alice").open_weights("minilm")
    [stored] = statements.find_by_prefix(e.w.store, "seal", "")
    got = fido.verify_envelope(stored.envelope, "seal", {dave.key_id: dave})
    assert got.statement["reason"] == "suspected compromise of host-a"
    assert got.statement["scope"] == "host"
    later = list(log.events(size, log.size()))
    [request] = [x for x in later if x.action == "keys.seal-request"]
    assert request.actor == "dave" and request.details["via"] == "console security key"
    assert request.details["statement"] == stored.digest
    assert [x.action for x in later][-1] == "keys.seal"  # the request precedes the wipe
    page = e.client.get("/console/status").text
    assert "sealed" in page and 'data-webauthn="seal"' not in page

"""Break-glass review in the console over HTTP: the list, a review signed with a security key,
the quorum with a CLI-signed review, refusals (role, taker, input, CSRF), the audit entry."""

from __future__ import annotations

import time

import pytest
from console_kit import ORIGIN, Env

from strongroom.access import fido, statements
from strongroom.access.breakglass import (
    BreakGlass,
    review,
    review_status,
    submit_break_glass,
    submit_review,
    take,
)
from strongroom.access.restrictions import STATEMENT_DETAIL
from strongroom.monitor.egress import EgressMeter


def _taken(e: Env, *, hours_ago: float = 1.0, reason: str = "prod incident 4411") -> str:
    """alice breaks glass on minilm (listed on its label) and releases 3 MiB under it."""
    e.w.label("minilm", break_glass=("alice",))
    alice = e.w.people["alice"]
    now = time.time() - hours_ago * 3600
    env = take(alice.private_key, "alice", "minilm", "load", reason, now=now, window_s=600)
    digest = submit_break_glass(e.w.store, env)
    EgressMeter(e.w.store).charge("alice", 3 << 20, time.time(), artifact="minilm@1",
                                  charge_id=f"bg-{digest[:8]}", budget=(digest, 1 << 40))
    return digest


def _review(e: Env, csrf: str, digest: str, verdict: str = "justified",
            note: str = "on-call runbook step 3", who: str = "dave") -> tuple[int, dict]:
    h = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    begin = e.client.post("/webauthn/break-glass-review/begin", headers=h,
                          json={"break_glass": digest, "verdict": verdict, "reason": note})
    if begin.status_code != 200:
        return begin.status_code, begin.json()
    k = e.keys[who]
    done = e.client.post("/webauthn/break-glass-review/finish", headers=h, json={
        "credential": k.browser_json(k.assertion(fido.unb64url(
            begin.json()["options"]["challenge"])))})
    return done.status_code, {"begin": begin.json(), **done.json()}


def test_list_shows_who_what_when_bytes_and_pending(env: Env) -> None:
    e = env
    e.sign_in("dave")
    empty = e.client.get("/console/break-glass")
    assert empty.status_code == 200 and 'id="no-break-glass"' in empty.text
    digest = _taken(e, reason="<b>prod</b> incident")
    page = e.client.get("/console/break-glass").text
    card = page.split(f'id="bg-{digest[:16]}"', 1)[1].split("</section>", 1)[0]
    assert "alice" in card and "load minilm" in card
    assert "3.0 MiB of its 1.0 TiB budget" in card
    assert "&lt;b&gt;prod&lt;/b&gt; incident" in card and "<b>prod" not in card
    assert "awaiting review" in card and "review overdue" not in card
    assert f'data-break-glass="{digest}"' in card  # dave may review it
    assert f"/console/audit?q={digest}" in card


def test_a_review_signed_with_the_key_counts_with_a_cli_review(env: Env) -> None:
    e = env
    digest = _taken(e)
    csrf = e.sign_in("dave")
    status, out = _review(e, csrf, digest)
    assert status == 200, out
    shown = out["begin"]["statement"]  # what the page shows before the key is touched
    assert shown["break_glass"] == digest and shown["reviewer"] == "dave"
    assert out["statement"] == _digest_of(e, digest, "dave")
    env_ = statements.by_digest(e.w.store, out["statement"])
    assert env_ is not None and '"webauthn"' in env_
    # the audit log keeps the signed review (journaled in the entry)
    entry = [ev for ev in e.w.keys.svc.audit.tail(5)
             if ev.action == "access.break-glass.review"][-1]
    assert entry.actor == "dave" and entry.details["break_glass"] == digest
    assert entry.details[STATEMENT_DETAIL]["envelope"] == env_
    directory = e.ctx.directory()
    bg = BreakGlass.from_statement(statements.unverified_payload(
        statements.by_digest(e.w.store, digest) or ""), digest)
    reviews = statements.envelopes(e.w.store, "review", subject=digest)
    assert review_status(bg, reviews, directory) == (False, ["dave"])
    again = _review(e, csrf, digest)
    assert again[0] == 409 and "already" in again[1]["error"]
    # a second officer reviews from the CLI with an identity key: the quorum is met
    erin = e.w.enroll("erin", roles=("security-officers",))
    taken = statements.by_digest(e.w.store, digest) or ""
    submit_review(e.w.store, review(erin.private_key, "erin", taken, "unjustified",
                                    now=time.time(), note="no incident ticket"))
    assert review_status(bg, statements.envelopes(e.w.store, "review", subject=digest),
                         e.ctx.directory())[0]
    card = e.client.get("/console/break-glass").text.split(f'id="bg-{digest[:16]}"', 1)[1]
    card = card.split("</section>", 1)[0]
    assert "badge allow\">reviewed" in card and "not justified" in card and "(security key)" in card


def _digest_of(e: Env, bg: str, reviewer: str) -> str:
    for env_ in statements.envelopes(e.w.store, "review", subject=bg):
        if statements.unverified_payload(env_)["reviewer"] == reviewer:
            return statements.payload_digest(env_)
    raise AssertionError("no review stored")


def test_overdue_uses_are_marked(env: Env) -> None:
    e = env
    digest = _taken(e, hours_ago=25)
    e.sign_in("dave")
    page = e.client.get("/console/break-glass").text
    assert "1 overdue" in page
    assert "review overdue" in page.split(f'id="bg-{digest[:16]}"', 1)[1].split("</h2>", 1)[0]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"break_glass": "zz", "verdict": "justified", "reason": "x"}, 400, "64-hex-digit"),
    ({"break_glass": "0" * 64, "verdict": "justified", "reason": "x"}, 404, "no break-glass"),
    ({"verdict": "maybe", "reason": "x"}, 400, "choose a verdict"),
    ({"verdict": "justified", "reason": " "}, 400, "say why"),
    ({"verdict": "justified", "reason": "x" * 501}, 400, "say why"),
    ([1, 2], 400, "not a JSON object"),
])
def test_bad_input_is_a_clear_4xx(env: Env, body: object, status: int, words: str) -> None:
    e = env
    digest = _taken(e)
    csrf = e.sign_in("dave")
    if isinstance(body, dict):
        body = {"break_glass": digest, **body}
    r = e.client.post("/webauthn/break-glass-review/begin", json=body,
                      headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert r.status_code == status and words in r.json()["error"], r.text


def test_refusals_role_taker_csrf_and_no_ceremony(env: Env) -> None:
    e = env
    digest = _taken(e)
    body = {"break_glass": digest, "verdict": "justified", "reason": "fine"}
    csrf = e.sign_in("bob")  # an approver: may not see or review break-glass
    assert e.client.get("/console/break-glass").status_code == 403
    r = e.client.post("/webauthn/break-glass-review/begin", json=body,
                      headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert r.status_code == 403
    csrf = e.sign_in("dave")
    r = e.client.post("/webauthn/break-glass-review/begin", json=body, headers={"Origin": ORIGIN})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = e.client.post("/webauthn/break-glass-review/begin", json=body,
                      headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403
    r = e.client.post("/webauthn/break-glass-review/finish", json={"credential": {}},
                      headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert r.status_code == 400 and "no review in progress" in r.json()["error"]
    assert statements.envelopes(e.w.store, "review", subject=digest) == []
    # the taker, made a security officer, still may not review their own break-glass
    e.w.enroll("alice", roles=("requesters", "security-officers"), serial=2)
    from fido_softkey import add_keys

    current = e.ctx.directory().by_name("alice")
    assert current is not None
    add_keys(e.w.store, current, [e.keys["alice"].security_key()], e.w.officers)
    csrf = e.sign_in("alice")
    r = e.client.post("/webauthn/break-glass-review/begin", json=body,
                      headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert r.status_code == 403 and "you took this break-glass" in r.json()["error"]

"""Alert triage in the console over HTTP: empty state, filters, evidence, acknowledgements."""

from __future__ import annotations

import html
import re

from console_kit import ORIGIN, Env

from strongroom.access import fido, statements
from strongroom.monitor.alerts import Alert


def _raise(e: Env, rule: str, severity: str, subject: str = "alice") -> int:
    return e.ctx.alerts().raise_alert(Alert(
        rule=rule, severity=severity, subject=subject, obj="minilm@1",
        message=f"{rule} saw <b>{subject}</b>", dedup_key=f"{rule}:{subject}:test")).id


def test_empty_state_filters_and_evidence_links(env: Env) -> None:
    e = env
    e.sign_in("dave")
    empty = e.client.get("/console/alerts")
    assert empty.status_code == 200 and 'id="no-alerts"' in empty.text
    high = _raise(e, "SR-EXFIL", "high")
    crit = _raise(e, "SR-CANARY", "critical", "bob")
    page = e.client.get("/console/alerts").text
    assert f'id="alert-{high}"' in page and f'id="alert-{crit}"' in page
    assert "&lt;b&gt;alice&lt;/b&gt;" in page  # the message is text, not markup
    only = e.client.get("/console/alerts?severity=critical").text
    assert f'id="alert-{crit}"' in only and f'id="alert-{high}"' not in only
    by_rule = e.client.get("/console/alerts?rule=SR-EXFIL").text
    assert f'id="alert-{high}"' in by_rule and f'id="alert-{crit}"' not in by_rule
    assert e.client.get("/console/alerts?severity=urgent").status_code == 400
    # the evidence: the alert's own audit entry, found through the explorer
    link = html.unescape(re.search(rf'id="alert-{crit}".*?<a href="([^"]+)">alert entry',
                                   page, re.S).group(1))  # type: ignore[union-attr]
    entries = e.client.get(link).text
    found = [int(i) for i in re.findall(r'<a href="/console/audit/(\d+)">', entries)]
    log = e.w.keys.svc.audit
    assert [log.event(i).action for i in found] == ["alert.raise"]
    assert log.event(found[0]).details["dedup_key"] == "SR-CANARY:bob:test"


def test_acknowledge_needs_a_reason_and_critical_needs_the_key(env: Env) -> None:
    e = env
    high = _raise(e, "SR-EXFIL", "high")
    crit = _raise(e, "SR-CANARY", "critical", "bob")
    csrf = e.sign_in("dave")
    headers = {"Origin": ORIGIN}
    no_reason = e.client.post(f"/console/alerts/{high}/ack", data={"csrf": csrf, "note": " "},
                              headers=headers)
    assert no_reason.status_code == 400 and "say why" in no_reason.text
    ok = e.client.post(f"/console/alerts/{high}/ack", headers=headers,
                       data={"csrf": csrf, "note": "red-team exercise RT-12"},
                       follow_redirects=False)
    assert ok.status_code == 303
    assert e.ctx.alerts().get(high).ack_note == "red-team exercise RT-12"
    by_form = e.client.post(f"/console/alerts/{crit}/ack", headers=headers,
                            data={"csrf": csrf, "note": "fine"})
    assert by_form.status_code == 400 and "security key" in by_form.text
    assert e.ctx.alerts().get(crit).acked_at is None
    # the critical one: dave's security key signs the acknowledgement statement
    h = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    begin = e.client.post("/webauthn/alert-ack/begin", headers=h,
                          json={"alert": crit, "reason": "canary touched by the red team"})
    assert begin.status_code == 200, begin.text
    assert begin.json()["statement"]["dedup_key"] == "SR-CANARY:bob:test"
    k = e.keys["dave"]
    done = e.client.post("/webauthn/alert-ack/finish", headers=h, json={"credential": k.browser_json(
        k.assertion(fido.unb64url(begin.json()["options"]["challenge"])))})
    assert done.status_code == 200, done.text
    digest = done.json()["statement"]
    assert statements.by_digest(e.w.store, digest) is not None
    acked = e.ctx.alerts().get(crit)
    assert acked.acked_by == "dave" and acked.ack_note == "canary touched by the red team"
    entry = [ev for ev in e.w.keys.svc.audit.tail(5) if ev.action == "alert.ack"][-1]
    assert entry.details["statement"] == digest and entry.actor == "dave"
    again = e.client.post("/webauthn/alert-ack/begin", headers=h,
                          json={"alert": crit, "reason": "again"})
    assert again.status_code == 409


def test_only_security_officers_acknowledge(env: Env) -> None:
    e = env
    crit = _raise(e, "SR-CANARY", "critical", "bob")
    csrf = e.sign_in("bob")  # an approver, not an officer
    r = e.client.post("/webauthn/alert-ack/begin", json={"alert": crit, "reason": "mine"},
                      headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert r.status_code == 403
    assert e.ctx.alerts().get(crit).acked_at is None


def test_assign_shows_filters_and_is_audited(env_any: Env) -> None:
    e = env_any
    a = _raise(e, "SR-EXFIL", "high")
    b = _raise(e, "SR-DENIALS", "high", "bob")
    e.w.enroll("erin", roles=("security-officers",))
    csrf = e.sign_in("dave")
    headers = {"Origin": ORIGIN}
    r = e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": "erin"},
                      headers=headers, follow_redirects=False)
    assert r.status_code == 303
    assert e.ctx.alerts().get(a).assigned_to == "erin"
    entry = [ev for ev in e.w.keys.svc.audit.tail(5) if ev.action == "alert.assign"][-1]
    assert entry.actor == "dave" and entry.details["assigned_to"] == "erin"
    assert entry.details["alert_id"] == a
    e.client.post(f"/console/alerts/{b}/assign", data={"csrf": csrf, "to": "dave"},
                  headers=headers)
    page = e.client.get("/console/alerts").text
    row = page.split(f'id="alert-{a}"', 1)[1].split("</tr>", 1)[0]
    assert "<strong>erin</strong>" in row
    mine = e.client.get("/console/alerts?assignee=me").text
    assert f'id="alert-{b}"' in mine and f'id="alert-{a}"' not in mine
    erins = e.client.get("/console/alerts?assignee=erin").text
    assert f'id="alert-{a}"' in erins and f'id="alert-{b}"' not in erins
    e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": ""}, headers=headers)
    assert e.ctx.alerts().get(a).assigned_to is None
    nobody = e.client.get("/console/alerts?assignee=none").text
    assert f'id="alert-{a}"' in nobody and f'id="alert-{b}"' not in nobody


def test_assign_refusals_are_4xx(env: Env) -> None:
    e = env
    a = _raise(e, "SR-EXFIL", "high")
    csrf = e.sign_in("dave")
    h = {"Origin": ORIGIN}
    assert e.client.post(f"/console/alerts/{a}/assign", data={"to": "dave"},
                         headers=h).status_code == 403  # no CSRF token
    bad = e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": "bob"},
                        headers=h)  # bob is no security officer
    assert bad.status_code == 400 and "not a current security officer" in bad.text
    assert e.client.post("/console/alerts/99999/assign", data={"csrf": csrf, "to": "dave"},
                         headers=h).status_code == 404
    assert e.client.post("/console/alerts/x/assign", data={"csrf": csrf, "to": "dave"},
                         headers=h).status_code == 422
    assert e.client.get("/console/alerts?assignee=<b>").status_code == 400
    # a browser's same-origin form under Referrer-Policy: no-referrer says "Origin: null";
    # only Sec-Fetch-Site: same-origin (which no page can set) makes that acceptable
    for site, status in ((None, 403), ("cross-site", 403), ("same-site", 403),
                         ("same-origin", 303)):
        h_null = {"Origin": "null", **({"Sec-Fetch-Site": site} if site else {})}
        r = e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": "dave"},
                          headers=h_null, follow_redirects=False)
        assert r.status_code == status, (site, r.text)
    assert e.ctx.alerts().get(a).assigned_to == "dave"
    e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": ""}, headers=h)
    csrf = e.sign_in("bob")
    assert e.client.post(f"/console/alerts/{a}/assign", data={"csrf": csrf, "to": "dave"},
                         headers=h).status_code == 403
    assert e.ctx.alerts().get(a).assigned_to is None

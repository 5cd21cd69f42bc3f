"""The overview dashboard over HTTP: who may see it, its charts and numbers, hosts as recorded."""

from __future__ import annotations

import re
import time

from console_kit import Env

from strongroom.monitor.alerts import Alert
from strongroom.monitor.egress import EgressMeter


def _release(e: Env, who: str, decision: str, nbytes: int, server: str) -> int:
    """A key-release entry as the gate on ``server`` writes it (actor, object, bytes, server)."""
    return e.w.keys.svc.audit.append(actor=who, action="key.release", obj="minilm@1/model.bin",
                                     decision=decision, nbytes=nbytes,
                                     details={"server": server, "host": "10.0.0.7"})


def test_only_auditors_and_officers_see_it_and_bad_span_is_400(env: Env) -> None:
    e = env
    anon = e.client.get("/console/overview", follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"] == "/console/sign-in"
    e.sign_in("bob")  # an approver
    assert e.client.get("/console/overview").status_code == 403
    home = e.client.get("/console", follow_redirects=False)
    assert home.headers["location"] == "/console/inbox"
    e.sign_in("dave")  # a security officer
    home = e.client.get("/console", follow_redirects=False)
    assert home.headers["location"] == "/console/overview"
    page = e.client.get("/console/overview")
    assert page.status_code == 200, page.text
    assert "Content-Security-Policy" in page.headers
    for span in ("1y", "<script>", ""):
        bad = e.client.get("/console/overview", params={"span": span})
        assert bad.status_code == 400 and "unknown span" in bad.text
    api = e.client.get("/console/overview?span=x", headers={"Accept": "application/json"})
    assert api.status_code == 400 and "unknown span" in api.json()["error"]


def test_charts_count_what_the_log_and_ledger_hold(env: Env) -> None:
    e = env
    e.sign_in("dave")
    before = e.client.get("/console/overview").text  # the tally starts here
    assert 'id="releases-chart"' in before and 'role="img"' in before
    for _ in range(3):
        _release(e, "alice", "allow", 3 << 20, "host-b")
    _release(e, "mallory", "deny", 1 << 20, "host-c")
    meter = EgressMeter(e.w.store)
    now = time.time()
    meter.charge("alice", 5 << 30, now, artifact="minilm@1", charge_id="t-alice")
    meter.charge("carol", 1 << 20, now, artifact="minilm@1", charge_id="t-carol")
    e.ctx.alerts().raise_alert(Alert(rule="SR-CANARY", severity="critical", subject="bob",
                                     obj="minilm@1", message="canary", dedup_key="c:1"))
    e.ctx.alerts().raise_alert(Alert(rule="SR-EXFIL", severity="high", subject="bob",
                                     obj="minilm@1", message="exfil", dedup_key="h:1"))
    page = e.client.get("/console/overview").text
    summary = re.sub(r"\s+", " ", page.split('id="summary">', 1)[1].split("</p>", 1)[0])
    assert "2 open alerts (1 critical)" in summary, summary
    assert "3 key releases and 1 denial in the last 24 hours" in summary, summary
    desc = page.split('id="releases-chart-desc">', 1)[1].split("</desc>", 1)[0]
    assert desc.startswith("3 key releases allowed (9.0 MiB) and 1 denied"), desc
    # top principals by egress, against the per-principal budget (256 GiB a day by default)
    egress = page.split('id="egress-chart"', 1)[1].split("</svg>", 1)[0]
    assert egress.index("alice") < egress.index("carol")
    assert "5.0 GiB of 256.0 GiB in 1 day (2.0 %)" in egress
    alerts = page.split('id="alerts-chart-desc">', 1)[1].split("</desc>", 1)[0]
    assert alerts == "1 critical, 1 high, 0 warning, 0 info alerts open"
    # hosts: this one live; host-b and host-c as their release entries recorded them
    hosts = page.split('id="hosts"', 1)[1].split("</table>", 1)[0]
    assert "(this host)" in hosts and "unsealed</span> now" in hosts
    assert "host-b" in hosts and "host-c" in hosts and "released a key" in hosts
    # a sealed host stays as recorded: a seal entry naming it wins over its older releases
    e.w.keys.svc.audit.append(actor="keyring", action="keys.seal", obj="keyring",
                              decision="allow", details={"server": "host-b"})
    hosts = e.client.get("/console/overview?span=7d").text.split('id="hosts"', 1)[1]
    row_b = hosts.split("host-b", 1)[1].split("</tr>", 1)[0]
    assert "last recorded <span class=\"badge deny\">sealed</span>" in row_b, row_b


def test_labels_and_messages_are_escaped_in_charts(env: Env) -> None:
    e = env
    e.sign_in("dave")
    e.client.get("/console/overview")
    EgressMeter(e.w.store).charge("<script>x</script>", 1 << 20, time.time(),
                                  artifact="minilm@1", charge_id="t-x")
    page = e.client.get("/console/overview").text
    assert "<script>x" not in page and "&lt;script&gt;x" in page

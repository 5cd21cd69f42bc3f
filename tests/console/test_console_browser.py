"""The console in a real browser: register a security key, officers endorse it, sign in,
approve with the key (two approvers), issue the Grant, and the release gate accepts it.

Debian's chromium (``/usr/bin/chromium``) driven by Playwright, with Chrome's virtual
authenticator (CDP ``WebAuthn.addVirtualAuthenticator``) standing in for each person's
security key. The page is loaded from ``http://localhost:PORT``: WebAuthn refuses the
RP id ``localhost`` from ``127.0.0.1``. Screenshots go to ``$STRONGROOM_TEST_ARTIFACTS``
(default ``test-artifacts/``) under ``console/``.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from access_kit import World, access_world

from strongroom.access import statements
from strongroom.access.approvals import AccessRequest, submit_request
from strongroom.access.breakglass import ALERT_ACTION, submit_break_glass, take
from strongroom.access.directory import publish
from strongroom.access.registration import endorsed_enrollment, make_register_token
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.server.context import ServerContext
from strongroom.settings import Settings

from vault_fixtures import make_model

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"Debian chromium is not installed at {CHROMIUM} "
                                "(apt-get install chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
AUTHENTICATOR = {"options": {"protocol": "ctap2", "transport": "usb", "hasResidentKey": True,
                             "hasUserVerification": True, "isUserVerified": True,
                             "automaticPresenceSimulation": True}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    w: World
    base: str
    shots: Path


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    import uvicorn

    from strongroom.server.app import create_app

    port = _free_port()
    base = f"http://localhost:{port}"
    monkeypatch.setenv("STRONGROOM_CONSOLE_ORIGIN", base)
    shots = Path(os.environ.get("STRONGROOM_TEST_ARTIFACTS", "test-artifacts")) / "console"
    shots.mkdir(parents=True, exist_ok=True)
    with access_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path) as w:
        make_model(tmp_path / "m.safetensors")
        w.vault.import_weights(tmp_path / "m.safetensors", "minilm", compartments=["atlas"])
        w.enroll("alice", roles=("requesters",))
        w.enroll("bob")
        w.enroll("carol", roles=("approvers", "security-officers"))
        ctx = ServerContext(Settings(home=tmp_path / "home", database_url=w.store.url), w.store,
                            w.keys.svc, w.vault.blobs, owns_store=False)
        server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        try:
            yield Served(w, base, shots)
        finally:
            server.should_exit = True
            thread.join(10)


def _person_page(browser: Any) -> tuple[Any, list[str]]:
    """A fresh browser context (own cookies) with its own virtual security key."""
    context = browser.new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", AUTHENTICATOR)
    problems: list[str] = []
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" else None)
    return page, problems


AXE = Path(__file__).parent / "vendor" / "axe.min.js"


def _axe(page: Any, where: str) -> None:
    """Run axe-core (vendored, MPL-2.0) in the page; fail on serious or critical violations.

    Injected over the DevTools protocol (``evaluate``), which the page's CSP does not
    govern; the console itself never loads it.
    """
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [f"{v['id']} ({v['impact']}): {v['help']} at "
           f"{[n['target'] for n in v['nodes']][:3]}"
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{where}: {bad}"


def test_register_endorse_sign_in_approve_grant_release(served: Served) -> None:
    from playwright.sync_api import expect, sync_playwright

    w, base, shots = served.w, served.base, served.shots
    alice = w.people["alice"]
    req = AccessRequest.new("alice", alice.public.key_id, "minilm", "load", f"eval {XSS}", 3600,
                            1 << 30, time.time()).sign(alice.private_key)
    digest = submit_request(w.store, req)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            pages = {}
            for name in ("bob", "carol"):
                page, problems = _person_page(browser)
                pages[name] = (page, problems)
                # 1. register a security key with a token signed by the person's identity
                page.goto(f"{base}/console/register")
                page.fill("#token", make_register_token(w.people[name]))
                page.click("#register-button")
                expect(page.locator("#result")).to_contain_text("Registered security key",
                                                                timeout=15000)
                credential = page.locator("#register").get_attribute("data-credential")
                assert credential
                page.screenshot(path=str(shots / f"1-registered-{name}.png"))
                # before the officers endorse it, the key signs nobody in
                page.goto(f"{base}/console/sign-in")
                page.fill("#name", name)
                page.click("#sign-in-button")
                expect(page.locator("#result")).to_contain_text(
                    "No security key enrolled for this name answered")
                # 2. the officers (2 of 2) sign the enrollment listing the key
                current = w.rule.reader.view().by_name(name)
                assert current is not None
                e = endorsed_enrollment(w.store, current, [credential[:16]], now=time.time())
                publish(w.store, "enrollment", e.sign(*[o.private_key for o in w.officers]))
                # 3. sign in with it
                page.click("#sign-in-button")
                page.wait_for_url(f"{base}/console/inbox")
                page.screenshot(path=str(shots / f"2-inbox-{name}.png"))
                # 4. approve: the key signs the approval statement's digest
                page.click(f'a[href="/console/requests/{digest}"]')
                expect(page.locator("#purpose")).to_have_text(f"eval {XSS}")  # shown, not run
                page.click("#approve")
                expect(page.locator("#counted")).to_contain_text(name, timeout=15000)
                page.screenshot(path=str(shots / f"3-approved-{name}.png"))
            # 5. the rule (2 of approvers) is met: carol issues the Grant with her key
            page, problems = pages["carol"]
            page.click("#issue")
            expect(page.locator("#granted")).to_be_visible(timeout=15000)
            page.screenshot(path=str(shots / "4-granted.png"))
            # a second request: bob denies it with his key, giving a reason
            second = submit_request(w.store, AccessRequest.new(
                "alice", alice.public.key_id, "minilm", "export", "take it home", 3600, 1 << 30,
                time.time()).sign(alice.private_key))
            bob_page, _ = pages["bob"]
            bob_page.goto(f"{base}/console/requests/{second}")
            bob_page.fill("#deny-reason", f"exports are frozen {XSS}")
            bob_page.click("#deny")
            expect(bob_page.locator("#why-not")).to_contain_text("denied by bob", timeout=15000)
            bob_page.screenshot(path=str(shots / "4b-denied.png"))
            # the audit explorer proves the approval's entry in the page (WebCrypto SHA-256)
            page.goto(f"{base}/console/audit")
            buttons = page.locator("[data-proof]")
            n = buttons.count()
            assert n >= 8
            for i in range(n):  # every index of the tree: every shape of Merkle path
                buttons.nth(i).click()
            expect(page.locator(".proof.ok")).to_have_count(n, timeout=10000)
            page.screenshot(path=str(shots / "5-audit-proofs.png"))

            def tamper(route: Any) -> None:  # a proof whose path was altered must fail
                body = route.fetch().json()
                first = bytearray(base64.b64decode(body["hashes"][0]))
                first[0] ^= 1
                body["hashes"][0] = base64.b64encode(bytes(first)).decode()
                route.fulfill(json=body)

            page.route("**/console/audit/*/proof", tamper)
            page.goto(f"{base}/console/audit")
            page.locator("[data-proof]").first.click()
            expect(page.locator(".proof.error").first).to_contain_text("NOT verified")
            page.unroute("**/console/audit/*/proof")
            # break-glass taken by alice 25 h ago: carol reviews it with her security key
            bg_env = take(alice.private_key, "alice", "minilm", "load", f"outage {XSS}",
                          now=time.time() - 25 * 3600, window_s=600)
            bg = submit_break_glass(w.store, bg_env)
            w.keys.svc.audit.append(actor="alice", action=ALERT_ACTION, obj="minilm",
                                    decision="allow", reason="outage",
                                    details={"severity": "critical", "break_glass": bg})
            page.goto(f"{base}/console/break-glass")
            card = page.locator(f"#bg-{bg[:16]}")
            expect(card).to_contain_text("review overdue")
            card.locator("input[value=unjustified]").check()
            card.locator("textarea").fill("no incident ticket")
            card.locator("button[type=submit]").click()
            expect(page.locator(f"#bg-{bg[:16]} .reviews")).to_contain_text("carol",
                                                                         timeout=15000)
            page.screenshot(path=str(shots / "7-break-glass-reviewed.png"), full_page=True)
            # an alert assigned to carol from the alerts page
            raised = AlertManager(w.store, audit=w.keys.svc.audit).raise_alert(Alert(
                "SR-EXFIL", "high", "alice", "minilm@1", "3 GiB in an hour", "browser-1"))
            page.goto(f"{base}/console/alerts")
            page.select_option(f"#to-{raised.id}", "carol")
            page.locator(f"#alert-{raised.id} form.assign button").click()
            expect(page.locator(f"#alert-{raised.id} td.assignee")).to_contain_text("carol")
            w.keys.svc.audit.checkpoint(require_quorum=False)
            first_entry = page.locator("#entries a").first.get_attribute("href") \
                if page.goto(f"{base}/console/audit") else None
            assert first_entry
            for path in ("overview", "overview?span=7d", "break-glass", "alerts?assignee=me",
                         "people", "artifacts", "alerts", "status", "audit",
                         "audit?decision=deny", first_entry.removeprefix("/console/"),
                         f"requests/{digest}", "no-such-page"):
                response = page.goto(f"{base}/console/{path}")
                assert response is not None, path
                assert response.status == (404 if path == "no-such-page" else 200), path
                name = re.sub(r"[^a-z0-9]+", "-", path).strip("-")
                page.screenshot(path=str(shots / f"6-{name}.png"), full_page=True)
                _axe(page, path)
            for name, (pg, problems) in pages.items():
                assert pg.evaluate("window.__xss") is None, name
                assert not [x for x in problems if "dialog" in x or "Content Security" in x], \
                    problems
        finally:
            browser.close()
    # 6. the requester loads the weights: the release gate accepts the Grant from signatures
    with w.vault_as("alice").open_weights("minilm") as weights:
        assert len(weights) > 0
    grants = statements.envelopes(w.store, "grant", subject=alice.public.key_id)
    assert len(grants) == 1 and '"webauthn"' in grants[0]

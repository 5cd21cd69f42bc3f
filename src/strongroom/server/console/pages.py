"""The console's HTML pages (Jinja2, autoescaped) and its form POSTs."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from strongroom.access.directory import level_name
from strongroom.artifacts import ArtifactRef
from strongroom.server.console import data
from strongroom.server.console.core import AUDITORS, HERE, Console, ConsoleError
from strongroom.server.console.sessions import COOKIE

__all__ = ["add_routes"]

_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
_AUDIT_SCAN = 5000


def add_routes(router: APIRouter, console: Console) -> None:
    """Add ``/console/...`` pages and ``/static/...`` files."""
    ctx = console.ctx

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _STATIC:  # a fixed list: no path ever reaches the file system
            raise ConsoleError(404, "no such file")
        return FileResponse(HERE / "static" / name, media_type=_STATIC[name])

    @router.get("/console", include_in_schema=False)
    async def home(request: Request) -> Response:
        sess = console.session(request)
        target = "/console/inbox" if sess.person_key else "/console/sign-in"
        response = RedirectResponse(target, status_code=303)
        value = getattr(request.state, "new_cookie", None)
        if value:
            console.set_cookie(response, value)
        return response

    @router.get("/console/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> HTMLResponse:
        return console.page(request, "sign_in.html", None)

    @router.get("/console/register", include_in_schema=False)
    async def register(request: Request) -> HTMLResponse:
        return console.page(request, "register.html", None)

    @router.post("/console/sign-out", include_in_schema=False)
    async def sign_out(request: Request, csrf: str = Form("")) -> Response:
        sess = console.session(request)
        console.check_post(request, sess, csrf)
        console.sessions.end(sess)
        response = RedirectResponse("/console/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    @router.get("/console/inbox", include_in_schema=False)
    async def inbox(request: Request) -> HTMLResponse:
        sess = console.session(request)
        me = console.person(sess)
        return console.page(request, "inbox.html", sess, items=data.inbox(console, me))

    @router.get("/console/requests/{digest}", include_in_schema=False)
    async def request_detail(request: Request, digest: str) -> HTMLResponse:
        sess = console.session(request)
        me = console.person(sess)
        item = data.request_item(console, digest, me)
        can_issue = item.assignment is not None and not item.granted and not item.denied and (
            me.name == item.request.requester or me.name in item.counted)
        return console.page(request, "request.html", sess, item=item, can_issue=can_issue)

    @router.get("/console/audit", include_in_schema=False)
    async def audit(request: Request, actor: str = "", action: str = "",
                    object: str = "") -> HTMLResponse:
        sess = console.session(request)
        console.require_role(console.person(sess), *AUDITORS)
        log = ctx.audit()
        size = log.size()
        found = []
        for ev in reversed(log.events(max(0, size - _AUDIT_SCAN), size)):
            if actor and actor.lower() not in ev.actor.lower():
                continue
            if action and action.lower() not in ev.action.lower():
                continue
            if object and object.lower() not in ev.object.lower():
                continue
            found.append(ev)
            if len(found) >= 200:
                break
        return console.page(request, "audit.html", sess, events=found, size=size,
                            q={"actor": actor, "action": action, "object": object})

    @router.get("/console/audit/{index}/proof", include_in_schema=False)
    async def audit_proof(request: Request, index: int) -> JSONResponse:
        from strongroom.audit.checkpoint import Checkpoint
        from strongroom.crypto.note import parse_note

        sess = console.session(request)
        console.require_role(console.person(sess), *AUDITORS)
        log = ctx.audit()
        proof = log.prove(index)
        log.opened(proof.checkpoint)  # the log's signature on the checkpoint, checked here
        text, _ = parse_note(proof.checkpoint)
        cp = Checkpoint.parse(text)
        return JSONResponse({"index": proof.index, "size": cp.size,
                             "root": base64.b64encode(cp.root).decode(),
                             "entry": base64.b64encode(proof.entry).decode(),
                             "hashes": [base64.b64encode(h).decode() for h in proof.hashes],
                             "checkpoint": proof.checkpoint})

    @router.get("/console/alerts", include_in_schema=False)
    async def alerts(request: Request) -> HTMLResponse:
        sess = console.session(request)
        me = console.person(sess)
        console.require_role(me, *AUDITORS)
        rows = ctx.alerts().recent(limit=200)
        return console.page(request, "alerts.html", sess, alerts=rows,
                            may_ack="security-officers" in me.roles)

    @router.post("/console/alerts/{alert_id}/ack", include_in_schema=False)
    async def ack(request: Request, alert_id: int, csrf: str = Form(""),
                  note: str = Form("")) -> Response:
        sess = console.session(request)
        console.check_post(request, sess, csrf)
        me = console.person(sess)
        if "security-officers" not in me.roles:
            raise ConsoleError(403, "only security officers acknowledge alerts")
        ctx.alerts().ack(alert_id, by=me.name, note=note[:500])
        return RedirectResponse("/console/alerts", status_code=303)

    @router.get("/console/people", include_in_schema=False)
    async def people(request: Request) -> HTMLResponse:
        sess = console.session(request)
        console.person(sess)
        directory = ctx.directory()
        now = time.time()
        rows = sorted((p for kid, p in directory.principals.items()
                       if kid not in directory.revoked_keys), key=lambda p: p.name)
        compartments: dict[str, list[str]] = {}
        for p in rows:
            for c in p.compartments:
                compartments.setdefault(c, []).append(p.name)
        return console.page(request, "people.html", sess, people=rows, now=now,
                            level_name=level_name, compartments=sorted(compartments.items()),
                            labels=sorted(directory.labels.values(), key=lambda x: x.resource))

    @router.get("/console/artifacts", include_in_schema=False)
    async def artifacts(request: Request) -> HTMLResponse:
        from strongroom.monitor.egress import EgressMeter

        sess = console.session(request)
        console.person(sess)
        meter = EgressMeter(ctx.store)
        now = time.time()
        rows: list[dict[str, Any]] = []
        with ctx.vault(actor="console") as vault:
            for a in vault.list_artifacts():
                ref = str(ArtifactRef(a.name, a.version))
                bars = [{"scope": u.budget.scope, "window": u.budget.describe("*", a.name),
                         "used": u.used, "cap": u.budget.cap_bytes,
                         "percent": min(100, round(100 * u.fraction))}
                        for u in meter.usage("*", ref, now)
                        if u.budget.scope in ("artifact", "lab")]
                rows.append({"ref": ref, "kind": a.kind, "files": a.files,
                             "size": a.total_size, "bars": bars})
        return console.page(request, "artifacts.html", sess, artifacts=rows)

    @router.get("/console/status", include_in_schema=False)
    async def status(request: Request) -> HTMLResponse:
        st = ctx.keys.status()
        sess = console.session(request)
        may_seal = False
        if sess.person_key:
            try:
                may_seal = "security-officers" in console.person(sess).roles
            except ConsoleError:
                may_seal = False  # a revoked or lapsed person still sees the seal state
        return console.page(request, "status.html", sess, seal=st, may_seal=may_seal,
                            host=ctx.settings.host_id)

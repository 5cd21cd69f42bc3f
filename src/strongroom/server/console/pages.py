"""The console's HTML pages (Jinja2, autoescaped) and its form POSTs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from strongroom.access.directory import level_name
from strongroom.artifacts import ArtifactRef
from strongroom.server.console import data
from strongroom.server.console.core import AUDITORS, HERE, Console, ConsoleError
from strongroom.server.console.sessions import COOKIE

__all__ = ["add_not_found", "add_routes", "percent"]

_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


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
        if sess.person_key:
            try:  # officers and auditors start at the overview
                if set(console.person(sess).roles) & set(AUDITORS):
                    target = "/console/overview"
            except ConsoleError:
                pass
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
                         "percent": min(100.0, 100 * u.fraction),
                         "percent_text": percent(u.fraction)}
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


def percent(fraction: float) -> str:
    """A share of a budget as people read it: ``0 %``, ``< 0.1 %``, ``0.3 %``, ``42 %``."""
    if fraction <= 0:
        return "0 % used"
    if fraction < 0.001:
        return "< 0.1 % used"
    return f"{100 * fraction:.1f} % used" if fraction < 0.1 else f"{100 * fraction:.0f} % used"


def add_not_found(router: APIRouter) -> None:
    """Answer every other ``/console/...`` address with a 404 page (JSON for API clients).

    Added last, so it matches only what no page matched.
    """

    @router.api_route("/console/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def not_found(rest: str) -> Response:
        raise ConsoleError(404, f"there is no console page at /console/{rest[:100]}")

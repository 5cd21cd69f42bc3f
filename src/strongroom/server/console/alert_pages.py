"""The console's alert triage: filters, evidence links, acknowledgements with a reason.

Routes (auditors and security officers see alerts; security officers acknowledge)::

    GET  /console/alerts?rule=SR-...&severity=critical&state=open&assignee=me   filtered
    POST /console/alerts/{id}/ack                  a reason (required); not for critical alerts
    POST /console/alerts/{id}/assign               to a current security officer, or nobody
    POST /webauthn/alert-ack/{begin,finish}        a critical alert: the officer's security key
                                                   signs an ``alert-ack`` statement

Every alert links to its evidence in the audit explorer: the ``alert.raise``
entry (found by the alert's de-duplication key) and everything its subject did
from an hour before the first sighting to the last one. Acknowledgements are
audited as ``alert.ack``; a signed one carries the statement's digest, and the
statement is kept with the other signed statements. An alert is assigned to one
security officer at a time (``alert.assign`` in the audit log); the list shows
and filters by the assignee (``me``, ``none`` or a name).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from strongroom.access import statements
from strongroom.monitor.alerts import SEVERITIES, StoredAlert
from strongroom.server.console.core import AUDITORS, Console, ConsoleError
from strongroom.timefmt import utc_stamp

__all__ = ["add_routes", "evidence_links"]

#: Alerts one page lists at most (newest first).
LIST_LIMIT = 200
#: How far before an alert's first sighting its evidence link reaches.
EVIDENCE_BEFORE = timedelta(hours=1)
_STATES = ("open", "acknowledged", "all")


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def evidence_links(a: StoredAlert) -> dict[str, str]:
    """Audit-explorer addresses of an alert's own entry and of its subject's activity around it."""
    since = _aware(a.first_seen) - EVIDENCE_BEFORE
    until = _aware(a.last_seen) + timedelta(minutes=1)
    raised = urlencode({"alerts": "1", "q": a.dedup_key})
    activity = urlencode({"actor": a.subject, "since": utc_stamp(since.timestamp()),
                          "until": utc_stamp(until.timestamp())})
    return {"raised": f"/console/audit?{raised}", "activity": f"/console/audit?{activity}"}


def _officers(console: Console) -> list[str]:
    """Names of the current security officers (whom an alert may be assigned to)."""
    directory = console.ctx.directory()
    now = time.time()
    return sorted(p.name for kid, p in directory.principals.items()
                  if kid not in directory.revoked_keys and "security-officers" in p.roles
                  and p.eligible(now))


def add_routes(router: APIRouter, console: Console) -> None:
    """Add the alert pages and the security-key acknowledgement ceremony."""
    from strongroom.server.console import ceremonies

    ctx = console.ctx

    @router.get("/console/alerts", include_in_schema=False)
    async def alerts(request: Request, rule: str = "", severity: str = "",
                     state: str = "open", assignee: str = "") -> HTMLResponse:
        sess = console.session(request)
        me = console.person(sess)
        console.require_role(me, *AUDITORS)
        officers = _officers(console)
        if assignee not in ("", "me", "none") and assignee not in officers:
            raise ConsoleError(400, f"unknown assignee {assignee[:40]!r}: use me, none or a "
                               "security officer's name")
        assigned = {"": None, "none": "", "me": me.name}.get(assignee, assignee)
        if severity and severity not in SEVERITIES:
            raise ConsoleError(400, f"unknown severity {severity[:20]!r}: use one of "
                               f"{', '.join(SEVERITIES)}")
        if state not in _STATES:
            raise ConsoleError(400, f"unknown state {state[:20]!r}: use one of "
                               f"{', '.join(_STATES)}")
        manager = ctx.alerts()
        rows = manager.recent(limit=LIST_LIMIT, rule=rule or None, severity=severity or None,
                              unacked=state == "open", acked=state == "acknowledged",
                              assigned_to=assigned)
        rules = sorted({a.rule for a in manager.recent(limit=1000)} | ({rule} if rule else set()))
        listed: list[dict[str, Any]] = [{"a": a, "links": evidence_links(a)} for a in rows]
        return console.page(request, "alerts.html", sess, alerts=listed, rules=rules,
                            severities=SEVERITIES, states=_STATES,
                            f={"rule": rule, "severity": severity, "state": state,
                               "assignee": assignee},
                            officers=officers, may_ack="security-officers" in me.roles,
                            has_key=bool(me.security_keys), limit=LIST_LIMIT)

    @router.post("/console/alerts/{alert_id}/ack", include_in_schema=False)
    async def ack(request: Request, alert_id: int, csrf: str = Form(""),
                  note: str = Form("")) -> Response:
        sess = console.session(request)
        console.check_post(request, sess, csrf)
        me = console.person(sess)
        if "security-officers" not in me.roles:
            raise ConsoleError(403, "only security officers acknowledge alerts")
        current = ctx.alerts().get(alert_id)
        if current.severity == "critical":
            raise ConsoleError(400, f"alert {alert_id} is critical: acknowledge it with your "
                               "security key (the button beside it), which signs your reason")
        reason = note.strip()
        if not reason or len(reason) > ceremonies.MAX_DENIAL_REASON:
            raise ConsoleError(400, "say why the alert is handled (1-500 characters): "
                               "auditors read it")
        ctx.alerts().ack(alert_id, by=me.name, note=reason)
        return RedirectResponse("/console/alerts", status_code=303)

    @router.post("/console/alerts/{alert_id}/assign", include_in_schema=False)
    async def assign(request: Request, alert_id: int, csrf: str = Form(""),
                     to: str = Form("")) -> Response:
        sess = console.session(request)
        console.check_post(request, sess, csrf)
        me = console.person(sess)
        if "security-officers" not in me.roles:
            raise ConsoleError(403, "only security officers assign alerts")
        if to and to not in _officers(console):
            raise ConsoleError(400, f"{to[:40]!r} is not a current security officer: assign "
                               "the alert to one, or to nobody")
        ctx.alerts().assign(alert_id, to=to or None, by=me.name)
        return RedirectResponse(f"/console/alerts?state=all#alert-{alert_id}", status_code=303)

    @router.post("/webauthn/alert-ack/begin", include_in_schema=False)
    async def alert_ack_begin(request: Request) -> JSONResponse:
        sess, body, me = await ceremonies.signed_in_post(console, request, "security-officers")
        try:
            alert_id = int(body.get("alert", ""))
        except (TypeError, ValueError):
            raise ConsoleError(400, "name the alert to acknowledge (its number)") from None
        current = ctx.alerts().get(alert_id)
        if current.acked_at is not None:
            raise ConsoleError(409, f"alert {alert_id} was acknowledged by "
                               f"{current.acked_by} already")
        st = {"alert": alert_id, "rule": current.rule, "severity": current.severity,
              "dedup_key": current.dedup_key, "by": me.name, "by_key": me.key_id,
              "reason": ceremonies.reason_of(body, "acknowledge this alert"),
              "issued": int(time.time())}
        return ceremonies.start_signing(console, sess, me, "alert-ack", "alert-ack", st,
                                        alert=str(alert_id))

    @router.post("/webauthn/alert-ack/finish", include_in_schema=False)
    async def alert_ack_finish(request: Request) -> JSONResponse:
        me, env, _, ceremony, verified = await ceremonies.finish_signing(
            console, request, "alert-ack", "alert-ack", "no acknowledgement in progress")
        console.require_role(me, "security-officers")
        st = verified.statement
        alert_id = int(ceremony["alert"])
        current = ctx.alerts().get(alert_id)
        if st.get("alert") != alert_id or st.get("dedup_key") != current.dedup_key:
            raise ConsoleError(400, "the signed acknowledgement names another alert")
        digest = statements.payload_digest(env)
        statements.put(ctx.store, "alert-ack", env, subject=f"alert:{alert_id}")
        ctx.alerts().ack(alert_id, by=me.name, note=str(st.get("reason", ""))[:500],
                         statement=digest)
        return JSONResponse({"ok": True, "statement": digest, "redirect": "/console/alerts"})

"""The console's break-glass review: every emergency access, and officers' signed reviews of it.

Routes (auditors and security officers see the list; security officers review)::

    GET  /console/break-glass                         every break-glass, newest first
    POST /webauthn/break-glass-review/{begin,finish}  the officer's security key signs a review

Each use shows who took it, on what, when, why, and the bytes released under
it (the egress ledger's charges against its id, the same figure the gate
checks against its byte budget), with the reviews that verify
(:func:`strongroom.access.breakglass.verified_reviews`: identity-signed reviews from
the CLI and API, and security-key-signed ones from here) and whether the quorum
(``2 of security-officers``, never the taker) is met. A use not reviewed within
:data:`REVIEW_DUE_S` is *overdue*; the monitor loop raises ``SR-BREAKGLASS-REVIEW``
for it once (:class:`strongroom.monitor.detectors.UnreviewedBreakGlass`).

A review here is the same ``review`` statement ``strongroom access break-glass
--review`` signs (:func:`~strongroom.access.breakglass.review_statement`), signed
with the officer's security key (its digest is the WebAuthn challenge), stored
where the API stores reviews, and audited as ``access.break-glass.review`` with
the signed statement journaled in the entry, so the audit log keeps it.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from strongroom.access import statements
from strongroom.access.approvals import satisfy
from strongroom.access.directory import Enrollment
from strongroom.server.console.core import AUDITORS, Console, ConsoleError

__all__ = ["REVIEW_DUE_S", "add_routes", "uses"]

#: A break-glass not reviewed by the quorum this long after it was taken is overdue.
REVIEW_DUE_S = 24 * 3600
#: Break-glass uses the page lists at most (newest first).
LIST_LIMIT = 200
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def uses(console: Console, now: float, me: Enrollment | None = None) -> list[dict[str, Any]]:
    """Every stored break-glass, newest first, with its reviews and bytes released."""
    from strongroom.access.breakglass import REVIEW_RULE, BreakGlass, verified_reviews
    from strongroom.errors import IntegrityError, InvalidInput
    from strongroom.monitor.egress import EgressMeter

    store = console.ctx.store
    directory = console.ctx.directory()
    cache = console.ctx.directory_reader().cache
    taken: list[BreakGlass] = []
    for env in statements.envelopes(store, "break-glass")[:LIST_LIMIT]:
        try:
            taken.append(BreakGlass.from_statement(statements.unverified_payload(env),
                                                   statements.payload_digest(env)))
        except (IntegrityError, InvalidInput):
            continue
    spent = EgressMeter(store).spent([bg.id for bg in taken]) if taken else {}
    rows: list[dict[str, Any]] = []
    for bg in sorted(taken, key=lambda b: -b.issued):
        reviews = verified_reviews(bg, statements.envelopes(store, "review", subject=bg.id),
                                   directory, cache)
        done = satisfy(REVIEW_RULE, [r.reviewer for r in reviews]) is not None
        mine = me is not None and any(r.reviewer.key_id == me.key_id for r in reviews)
        row = {"id": bg.id, "principal": bg.principal, "resource": bg.resource,
               "action": bg.action, "reason": bg.reason, "issued": bg.issued,
               "expires": bg.expires, "byte_budget": bg.byte_budget,
               "released": spent.get(bg.id, 0), "reviews": reviews, "reviewed": done,
               "overdue": not done and now - bg.issued > REVIEW_DUE_S, "why_not": ""}
        if me is not None:
            row["why_not"] = _why_not(me, bg, mine)
        rows.append(row)
    return rows


def _why_not(me: Enrollment, bg: Any, reviewed_by_me: bool) -> str:
    """Why ``me`` may not review ``bg`` ("" when they may)."""
    if "security-officers" not in me.roles:
        return "security officers review break-glass"
    if me.key_id == bg.principal_key or me.name == bg.principal:
        return "you took this break-glass: two other security officers review it"
    if reviewed_by_me:
        return "you reviewed it already"
    if not me.security_keys:
        return "you have no security key enrolled"
    return ""


def add_routes(router: APIRouter, console: Console) -> None:
    """Add the break-glass page and the security-key review ceremony."""
    from strongroom.server.console import ceremonies

    ctx = console.ctx

    @router.get("/console/break-glass", include_in_schema=False)
    def break_glass(request: Request) -> HTMLResponse:
        sess = console.session(request)
        me = console.person(sess)
        console.require_role(me, *AUDITORS)
        rows = uses(console, time.time(), me)
        return console.page(request, "break_glass.html", sess, uses=rows, limit=LIST_LIMIT,
                            pending=sum(1 for r in rows if not r["reviewed"]),
                            overdue=sum(1 for r in rows if r["overdue"]), due_s=REVIEW_DUE_S)

    @router.post("/webauthn/break-glass-review/begin", include_in_schema=False)
    async def review_begin(request: Request) -> JSONResponse:
        from strongroom.access.breakglass import VERDICTS, review_statement

        sess, body, me = await ceremonies.signed_in_post(console, request, "security-officers")
        bg_id = str(body.get("break_glass", ""))
        if not _DIGEST.match(bg_id):
            raise ConsoleError(400, "name the break-glass to review (its 64-hex-digit id)")
        verdict = str(body.get("verdict", ""))
        if verdict not in VERDICTS:
            raise ConsoleError(400, "choose a verdict: justified or not justified")
        row = next((r for r in uses(console, time.time(), me) if r["id"] == bg_id), None)
        if row is None:
            raise ConsoleError(404, f"no break-glass {bg_id[:16]}")
        if row["why_not"]:
            raise ConsoleError(409 if "already" in row["why_not"] else 403, row["why_not"])
        note = ceremonies.reason_of(body, "judge it so")
        st = review_statement(bg_id, me.name, me.key_id, verdict, now=time.time(), note=note)
        return ceremonies.start_signing(console, sess, me, "bg-review", "review", st,
                                        break_glass=bg_id)

    @router.post("/webauthn/break-glass-review/finish", include_in_schema=False)
    async def review_finish(request: Request) -> JSONResponse:
        from strongroom.access.breakglass import submit_review
        from strongroom.access.restrictions import journal_details

        me, env, key, ceremony, verified = await ceremonies.finish_signing(
            console, request, "bg-review", "review", "no review in progress")
        console.require_role(me, "security-officers")
        bg_id = str(ceremony["break_glass"])
        st = verified.statement
        if st.get("break_glass") != bg_id or st.get("reviewer_key") != me.key_id:
            raise ConsoleError(400, "the signed review names another break-glass or reviewer")
        submit_review(ctx.store, env)
        with ctx.vault(actor=me.name) as vault:
            vault.record("access.break-glass.review", bg_id[:16], "allow",
                         str(st.get("verdict", "")), break_glass=bg_id,
                         note=str(st.get("note", ""))[:300], via="console security key",
                         credential=key.id[:32],
                         **journal_details("review", env, subject=bg_id))
        return JSONResponse({"ok": True, "statement": statements.payload_digest(env),
                             "redirect": f"/console/break-glass?reviewed={bg_id[:16]}#bg-{bg_id[:16]}"})

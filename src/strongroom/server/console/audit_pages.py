"""The console's audit pages: the explorer, one entry's evidence, exports, proofs.

Routes (auditors and security officers only, as the API's audit routes)::

    GET /console/audit                 filtered pages (audit_explorer.AuditFilter in the query)
    GET /console/audit/export.csv      the current filter's matches, streamed
    GET /console/audit/export.json     the same as a JSON array of the entries' exact bytes
    GET /console/audit/{index}         one entry: fields, statements it names, proofs
    GET /console/audit/{index}/proof   the inclusion proof as JSON (checked in the page)

The entry page checks what it shows on the server: the latest checkpoint's
signature (and its witnesses' cosignatures), the entry's inclusion in it and
the checkpoint's consistency with the one before; the page's script re-checks
the inclusion proof with WebCrypto.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from strongroom.errors import StrongroomError
from strongroom.server.console import audit_explorer as explorer
from strongroom.server.console.core import AUDITORS, Console, ConsoleError
from strongroom.server.console.sessions import Session
from strongroom.timefmt import utc_stamp

__all__ = ["add_routes"]


def _auditor(console: Console, request: Request) -> tuple[Session, str]:
    sess = console.session(request)
    me = console.person(sess)
    console.require_role(me, *AUDITORS)
    return sess, me.name


def _cursor(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise ConsoleError(400, f"the page cursor {text[:20]!r} is not an entry index: "
                           "follow the page's Older/Newer links")
    return int(text)


def add_routes(router: APIRouter, console: Console) -> None:
    """Add the ``/console/audit...`` pages."""
    ctx = console.ctx

    @router.get("/console/audit", include_in_schema=False)
    async def audit(request: Request) -> HTMLResponse:
        sess, _ = _auditor(console, request)
        f = explorer.AuditFilter.from_query(request.query_params)
        before = _cursor(request.query_params.get("before"))
        started = time.perf_counter()
        page = explorer.scan(ctx.audit(), f, before=before)
        elapsed = time.perf_counter() - started
        now = time.time()
        rows = [{"ev": ev, "at": ev.at, "host": ev.details.get("host") or ""}
                for ev in page.events]
        response = console.page(
            request, "audit.html", sess, page=page, rows=rows, f=f, now=now,
            older=f"/console/audit?{f.query(before=page.older)}" if page.older else None,
            newest=f"/console/audit?{f.query()}" if before is not None else None,
            export_csv=f"/console/audit/export.csv?{f.query()}",
            export_json=f"/console/audit/export.json?{f.query()}",
            decisions=explorer.DECISIONS, page_size=explorer.PAGE,
            scan_limit=explorer.SCAN_LIMIT)
        # Server time of the search, for operators and the 100,000-entry test.
        response.headers["Server-Timing"] = f"scan;dur={elapsed * 1000:.1f}"
        return response

    def _export(request: Request, kind: str) -> StreamingResponse:
        _, name = _auditor(console, request)
        f = explorer.AuditFilter.from_query(request.query_params)
        log = ctx.audit()
        log.append(actor=name, action="audit.export", obj=f"audit log ({kind})",
                   decision="allow", reason=explorer.describe(f)[:300],
                   details={"format": kind, "size": log.size(), "via": "console"})
        stamp = utc_stamp().replace(":", "")
        body = explorer.export_csv(log, f) if kind == "csv" else explorer.export_json(log, f)
        media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
        return StreamingResponse(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="strongroom-audit-{stamp}.{kind}"'})

    @router.get("/console/audit/export.csv", include_in_schema=False)
    async def export_csv(request: Request) -> StreamingResponse:
        return _export(request, "csv")

    @router.get("/console/audit/export.json", include_in_schema=False)
    async def export_json(request: Request) -> StreamingResponse:
        return _export(request, "json")

    @router.get("/console/audit/{index}", include_in_schema=False)
    async def entry(request: Request, index: int) -> HTMLResponse:
        sess, _ = _auditor(console, request)
        log = ctx.audit()
        if index < 0 or index >= log.size():
            raise ConsoleError(404, f"no audit entry {index}: the log has {log.size()} entries")
        ev = log.event(index)
        return console.page(request, "audit_entry.html", sess, ev=ev, written=ev.at, now=time.time(),
                            details=json.dumps(ev.details, indent=2, sort_keys=True,
                                               ensure_ascii=False),
                            statements=_statements(console, ev.details),
                            proof=_proof(console, index))

    @router.get("/console/audit/{index}/proof", include_in_schema=False)
    async def audit_proof(request: Request, index: int) -> JSONResponse:
        from strongroom.audit.checkpoint import Checkpoint
        from strongroom.crypto.note import parse_note

        _auditor(console, request)
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


def _proof(console: Console, index: int) -> dict[str, Any]:
    """The entry's inclusion in the latest checkpoint and that checkpoint's consistency, checked."""
    from strongroom.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
    from strongroom.crypto.note import parse_note

    log = console.ctx.audit()
    out: dict[str, Any] = {}
    try:
        proof = log.prove(index)
        opened = log.opened(proof.checkpoint)
        cp = opened.checkpoint
        verify_inclusion(index, cp.size, leaf_hash(proof.entry), list(proof.hashes), cp.root)
        _, sigs = parse_note(proof.checkpoint)
        out.update(ok=True, size=cp.size, root=base64.b64encode(cp.root).decode(),
                   path=len(proof.hashes), leaf=leaf_hash(proof.entry).hex(),
                   signers=sorted({s.name for s in sigs}), cosigners=list(opened.cosigners),
                   note=proof.checkpoint)
    except StrongroomError as exc:
        return {"ok": False, "error": exc.message}
    previous = _previous_checkpoint(console, cp.size)
    if previous is None:
        out["consistency"] = "this is the log's first signed checkpoint"
        return out
    try:
        old = log.opened(previous).checkpoint
        verify_consistency(old.size, cp.size, log.consistency(old.size, cp.size), old.root,
                           cp.root)
        out["consistency"] = (f"extends the previous checkpoint (size {old.size:,}): "
                              "consistency proof verified")
    except StrongroomError as exc:
        out["consistency_error"] = f"NOT consistent with the checkpoint of size {old.size}: " \
                                   f"{exc.message}"
    return out


def _previous_checkpoint(console: Console, size: int) -> str | None:
    """The newest signed checkpoint smaller than ``size`` (None before the second one)."""
    from strongroom.audit.checkpoint import Checkpoint
    from strongroom.crypto.note import parse_note

    older = None
    for note in console.ctx.audit().checkpoints():
        text, _ = parse_note(note)
        if Checkpoint.parse(text).size < size:
            older = note
    return older


def _statements(console: Console, details: dict[str, Any]) -> list[dict[str, Any]]:
    """The signed statements an entry names: journaled in it, or stored under a digest it cites."""
    from strongroom.access import statements
    from strongroom.access.restrictions import STATEMENT_DETAIL
    from strongroom.units import short_code

    found: dict[str, tuple[str, str]] = {}
    journaled = details.get(STATEMENT_DETAIL)
    if isinstance(journaled, dict) and isinstance(journaled.get("envelope"), str):
        env = journaled["envelope"]
        found[statements.payload_digest(env)] = (str(journaled.get("kind", "")), env)
    for key, value in details.items():
        if isinstance(value, str) and len(value) == 64 and value not in found and \
                all(c in "0123456789abcdef" for c in value):
            env = statements.by_digest(console.ctx.store, value)
            if env is not None:
                found[value] = (key, env)
    out = []
    for digest, (kind, env) in found.items():
        try:
            payload = statements.unverified_payload(env)
            signers = statements.signer_ids(env)
        except StrongroomError:
            continue
        out.append({"digest": digest, "code": short_code(digest), "kind": kind,
                    "signers": signers, "webauthn": '"webauthn"' in env,
                    "payload": json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)})
    return out

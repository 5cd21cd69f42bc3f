"""Audit log, egress and alert routes (``/v1/audit/*``, ``/v1/monitor/egress``, ``/v1/alerts``).

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. Reading (and replaying the log: ``POST /v1/audit/verify``) needs an
auditor or a security officer; acknowledging an alert needs a security officer
(or the red-team identity, for alerts about itself) and is audited. Report rows
come from :mod:`strongroom.runtime.listings`, as the CLI's on the vault host.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from strongroom.errors import AccessDenied, InvalidInput, NotFound
from strongroom.server import models as M
from strongroom.server.auth import PrincipalKeys, require_role
from strongroom.server.context import ServerContext

__all__ = ["build_router"]

_AUDITORS = ("auditors", "security-officers")
#: The role of an identity the operator issues to the red team (``strongroom redteam run``).
_REDTEAM = "red-team"


def _entry_out(ev: Any) -> M.AuditEntryOut:
    return M.AuditEntryOut(index=ev.index, time=ev.time, actor=ev.actor, action=ev.action,
                           object=ev.object, decision=ev.decision, reason=ev.reason,
                           details=ev.details, shard=ev.shard, nbytes=ev.nbytes,
                           request_id=ev.request_id)


def _alert_out(a: Any) -> M.AlertOut:
    return M.AlertOut(id=a.id, rule=a.rule, severity=a.severity, subject=a.subject,
                      object=a.obj, message=a.message, count=a.count,
                      first_seen=a.first_seen.isoformat(), last_seen=a.last_seen.isoformat(),
                      acked_at=a.acked_at.isoformat() if a.acked_at else None,
                      acked_by=a.acked_by)


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``audit`` and ``alerts`` routes over ``ctx``."""
    r = APIRouter(prefix="/v1", tags=["audit"])

    @r.get("/audit/tail", response_model=list[M.AuditEntryOut])
    def tail(request: Request, n: Annotated[int, Query(ge=1, le=1000)] = 20
             ) -> list[M.AuditEntryOut]:
        """The newest ``n`` entries (auditors, security officers)."""
        require_role(request, keys, *_AUDITORS)
        return [_entry_out(ev) for ev in ctx.audit().tail(n)]

    @r.get("/audit/entries", response_model=M.AuditEntriesOut)
    def entries(request: Request,
                start: Annotated[int, Query(alias="from", ge=0, le=1 << 62)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> dict[str, Any]:
        """Entries ``from..`` as stored (exact bytes), the latest signed checkpoint and the
        hashes that bind the part it covers to it (``audit export`` through the API)."""
        from strongroom.audit.pages import read_page
        from strongroom.audit.tree import StoredTree

        require_role(request, keys, *_AUDITORS)
        tree = StoredTree(ctx.store)  # works sealed too: the tables are read, no key is used
        try:
            return read_page(tree, start, limit).to_json()
        finally:
            tree.close()

    @r.get("/audit/entries/{index}", response_model=M.AuditEntryOut)
    def entry(request: Request, index: Annotated[int, Path(ge=0, le=1 << 62)]
              ) -> M.AuditEntryOut:
        """One entry."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if index >= log.size():
            raise NotFound(f"the log has {log.size()} entries", obj=f"entry {index}")
        return _entry_out(log.event(index))

    @r.get("/audit/entries/{index}/proof", response_model=M.ProofOut)
    def proof(request: Request, index: Annotated[int, Path(ge=0, le=1 << 62)]) -> M.ProofOut:
        """An inclusion proof of one entry against the latest signed checkpoint."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if index >= log.size():
            raise NotFound(f"the log has {log.size()} entries", obj=f"entry {index}")
        return M.ProofOut(index=index, proof=log.prove(index).to_text())

    @r.get("/audit/checkpoint", response_model=M.CheckpointOut)
    def checkpoint(request: Request) -> M.CheckpointOut:
        """The latest signed checkpoint."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        return M.CheckpointOut(size=log.size(), checkpoint=log.latest_checkpoint())

    @r.post("/audit/checkpoint", response_model=M.CheckpointOut)
    def sign_checkpoint(request: Request) -> M.CheckpointOut:
        """Sign a checkpoint at the current size and push it to the witnesses."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        note = log.checkpoint()
        return M.CheckpointOut(size=log.size(), checkpoint=note)

    @r.get("/audit/consistency", response_model=M.ConsistencyOut)
    def consistency(request: Request, old: Annotated[int, Query(ge=1, le=1 << 62)],
                    new: Annotated[int, Query(ge=1, le=1 << 62)]) -> M.ConsistencyOut:
        """Hashes proving the tree of size ``new`` extends the tree of size ``old``."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if not old <= new <= log.size():
            raise InvalidInput(f"need 1 <= old <= new <= {log.size()}", obj="consistency")
        hashes = log.consistency(old, new)
        return M.ConsistencyOut(old=old, new=new,
                                hashes=[base64.b64encode(h).decode() for h in hashes])

    @r.post("/audit/verify", response_model=M.AuditVerifyOut)
    def verify(request: Request, body: M.AuditVerifyIn) -> dict[str, Any]:
        """Replay the whole log against the caller's checkpoints, this host's high-water file
        and the witnesses (IntegrityError naming the first divergence)."""
        from strongroom.runtime.listings import verify_log

        require_role(request, keys, *_AUDITORS)
        return verify_log(ctx.audit(), ctx.settings.resolved_home, body.checkpoints)

    @r.get("/monitor/egress", response_model=M.EgressOut, tags=["monitor"])
    def egress(request: Request,
               compression: Annotated[float, Query(ge=0.01, le=1e6)] = 1.0) -> dict[str, Any]:
        """Egress budgets in force and each artifact's time to exfiltrate (security officers,
        auditors)."""
        from strongroom.runtime.listings import egress_report

        require_role(request, keys, *_AUDITORS)
        return egress_report(ctx.store, compression=compression)

    @r.get("/alerts", response_model=list[M.AlertOut], tags=["alerts"])
    def alerts(request: Request, unacked: bool = False,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[M.AlertOut]:
        """Alerts, newest first (security officers, auditors)."""
        require_role(request, keys, *_AUDITORS)
        return [_alert_out(a) for a in ctx.alerts().recent(unacked=unacked, limit=limit)]

    @r.post("/alerts/{alert_id}/ack", response_model=M.AlertOut, tags=["alerts"])
    def ack(request: Request, alert_id: Annotated[int, Path(ge=1, le=1 << 62)],
            body: M.AlertAck) -> M.AlertOut:
        """Acknowledge an alert (audited). A red-team identity may acknowledge only alerts
        about itself (raised by its own attacks), recorded under its name."""
        caller = require_role(request, keys, "security-officers", _REDTEAM)
        alerts = ctx.alerts()
        person = keys.enrollment(caller.key_id)
        if not caller.officer and (person is None or "security-officers" not in person.roles):
            alert = alerts.get(alert_id)
            if caller.name not in (alert.subject, alert.obj):
                raise AccessDenied(f"{caller.name} may acknowledge only alerts about itself",
                                   obj=f"alert {alert_id}",
                                   remedy="a security officer acknowledges it")
        return _alert_out(alerts.ack(alert_id, by=caller.name, note=body.note))

    return r

"""Directory routes: people, compartments and officer statements (``/v1/people``, ...), tag ``directory``.

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. Principals are read from the directory verified against the officers'
signatures; a statement is stored only when the calling officer signed it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from strongroom.access.restrictions import journal_details
from strongroom.errors import AccessDenied, IntegrityError
from strongroom.server import models as M
from strongroom.server.auth import PrincipalKeys, caller_of
from strongroom.server.context import ServerContext

__all__ = ["build_router"]


def _principal_out(kid: str, e: Any, revoked: bool) -> M.PrincipalOut:
    from strongroom.access.directory import level_name

    return M.PrincipalOut(key_id=kid, name=e.name, kind=e.kind, roles=sorted(e.roles),
                          clearance=level_name(e.clearance), compartments=sorted(e.compartments),
                          vetting=e.vetting.status, vetting_expires=e.vetting.expires,
                          employment=e.employment, serial=e.serial, revoked=revoked)


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``directory`` routes over ``ctx``; a revocation makes ``keys`` forget principals."""
    r = APIRouter(prefix="/v1", tags=["directory"])

    @r.get("/people", response_model=list[M.PrincipalOut])
    def people(request: Request) -> list[M.PrincipalOut]:
        """Every enrolled principal, verified against the officers' signatures."""
        caller_of(request)
        view = ctx.directory()
        return [_principal_out(kid, e, kid in view.revoked_keys)
                for kid, e in sorted(view.principals.items(), key=lambda kv: kv[1].name)]

    @r.get("/compartments", response_model=dict[str, list[str]])
    def compartments(request: Request) -> dict[str, list[str]]:
        """Each compartment and the (unrevoked) principals in it."""
        caller_of(request)
        view = ctx.directory()
        out: dict[str, list[str]] = {}
        for kid, e in view.principals.items():
            if kid in view.revoked_keys:
                continue
            for c in e.compartments:
                out.setdefault(c, []).append(e.name)
        for lab in view.labels.values():
            for c in lab.compartments:
                out.setdefault(c, [])
        return {k: sorted(v) for k, v in sorted(out.items())}

    @r.post("/statements", response_model=M.StoredOut, status_code=201)
    def publish_statement(request: Request, body: M.StatementIn) -> M.StoredOut:
        """Publish (or cosign) an enrollment, label or revocation signed by the calling officer."""
        from strongroom.access import statements
        from strongroom.access.directory import publish

        caller = caller_of(request)
        if not caller.officer:
            raise AccessDenied(f"{caller.name} is not a security officer pinned in the keyring",
                               obj=f"{body.kind} statement",
                               remedy="officer statements are signed by officers' identities")
        try:
            statements.VerifyCache().verify(body.envelope, body.kind,
                                            {caller.key_id: caller.public_key},
                                            obj=f"{body.kind} statement")
        except IntegrityError as exc:
            raise AccessDenied(f"the statement is not signed by the caller: {exc.message}",
                               obj=f"{body.kind} statement") from None
        digest = publish(ctx.store, body.kind, body.envelope)
        ctx.audit().append(actor=caller.name, action=f"people.{body.kind}",
                           obj=digest[:16], decision="allow", reason="published over the API",
                           details=journal_details(body.kind, body.envelope, subject=str(
                               statements.unverified_payload(body.envelope).get("key_id", "")))
                           if body.kind == "revocation" else None)
        if body.kind == "revocation":
            keys.forget()
        return M.StoredOut(digest=digest, kind=body.kind)

    return r

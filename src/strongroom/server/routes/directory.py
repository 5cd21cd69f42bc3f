"""Directory routes: people, compartments and officer statements (``/v1/people``, ...), tag ``directory``.

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. Principals are read from the directory verified against the officers'
signatures and answered as ``people ls --json`` / ``compartments ls --json`` rows
(:mod:`strongroom.runtime.listings`); a statement is stored only when the calling
officer signed it, and any signed caller may look stored statements up (to cosign
one, or to sign one that names it: none holds a secret).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from strongroom.access.restrictions import journal_details
from strongroom.access.statements import Stored
from strongroom.errors import AccessDenied, AlreadyExists, IntegrityError, InvalidInput, NotFound
from strongroom.server import models as M
from strongroom.server.auth import PrincipalKeys, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.keyserver_push import push_revocation

__all__ = ["build_router"]


#: Audit action of an officer statement published over the API, as the CLI records it.
_ACTIONS = {"enrollment": "people.enroll", "revocation": "people.revoke",
            "label": "compartments.label"}
#: Kinds a statement lookup may name (every stored statement is signed; none holds a secret).
_KINDS = ("enrollment", "revocation", "label", "policy", "codeowners", "request", "approval",
          "denial", "grant", "grant-revocation", "break-glass", "review")
_PREFIX = r"^[0-9a-f]{8,64}$"


def _statement_out(row: Stored) -> M.StatementOut:
    from strongroom.access import statements

    return M.StatementOut(digest=row.digest, kind=row.kind, envelope=row.envelope,
                          signers=statements.signer_ids(row.envelope))


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``directory`` routes over ``ctx``; a revocation makes ``keys`` forget principals."""
    r = APIRouter(prefix="/v1", tags=["directory"])

    @r.get("/people", response_model=list[M.PrincipalOut])
    def people(request: Request) -> list[dict[str, Any]]:
        """Every enrolled, unrevoked principal, verified against the officers' signatures."""
        from strongroom.runtime.listings import people_rows

        caller_of(request)
        return people_rows(ctx.directory(), now=time.time())

    @r.get("/compartments", response_model=list[M.CompartmentOut])
    def compartments(request: Request) -> list[dict[str, Any]]:
        """Each compartment: the principals read in, the resources (manifest or label) in it."""
        from strongroom.runtime.listings import compartment_rows

        caller = caller_of(request)
        return compartment_rows(ctx.directory(), ctx.vault(actor=caller.name))

    @r.get("/statements", response_model=list[M.StatementOut])
    def list_statements(request: Request,
                        kind: Annotated[str, Query(pattern=f"^({'|'.join(_KINDS)})$")],
                        subject: Annotated[str, Query(min_length=1, max_length=256)]
                        ) -> list[M.StatementOut]:
        """Stored statements of ``kind`` about ``subject`` (a key id, a resource name, ...)."""
        from strongroom.access import statements

        caller_of(request)
        return [_statement_out(Stored(kind, statements.payload_digest(env), env))
                for env in statements.envelopes(ctx.store, kind, subject=subject)]

    @r.get("/statements/{prefix}", response_model=M.StatementOut)
    def get_statement(request: Request, prefix: Annotated[str, Path(pattern=_PREFIX)],
                      kind: Annotated[list[str] | None, Query(max_length=len(_KINDS))] = None
                      ) -> M.StatementOut:
        """The one stored statement whose id starts with ``prefix`` (8+ hex), of ``kind``."""
        from strongroom.access.statements import find_by_prefix

        caller_of(request)
        kinds = tuple(kind or _KINDS)
        unknown = sorted(set(kinds) - set(_KINDS))
        if unknown:
            raise InvalidInput(f"unknown statement kind {unknown[0]!r}", obj="kind",
                               remedy=f"name one of {', '.join(_KINDS)}")
        rows = find_by_prefix(ctx.store, kinds, prefix, limit=2)
        if not rows:
            raise NotFound(f"no statement {prefix}" + (f" of kind {', '.join(kinds)}" if kind
                                                         else ""),
                           obj=prefix, remedy="give the id the signer printed")
        if len(rows) > 1:
            raise InvalidInput(f"several statements match {prefix!r}", obj=prefix,
                               remedy="give more characters of the id")
        return _statement_out(rows[0])

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
            pins = caller.pins  # a hybrid officer's statement carries both signatures
            statements.VerifyCache().verify(body.envelope, body.kind, pins.ed25519,
                                            pq=pins.mldsa, obj=f"{body.kind} statement")
        except IntegrityError as exc:
            raise AccessDenied(f"the statement is not signed by the caller: {exc.message}",
                               obj=f"{body.kind} statement") from None
        cosign = statements.by_digest(ctx.store, statements.payload_digest(body.envelope))
        if body.kind == "revocation" and not cosign:
            kid = str(statements.unverified_payload(body.envelope).get("key_id", ""))
            if kid and kid in ctx.directory(key_ids=[kid]).revoked_keys:
                raise AlreadyExists(f"key {kid} is already revoked", obj=kid,
                                    remedy="nothing to do: `strongroom people ls` lists whose "
                                    "keys count")
        digest = publish(ctx.store, body.kind, body.envelope)
        ctx.audit().append(actor=caller.name,
                           action="people.cosign" if cosign else _ACTIONS[body.kind],
                           obj=digest[:16], decision="allow", reason="published over the API",
                           details=journal_details(body.kind, body.envelope, subject=str(
                               statements.unverified_payload(body.envelope).get("key_id", "")))
                           if body.kind == "revocation" else None)
        if body.kind == "revocation":
            keys.forget()
        stored = statements.by_digest(ctx.store, digest) or body.envelope
        # every signature gathered so far: each key server merges them and counts them itself
        pushed = (push_revocation(ctx, caller.name, "revocation", stored)
                  if body.kind == "revocation" else None)
        return M.StoredOut(digest=digest, kind=body.kind,
                           signatures=statements.signer_count(stored), key_servers=pushed)

    return r

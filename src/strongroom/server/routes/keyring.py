"""Key administration over the API: ``POST /v1/sys/keys/rotate`` and ``.../rewrap``, tag ``sys``.

``build_router(ctx)`` returns the router :func:`strongroom.server.app.create_app`
includes. Each is a *key order*: a ``key-order`` statement (``order``, ``officer``,
``issued_at``, ``nonce``) signed by the calling security officer's own identity —
the same key that signed the HTTP request — so the audit entry carries a
signature anyone can re-check later, not only the server's word. The server
refuses an order not signed by the caller, not from a pinned officer, for the
other operation, or older than :data:`~strongroom.access.key_orders.MAX_AGE_S`; one order is used once (its
digest is stored, a second use is 409). Answers as ``keys rotate|rewrap --json``.

One officer suffices, as for ``seal``: rotation and rewrapping never release a
key and never weaken one (the KEK only gains a version; payloads are untouched).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from strongroom.access import statements
from strongroom.access.key_orders import check_key_order
from strongroom.access.restrictions import journal_details
from strongroom.errors import AccessDenied, AlreadyExists
from strongroom.server.auth import caller_of
from strongroom.server.context import ServerContext

__all__ = ["build_router"]


class KeyOrderIn(BaseModel):
    """A ``key-order`` statement (DSSE JSON) signed by the calling officer."""

    envelope: str = Field(max_length=16 * 1024)


def build_router(ctx: ServerContext) -> APIRouter:
    """The key-order routes over ``ctx``."""
    r = APIRouter(prefix="/v1", tags=["sys"])

    def _checked(request: Request, order: str, envelope: str) -> str:
        caller = caller_of(request)
        if not caller.officer:
            raise AccessDenied(f"{caller.name} is not a security officer", obj=f"keys {order}",
                               remedy="a pinned security officer orders key rotation")
        mine = ctx.officer_pins().only(caller.key_id)
        st = mine.verify(envelope, statements.payload_type("key-order"),
                         obj=f"keys {order} order")
        check_key_order(st, order, now=time.time())
        digest = statements.payload_digest(envelope)
        if statements.find_by_prefix(ctx.store, "key-order", digest, limit=1):
            raise AlreadyExists("this key order was used already", obj=digest[:16],
                                remedy="sign a new order")
        statements.put(ctx.store, "key-order", envelope, subject=digest)
        ctx.audit().append(actor=caller.name, action=f"keys.{order}-order", obj="keyring",
                           decision="allow", reason="signed key order",
                           details={"server": ctx.settings.host_id, "order": digest,
                                    **journal_details("key-order", envelope, subject=digest)})
        return digest

    @r.post("/sys/keys/rotate")
    def rotate(request: Request, body: KeyOrderIn) -> dict[str, Any]:
        """A new KEK version (``keys rotate --json``): ``{"kek_version", "order"}``."""
        digest = _checked(request, "rotate", body.envelope)
        return {"kek_version": ctx.keys.rotate(), "order": digest}

    @r.post("/sys/keys/rewrap")
    def rewrap(request: Request, body: KeyOrderIn) -> dict[str, Any]:
        """Every file key wrapped under the newest KEK (``keys rewrap --json``)."""
        digest = _checked(request, "rewrap", body.envelope)
        return {"rewrapped": ctx.keys.rewrap(), "order": digest}

    return r

"""The web console: security-key sign-in, approvals signed with the key, audit, alerts, people.

``build_router(ctx)`` returns a FastAPI router the server includes in its app::

    app.include_router(build_router(ctx))      # /console/..., /static/..., /webauthn/...

Pages are Jinja2 templates (every value autoescaped) with one small script of
our own (``static/console.js``, no build step, no inline script) under a
strict Content-Security-Policy. Sessions are opaque cookies (Secure,
HttpOnly, SameSite=Strict, ``__Host-``) with their state in the database;
every POST needs the session's CSRF token and a same-origin request.

Approving signs the approval statement with the person's security key: the
WebAuthn challenge is the statement's digest and the stored envelope is
verified by :func:`strongroom.access.fido.verify_envelope`, the same check the
release gate makes. The console's own database rows grant nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from strongroom.server.console.core import Console, ConsoleConfig, SecureRoute

if TYPE_CHECKING:
    from strongroom.server.context import ServerContext

__all__ = ["ConsoleConfig", "build_router"]


def build_router(ctx: ServerContext, config: ConsoleConfig | None = None) -> APIRouter:
    """The console's routes over ``ctx`` (origin and RP id from ``config`` or the environment)."""
    from strongroom.server.console import (
        alert_pages,
        audit_pages,
        break_glass,
        ceremonies,
        overview,
        pages,
    )

    console = Console(ctx, config or ConsoleConfig.from_env())
    route_class = type("ConsoleRoute", (SecureRoute,), {"console": console})
    router = APIRouter(route_class=route_class, tags=["console"])
    pages.add_routes(router, console)
    audit_pages.add_routes(router, console)
    alert_pages.add_routes(router, console)
    overview.add_routes(router, console)
    break_glass.add_routes(router, console)
    ceremonies.add_routes(router, console)
    ceremonies.add_seal_routes(router, console)
    pages.add_not_found(router)
    return router

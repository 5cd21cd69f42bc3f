"""The HTTP API: ``create_app(ctx)`` builds the FastAPI app ``strongroom serve`` runs.

Every route under ``/v1/`` except seal status and share submission needs an
RFC 9421 signature (:mod:`strongroom.server.signatures`, checked by
:class:`~strongroom.server.auth.SignedRequestMiddleware`). Statements that
carry authority (requests, approvals, grants, enrollments) are DSSE envelopes
signed by the caller's own key, verified here exactly as the CLI verifies them
and checked again by the release gate; the server adds no authority of its own.
Errors are ``{"error", "object", "remedy", "type"}`` with the status
:func:`strongroom.server.errors.status_for` picks. Key releases are audited by
the gate; their responses (file keys) are never logged.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from strongroom.errors import StrongroomError
from strongroom.runtime.logs import REQUEST_ID, log_format
from strongroom.runtime.metrics import count_api_refusal
from strongroom.server import models as M
from strongroom.server.auth import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_UPLOAD,
    PrincipalKeys,
    RefusalLog,
    SignedRequestMiddleware,
)
from strongroom.server.codecheck import install as install_code_check
from strongroom.server.context import ServerContext
from strongroom.server.errors import error_body, status_for
from strongroom.server.metrics import MetricsSettings
from strongroom.server.metrics import build_router as metrics_router
from strongroom.server.routes import access, audit, directory, keyring, posture, system, weights
from strongroom.server.routes import keys as key_release
from strongroom.server.signatures import NonceCache, RequestVerifier, default_nonce_cache

__all__ = ["create_app"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": M.ErrorOut, "description": text} for code, text in (
        (400, "invalid input"), (401, "missing, invalid, stale or replayed signature"),
        (403, "access denied"), (404, "not found"), (409, "already exists"),
        (413, "body too large"), (422, "integrity or validation failure"),
        (429, "egress budget exceeded"), (503, "sealed or storage unavailable"))}


def create_app(ctx: ServerContext, *, nonces: NonceCache | None = None,
               max_body: int = DEFAULT_MAX_BODY, max_upload: int = DEFAULT_MAX_UPLOAD,
               principal_ttl_s: float = 1.0) -> FastAPI:
    """The API (and the console, when its package is present) over ``ctx``."""
    app = _Api(title="strongroom", version="1", description=__doc__ or "",
               responses=_ERRORS)
    keys = PrincipalKeys(ctx, ttl_s=principal_ttl_s)
    verifier = RequestVerifier(
        keys, nonces if nonces is not None else default_nonce_cache(ctx.store))
    app.state.ctx = ctx
    app.state.principal_keys = keys

    @app.exception_handler(StrongroomError)
    async def strongroom_error(request: Request, exc: StrongroomError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_for(exc))

    keys_router, direct = key_release.build_router(ctx)
    app.include_router(keys_router)  # first: the hot path is matched before the others
    app.include_router(system.build_router(ctx, keys))
    app.include_router(system.build_probes(ctx))
    app.include_router(metrics_router(ctx, keys))
    app.include_router(directory.build_router(ctx, keys))
    app.include_router(weights.build_router(ctx, keys))
    app.include_router(access.build_router(ctx, keys))
    app.include_router(audit.build_router(ctx, keys))
    app.include_router(posture.build_router(ctx, keys))
    app.include_router(keyring.build_router(ctx))
    build_router = _console_builder()
    if build_router is not None:
        app.include_router(build_router(ctx))
    def append_refusal(**entry: Any) -> object:
        return ctx.audit().append(**entry)  # Sealed while sealed: not recorded

    refusals = RefusalLog(append_refusal)

    def refused(scope: Any, exc: StrongroomError) -> None:
        count_api_refusal(exc)
        refusals(scope, exc)

    token = MetricsSettings().token
    app.hot_paths = frozenset(direct)
    app.add_middleware(SignedRequestMiddleware, verifier=verifier, max_body=max_body,
                       max_upload=max_upload, on_refused=refused, direct=direct,
                       metrics_token=token.get_secret_value().encode() if token else None)
    install_code_check(app, ctx)  # outside the signatures: a changed server answers no one
    if log_format() == "json":
        app.add_middleware(RequestIds)  # outermost: every line a request causes carries its id
    return app


class _Api(FastAPI):
    """FastAPI whose hot paths (key release) enter the stack at strongroom's own middleware.

    A request for one of :attr:`hot_paths` skips FastAPI's and Starlette's outer
    layers (OpenTelemetry hooks, which strongroom does not configure, FastAPI's body
    limit, Starlette's 500 handler, which uvicorn repeats) and starts at the first
    middleware ``create_app`` added (request ids, the code check, then the
    signatures), exactly as every other request passes them. Only the layers above
    those are skipped (~10-15 us of CPU a release); the path check, the signature and
    the body limit run as for any route, and a direct route that declines hands the
    request to FastAPI's routing below the signatures, as before.
    """

    hot_paths: frozenset[tuple[str, str]] = frozenset()
    _front: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.hot_paths:
            front = self._front if self._front is not None else self._find_front()
            if front is not None:
                scope["app"] = self  # as Starlette.__call__ (the fallback route reads it)
                await front(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _find_front(self) -> Any:
        """The outermost middleware ``create_app`` added, in the built stack (None: not found)."""
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        ours = tuple(m.cls for m in self.user_middleware if isinstance(m.cls, type))
        layer: Any = self.middleware_stack
        for _ in range(16):
            if layer is None or isinstance(layer, ours):
                break
            layer = getattr(layer, "app", None)
        if ours and isinstance(layer, ours):
            self._front = layer
            return layer
        return None


#: A client's X-Request-Id is kept when it looks like an id (else one is made up).
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestIds:
    """Gives each request an id (:data:`~strongroom.runtime.logs.REQUEST_ID`, ``X-Request-Id``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"")
        rid = given.decode("ascii") if _REQUEST_ID.match(given) else secrets.token_hex(8)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode("ascii"))]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _console_builder() -> Any:
    """The web console's router factory, when the console package is installed."""
    import importlib

    try:
        module = importlib.import_module("strongroom.server.console")
    except ImportError:
        return None
    return getattr(module, "build_router", None)

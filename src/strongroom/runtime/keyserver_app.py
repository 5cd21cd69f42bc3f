"""The key server's HTTP face: status, unseal, officer-signed administration, partial decryptions.

``strongroom keyserver serve`` runs :func:`create_app` under uvicorn, one
process per key server, each on its own data directory and database. Routes
(JSON bodies; errors are ``{"error": {type, message, obj, remedy}}`` with a
4xx/503 status, never a traceback, never key material):

* ``GET  /v1/keyserver/status`` — sealed?, index, epoch, commitments, public share, transport recipient;
* ``POST /v1/keyserver/unseal`` — ``{"submission": <base64>}``: one custodian's share submission;
* ``POST /v1/keyserver/admin`` — ``{"envelope": <DSSE>}`` signed by one of this server's officers;
* ``POST /v1/keyserver/statements`` — ``{"statements": [{"kind", "envelope"}, ...], "skip_refused"?}``:
  signed access statements for the Grant rule (enrollments, labels, policies, requests, approvals,
  Grants and their revocations); no sender authentication, but each must be signed by a pinned
  officer or a person they enrolled before anything is stored (:mod:`.keyserver_intake`);
  Each client address may send :data:`STATEMENT_RATE` such requests a second (bursts of
  :data:`STATEMENT_BURST`) before anything is read: more is 429 with ``Retry-After``, so junk
  cannot keep a key server verifying signatures; ``keyserver sync`` waits and resends;
* ``GET  /v1/keyserver/statements`` — the digests held (officer statements with their signers),
  for ``strongroom keyserver sync`` to send only what is missing;
* ``POST /v1/keyserver/partial`` — a :class:`~strongroom.runtime.keyserver.PartialRequest`: the
  partial decryption with its proof, or the gate's refusal.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from strongroom.errors import (
    AccessDenied,
    AuditUnavailable,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NotFound,
    Sealed,
    StrongroomError,
    Throttled,
)
from strongroom.runtime.keyserver import KeyServer, PartialRequest

__all__ = ["STATEMENT_BURST", "STATEMENT_RATE", "StatementLimiter", "create_app", "status_of"]

_MAX_BODY = 1 << 20
_T = TypeVar("_T")
#: ``POST /v1/keyserver/statements`` requests a second per client address, and the burst
#: (``STRONGROOM_KEYSERVER_STATEMENTS_RATE`` / ``_BURST``). ``keyserver sync`` sends at most a
#: few dozen requests for a whole directory, and waits out a 429.
STATEMENT_RATE = float(os.environ.get("STRONGROOM_KEYSERVER_STATEMENTS_RATE", "5"))
STATEMENT_BURST = float(os.environ.get("STRONGROOM_KEYSERVER_STATEMENTS_BURST", "40"))
#: Client addresses remembered at once (the idlest forgotten first).
_LIMITER_HOSTS = 4096


class StatementLimiter:
    """A token bucket per client address for the unauthenticated statements route."""

    def __init__(self, rate: float = STATEMENT_RATE, burst: float = STATEMENT_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = max(rate, 0.001), max(burst, 1.0), clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, host: str) -> None:
        """Spend one request of ``host``'s bucket; Throttled (429, Retry-After) when empty."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(host, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[host] = (tokens, now)
                raise Throttled(f"too many statement requests from {host}", obj="statements",
                                retry_after=(1.0 - tokens) / self.rate,
                                remedy=f"send at most {self.rate:g} a second (bursts of "
                                f"{self.burst:g}); `keyserver sync` waits and resends")
            self._buckets[host] = (tokens - 1.0, now)  # re-inserted: the newest is last
            while len(self._buckets) > _LIMITER_HOSTS:
                del self._buckets[next(iter(self._buckets))]


def status_of(exc: StrongroomError) -> int:
    """The HTTP status a refusal travels with."""
    for cls, code in ((Throttled, 429), (AccessDenied, 403), (NotFound, 404), (Sealed, 503), (AuditUnavailable, 503),
                      (IntegrityError, 409), (ConfigError, 409), (InvalidInput, 400)):
        if isinstance(exc, cls):
            return code
    return 400


def _error(exc: StrongroomError) -> JSONResponse:
    headers = ({"Retry-After": str(max(1, round(exc.retry_after)))}
               if isinstance(exc, Throttled) else None)
    return JSONResponse({"error": {"type": type(exc).__name__, "message": exc.message, "obj": exc.obj,
                                   "remedy": exc.remedy}}, status_code=status_of(exc), headers=headers)


async def _body(request: Request) -> Any:
    """The JSON body, read no further than :data:`_MAX_BODY` bytes (a declared larger one is refused unread)."""
    too_large = InvalidInput("request body too large", obj=request.url.path,
                             remedy=f"send at most {_MAX_BODY} bytes (`keyserver sync` batches by size)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_BODY:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise too_large
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInput("the body is not JSON", obj=request.url.path) from None


def _field(body: Any, name: str, kind: type[_T], obj: str, shape: str) -> _T:
    """``body[name]`` when the body is an object holding one of ``kind``; InvalidInput naming the shape."""
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, kind):
        raise InvalidInput(f"send {{\"{name}\": {shape}}}", obj=obj)
    return value


def create_app(server: KeyServer, *, limiter: StatementLimiter | None = None) -> FastAPI:
    """The key server's ASGI app over one :class:`KeyServer`."""
    limits = limiter or StatementLimiter()
    app = FastAPI(title="strongroom key server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StrongroomError)
    async def _refused(_: Request, exc: StrongroomError) -> JSONResponse:
        return _error(exc)

    @app.get("/v1/keyserver/status")
    def status() -> dict[str, Any]:
        return server.status()

    @app.post("/v1/keyserver/unseal")
    async def unseal(request: Request) -> dict[str, Any]:
        body = await _body(request)
        try:
            submission = base64.b64decode(body["submission"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise InvalidInput("send {\"submission\": <base64>}", obj="unseal") from None
        await run_in_threadpool(server.svc.submit_share, submission)
        return await run_in_threadpool(server.status)

    @app.post("/v1/keyserver/admin")
    async def admin(request: Request) -> dict[str, Any]:
        envelope = _field(await _body(request), "envelope", str, "keyserver-admin", "<DSSE statement>")
        result: dict[str, Any] = await run_in_threadpool(server.admin, envelope)
        return result

    @app.post("/v1/keyserver/statements")
    async def receive(request: Request) -> dict[str, Any]:
        limits.take(request.client.host if request.client else "unknown")  # before any reading
        body = await _body(request)
        items = _field(body, "statements", list, "statements", "[{\"kind\": ..., \"envelope\": ...}]")
        skip = body.get("skip_refused", False) is True
        result: dict[str, Any] = await run_in_threadpool(lambda: server.receive(items, skip_refused=skip))
        return result

    @app.get("/v1/keyserver/statements")
    async def held() -> dict[str, Any]:
        return {"statements": await run_in_threadpool(server.held)}

    @app.post("/v1/keyserver/partial")
    async def partial(request: Request) -> Response:
        parsed = PartialRequest.from_json(await _body(request))
        result = await run_in_threadpool(server.partial, parsed)
        # Plain JSON of hex strings and an int: encoded here, not walked by FastAPI's encoder.
        return Response(json.dumps(result, separators=(",", ":")).encode(), media_type="application/json")

    return app

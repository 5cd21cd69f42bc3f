"""Who may call the API: key lookup for signatures, the signing middleware, role checks.

:class:`SignedRequestMiddleware` runs before any route under ``/v1/``: it
rejects traversal in the path (400), bodies over the limit (413), anything
not signed by an enrolled, unrevoked principal or a pinned officer (401) and
buffered bodies that are not UTF-8 JSON (400, :mod:`strongroom.server.bodies`), and
hands the verified :class:`~strongroom.server.signatures.Caller` to the route
in ``request.state.caller``. It fails closed: a new route is signed-only unless
it is listed in :data:`PUBLIC_PATHS`. Outside ``/v1/`` it guards :data:`METRICS_PATH`
too: a signed request, or a scraper's bearer token (``STRONGROOM_METRICS_TOKEN``,
:mod:`strongroom.server.metrics`), which sets ``request.state.scraper``.

A route may also be given to the middleware as a :data:`DirectRoute` (key
release: the hot path): once the request is verified the middleware calls it
directly instead of passing the request through FastAPI's routing, dependency
solving and exception layers (~150 us of CPU a request). The FastAPI route
stays registered for the OpenAPI schema and as the fallback: a direct route
returns None for anything it does not answer itself (a body that fails
validation, so that FastAPI's own 422 is what the client sees).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from strongroom.access.directory import Enrollment
from strongroom.errors import AccessDenied, StrongroomError
from strongroom.server.bodies import decode_json
from strongroom.server.context import ServerContext
from strongroom.server.errors import (
    BodyTooLarge,
    PathRejected,
    Unauthenticated,
    error_body,
    status_for,
)
from strongroom.server.signatures import Caller, RequestVerifier, check_body_digest, replayed

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_UPLOAD",
    "METRICS_PATH",
    "PUBLIC_PATHS",
    "DirectRoute",
    "PrincipalKeys",
    "SignedRequestMiddleware",
    "SignedUpload",
    "caller_of",
    "require_role",
    "upload_of",
]

#: Largest request body a JSON route accepts, bytes.
DEFAULT_MAX_BODY = 1 << 20
#: API paths that need no signature: seal status and share submission (the share is the credential).
PUBLIC_PATHS = frozenset({"/v1/sys/seal-status", "/v1/sys/unseal", "/v1/sys/version",
                          "/v1/sys/health", "/livez", "/readyz"})
#: The Prometheus scrape path: signed (auditors, officers) or the scraper's bearer token.
METRICS_PATH = "/metrics"
#: Routes whose body is streamed to the route (uploads), not buffered here.
STREAMED = re.compile(r"^/v1/weights/[^/]+/import$")
#: Largest streamed upload, bytes (``--max-upload``).
DEFAULT_MAX_UPLOAD = 256 << 30

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A route the middleware serves itself: (scope, verified caller, the body's JSON value,
#: None when empty) -> (status, JSON body), or None to let the request go on to the
#: FastAPI route.
DirectRoute = Callable[[Scope, Caller, object], Awaitable[tuple[int, bytes] | None]]


class PrincipalKeys:
    """Key id -> caller, from the officer-verified directory (cached ``ttl_s`` seconds).

    An entry is served until ``ttl_s`` after the lookup that made it began, never
    longer. A hit in the last half of that time asks a background thread to look the
    caller up again (one renewal a key at a time), so a busy caller's entry is renewed
    before it expires: its requests keep verifying on the event loop instead of all
    hopping to pool threads to wait for the lookup at each expiry (about 3% of a
    worker's Python time under ``bench/server.py``). A renewal that fails (revoked, unenrolled, no store) drops the entry: the
    next request looks the caller up itself and gets the refusal. :meth:`forget` wins
    over a renewal in flight as over any lookup.
    """

    #: Share of ``ttl_s`` after which a hit renews its entry in the background.
    RENEW_AFTER = 0.5
    #: Seconds the renewal thread waits for work before it ends.
    RENEWER_IDLE_S = 5.0

    def __init__(self, ctx: ServerContext, *, ttl_s: float = 1.0) -> None:
        self.ctx = ctx
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()
        #: One lock per key id being looked up: concurrent misses wait for one lookup.
        self._flights: dict[str, threading.Lock] = {}
        #: Bumped by :meth:`forget`: a lookup begun before it does not fill the cache.
        self._generation = 0
        #: Key ids whose renewal is queued or running, and the queue its thread reads.
        self._renewing: set[str] = set()
        self._renewals: queue.SimpleQueue[str] | None = None

    def forget(self) -> None:
        """Drop cached callers (after a revocation is published here)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def cached(self, kid: str) -> bool:
        """True when ``kid``'s caller is cached and fresh (a lookup would not touch the store)."""
        with self._lock:
            hit = self._cache.get(kid)
        return hit is not None and hit[0] > time.monotonic()

    def enrollment(self, kid: str) -> Enrollment | None:
        """The caller's current enrollment (uncached)."""
        return self.ctx.directory(key_ids=[kid], resources=[]).principal(kid)

    def __call__(self, kid: str) -> Caller:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(kid)
            flight = self._flights.get(kid)
            if flight is None and (hit is None or hit[0] <= now):
                flight = self._flights.setdefault(kid, threading.Lock())
        if hit is not None and hit[0] > now:
            if hit[0] - now < self._renew_within and kid not in self._renewing:
                self._renew(kid)
            return hit[1]
        assert flight is not None
        # Single flight: when the entry expires, the requests in flight for this key
        # (each in a thread-pool thread) would otherwise each read and verify the
        # directory; one does, the others take its answer (as fresh as their own).
        with flight:
            with self._lock:
                hit = self._cache.get(kid)
                generation = self._generation
            if hit is not None and hit[0] > now:
                return hit[1]
            started = time.monotonic()
            try:
                caller = self._lookup(kid)
            finally:
                with self._lock:  # later misses start their own flight (the dict stays small)
                    if self._flights.get(kid) is flight:
                        del self._flights[kid]
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                if generation == self._generation:  # no forget() since the lookup began
                    self._cache[kid] = (started + self.ttl_s, caller)
            return caller

    @property
    def _renew_within(self) -> float:
        return self.ttl_s * (1.0 - self.RENEW_AFTER)

    def _renew(self, kid: str) -> None:
        """Queue one background lookup of ``kid`` (none when one is queued or running)."""
        with self._lock:
            if kid in self._renewing:
                return
            self._renewing.add(kid)
            if self._renewals is None:
                self._renewals = queue.SimpleQueue()
                threading.Thread(target=self._renewer, args=(self._renewals,), daemon=True,
                                 name="strongroom-callers").start()
            self._renewals.put(kid)

    def _renewer(self, renewals: queue.SimpleQueue[str]) -> None:
        """The renewal thread: it ends after a few idle seconds (the next renewal starts one)."""
        while True:
            try:
                kid = renewals.get(timeout=self.RENEWER_IDLE_S)
            except queue.Empty:
                with self._lock:  # _renew queues under this lock: nothing is left behind
                    if renewals.empty():
                        self._renewals = None
                        return
                continue
            self._renew_now(kid)

    def _renew_now(self, kid: str) -> None:
        """Look ``kid`` up again and replace its entry (drop it when the lookup fails)."""
        with self._lock:
            generation = self._generation
        started = time.monotonic()
        try:
            caller = self._lookup(kid)
        except Exception:  # the next request looks it up in its own right and is told why
            with self._lock:
                self._cache.pop(kid, None)
                self._renewing.discard(kid)
            return
        with self._lock:
            if generation == self._generation:  # no forget() since the lookup began
                self._cache[kid] = (started + self.ttl_s, caller)
            self._renewing.discard(kid)

    def _lookup(self, kid: str) -> Caller:
        pins = self.ctx.officer_pins()
        officers = pins.ed25519
        view = self.ctx.directory(key_ids=[kid], resources=[])
        if kid in view.revoked_keys:
            raise Unauthenticated(f"key {kid} has been revoked by the security officers",
                                  obj=f"key {kid}",
                                  remedy="ask the security officers to enroll a new key")
        person = view.principal(kid)
        if kid in officers:
            name = person.name if person is not None else f"officer-{kid}"
            return Caller(kid, name, officers[kid], officer=True, mldsa=pins.mldsa.get(kid))
        if person is None:
            raise Unauthenticated(f"key {kid} is not enrolled by the security officers",
                                  obj=f"key {kid}",
                                  remedy="ask k security officers to sign your enrollment")
        return Caller(kid, person.name, person.public_key, mldsa=person.mldsa_public_key)


def _json_error(exc: StrongroomError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=status_for(exc))


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


#: Paths check_path passed (a pure function of them), so a busy route is checked once.
_CLEAN_PATHS: dict[tuple[bytes, str], None] = {}


def check_path(raw_path: bytes, path: str) -> None:
    """Refuse paths that smuggle a separator, a dot segment or NUL into a name (400)."""
    if (raw_path, path) in _CLEAN_PATHS:
        return
    _check_path(raw_path, path)
    if len(_CLEAN_PATHS) >= 4096:
        _CLEAN_PATHS.clear()
    _CLEAN_PATHS[raw_path, path] = None


def _check_path(raw_path: bytes, path: str) -> None:
    lowered = raw_path.lower()
    decoded = urllib.parse.unquote(raw_path.decode("latin-1"))
    if (b"%2f" in lowered or b"%5c" in lowered or b"%00" in lowered or "\x00" in path
            or "\\" in decoded or any(seg in ("..", ".") for seg in decoded.split("/"))):
        raise PathRejected("the path contains '..', '.', an encoded '/' or '\\', or NUL",
                           obj=decoded[:200],
                           remedy="name artifacts and documents by their plain names")


class RefusalLog:
    """Audits refused requests (``api.request`` deny), at most ``per_minute`` per client host.

    A flood of bad signatures or replays must be visible to the detectors
    without letting an unauthenticated sender fill the audit log: past the
    limit, refusals are counted and the count rides on the next entry.
    """

    def __init__(self, append: Callable[..., object], *, per_minute: int = 60,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.append = append
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int, int]] = {}

    def __call__(self, scope: Scope, exc: StrongroomError) -> None:
        client = scope.get("client") or ("?", 0)
        host = str(client[0])
        now = self.clock()
        with self._lock:
            start, logged, dropped = self._window.get(host, (now, 0, 0))
            if now - start >= 60:
                start, logged = now, 0
            if logged >= self.per_minute:
                self._window[host] = (start, logged, dropped + 1)
                return
            self._window[host] = (start, logged + 1, 0)
            if len(self._window) > 10_000:  # forget idle hosts
                self._window = {h: v for h, v in self._window.items() if now - v[0] < 60}
        claimed = _claimed_key(scope)
        with contextlib.suppress(StrongroomError):  # a sealed server has no log to write
            self.append(actor=f"unauthenticated:{claimed}" if claimed else "anonymous",
                        action="api.request", obj=f"{scope['method']} {scope['path']}"[:200],
                        decision="deny", reason=exc.message[:300],
                        details={"host": host, "error": type(exc).__name__,
                                 **({"suppressed": dropped} if dropped else {})})


def _claimed_key(scope: Scope) -> str:
    """The keyid a Signature-Input header claims (unverified; for the audit entry only)."""
    for name, value in scope.get("headers", []):
        if name == b"signature-input":
            return _claimed_in(value.decode("latin-1"))
    return ""


def _claimed_in(text: str) -> str:
    """The keyid one Signature-Input value claims (unverified), "" when none."""
    at = text.find('keyid="')
    if at >= 0:
        end = text.find('"', at + 7)
        return text[at + 7:end][:64] if end > at else ""
    return ""


class SignedRequestMiddleware:
    """Path check, body limit and RFC 9421 verification for every ``/v1/`` request."""

    def __init__(self, app: ASGIApp, verifier: RequestVerifier, *,
                 max_body: int = DEFAULT_MAX_BODY, max_upload: int = DEFAULT_MAX_UPLOAD,
                 public_paths: frozenset[str] = PUBLIC_PATHS,
                 on_refused: Callable[[Scope, StrongroomError], None] | None = None,
                 direct: dict[tuple[str, str], DirectRoute] | None = None,
                 metrics_token: bytes | None = None) -> None:
        self.app = app
        self.metrics_token = metrics_token
        self.verifier = verifier
        self.max_body = max_body
        self.max_upload = max_upload
        self.public_paths = public_paths
        self.on_refused = on_refused
        self.direct = dict(direct or {})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send,
                      exc: StrongroomError) -> None:
        if self.on_refused is not None:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(self.on_refused, scope, exc)
        await _json_error(exc)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (str(scope["path"]).startswith("/v1/")
                                           or scope["path"] == METRICS_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and STREAMED.match(scope["path"]):
            await self._streamed(scope, receive, send)
            return
        caller: Caller | None = None
        try:
            check_path(scope.get("raw_path") or scope["path"].encode(), scope["path"])
            body = await self._read_body(scope, receive)
            if scope["path"] == METRICS_PATH and self._scraper(scope):
                scope.setdefault("state", {})["scraper"] = True
            elif scope["path"] not in self.public_paths:
                caller = await self._verify(scope, body)
                scope.setdefault("state", {})["caller"] = caller
            document = decode_json(body)  # every route after this sees decodable JSON only
        except StrongroomError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        route = self.direct.get((scope["method"], scope["path"])) if caller else None
        if route is not None and caller is not None:
            try:
                answer = await route(scope, caller, document)
            except StrongroomError as exc:  # as the app's exception handler answers it
                await _json_error(exc)(scope, receive, send)
                return
            if answer is not None:
                await _send_json(send, *answer)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _scraper(self, scope: Scope) -> bool:
        """True for the scraper's bearer token; False without one (then a signature is needed)."""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
                if self.metrics_token is None or not hmac.compare_digest(token,
                                                                          self.metrics_token):
                    raise Unauthenticated("the bearer token is not the metrics token",
                                          obj=f"GET {METRICS_PATH}",
                                          remedy="give the scraper STRONGROOM_METRICS_TOKEN, or "
                                          "sign the request as an auditor or officer")
                return True
        return False

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Verify the headers now; count and hash the body as the route reads it."""
        from starlette.concurrency import run_in_threadpool

        try:
            check_path(scope.get("raw_path") or scope["path"].encode(), scope["path"])
            self._check_length(scope, self.max_upload)
            target, headers = _target_and_headers(scope)
            caller, digest = await run_in_threadpool(self.verifier.verify_headers,
                                                     scope["method"], target, headers)
        except StrongroomError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        upload = SignedUpload(digest, self.max_upload)
        state = scope.setdefault("state", {})
        state["caller"] = caller
        state["upload"] = upload

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                upload.update(message.get("body", b""))
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _check_length(scope: Scope, limit: int) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise BodyTooLarge("Content-Length is not a number",
                                       obj="request body") from None
                if declared > limit:
                    raise BodyTooLarge(f"the request body exceeds {limit} bytes",
                                       obj="request body", remedy="send a smaller body")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        self._check_length(scope, self.max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"the request body exceeds {self.max_body} bytes",
                            obj="request body", remedy="send a smaller body")

    async def _verify(self, scope: Scope, body: bytes) -> Caller:
        from starlette.concurrency import run_in_threadpool

        signed = _signed_fields(scope)  # one pass; every field line only if the package needs it
        target = _target(scope)
        claimed = _claimed_in(signed[0][0]) if signed[0] else ""
        if self.verifier.inline_ok(claimed):
            # CPU only (cached caller, local nonce cache): cheaper than a thread hop.
            return self._verify_now(scope, target, signed, body)
        spend_async = self.verifier.async_spend(claimed)
        if spend_async is not None:
            # Cached caller, database nonce cache with an awaitable spend (PostgreSQL):
            # the checks on the loop, the spend awaited there, still before the body is read.
            caller, digest, spend = self.verifier.check_signed(
                scope["method"], target, signed, lambda: _target_and_headers(scope)[1])
            if not await spend_async(*spend):
                raise replayed()
            check_body_digest(digest, hashlib.sha256(body).digest())
            return caller
        caller = await run_in_threadpool(self._verify_now, scope, target, signed, body)
        return caller

    def _verify_now(self, scope: Scope, target: str,
                    signed: tuple[list[str], list[str], list[str]], body: bytes) -> Caller:
        caller, digest = self.verifier.verify_signed(
            scope["method"], target, signed, lambda: _target_and_headers(scope)[1])
        check_body_digest(digest, hashlib.sha256(body).digest())
        return caller


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    target: str = raw.decode("latin-1")
    query = scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("latin-1")
    return target


def _signed_fields(scope: Scope) -> tuple[list[str], list[str], list[str]]:
    """The Signature-Input, Signature and Content-Digest values, in order (as the verifier's)."""
    inputs: list[str] = []
    signatures: list[str] = []
    digests: list[str] = []
    for name, value in scope["headers"]:
        lowered = name.lower()
        if lowered == b"signature-input":
            inputs.append(value.decode("latin-1"))
        elif lowered == b"signature":
            signatures.append(value.decode("latin-1"))
        elif lowered == b"content-digest":
            digests.append(value.decode("latin-1"))
    return inputs, signatures, digests


def _target_and_headers(scope: Scope) -> tuple[str, list[tuple[str, str]]]:
    return _target(scope), [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in scope["headers"]]


class SignedUpload:
    """A streamed body's running size and SHA-256, to check against the signed digest."""

    def __init__(self, digest: bytes, limit: int) -> None:
        self.digest = digest
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        """Count and hash one chunk (BodyTooLarge past the limit)."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyTooLarge(f"the upload exceeds {self.limit} bytes", obj="request body",
                               remedy="raise --max-upload or import on the server host")
        self._hash.update(chunk)

    def check(self) -> None:
        """DigestMismatch unless everything received matches the signed digest."""
        check_body_digest(self.digest, self._hash.digest())


def upload_of(request: Request) -> SignedUpload:
    """The streamed, signed upload of a streaming route."""
    upload = getattr(request.state, "upload", None)
    if not isinstance(upload, SignedUpload):
        raise Unauthenticated("the upload is not signed", obj="request body")
    return upload


def caller_of(request: Request) -> Caller:
    """The verified caller of a signed route."""
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller):
        raise Unauthenticated("the request is not signed", obj="request signature")
    return caller


def require_role(request: Request, keys: PrincipalKeys, *roles: str) -> Caller:
    """The caller if an officer or enrolled with one of ``roles`` (else AccessDenied)."""
    caller = caller_of(request)
    if caller.officer:
        return caller
    person = keys.enrollment(caller.key_id)
    if person is not None and set(person.roles) & set(roles):
        return caller
    raise AccessDenied(f"{caller.name} needs one of the roles {', '.join(roles)}",
                       obj=request.url.path,
                       remedy="ask the security officers for the role")

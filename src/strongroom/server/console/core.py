"""The console's shared pieces: configuration, security headers, CSRF, who is signed in.

Every response from a console route carries a strict Content-Security-Policy
(``default-src 'self'``, no inline script or style), ``nosniff``, no framing,
no referrer and ``no-store``. Every POST needs the session's CSRF token (a
form field or the ``X-CSRF-Token`` header) *and* a same-origin request (the
``Origin`` header, when sent, must be the console's origin; ``Sec-Fetch-Site``,
when sent, must be ``same-origin``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from strongroom.access.directory import Enrollment
from strongroom.errors import InvalidInput, StrongroomError
from strongroom.server.console.sessions import COOKIE, SESSION_TTL_S, Session, Sessions
from strongroom.server.errors import error_body, status_for
from strongroom.timefmt import parse_utc, utc_stamp
from strongroom.units import duration, human_bytes, relative, short_code

if TYPE_CHECKING:
    from strongroom.access.policy import PolicyEngine
    from strongroom.server.context import ServerContext

__all__ = ["AUDITORS", "CSP", "Console", "ConsoleConfig", "ConsoleError", "SecureRoute"]

#: Roles that may read the audit log and alerts (as the API's audit routes).
AUDITORS = ("auditors", "security-officers")

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
#: Headings of the HTML error page by HTTP status (API clients get JSON instead).
ERROR_TITLES = {400: "Bad request", 401: "Sign in first", 403: "Refused", 404: "Not found",
                409: "Already done", 413: "Too large", 422: "Bad request",
                429: "Too many attempts", 503: "Unavailable"}


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console is served: its origin (scheme, host, port) and WebAuthn RP id."""

    origin: str
    rp_id: str
    rp_name: str = "strongroom"

    @classmethod
    def from_env(cls) -> ConsoleConfig:
        """``STRONGROOM_CONSOLE_ORIGIN`` (default ``http://localhost:8420``) and
        ``STRONGROOM_CONSOLE_RP_ID`` (default: the origin's host)."""
        origin = os.environ.get("STRONGROOM_CONSOLE_ORIGIN", "http://localhost:8420")
        return cls.for_origin(origin, os.environ.get("STRONGROOM_CONSOLE_RP_ID") or None)

    @classmethod
    def for_origin(cls, origin: str, rp_id: str | None = None) -> ConsoleConfig:
        """A configuration for ``origin`` (checked: https, or http on localhost)."""
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host or parts.path not in ("", "/"):
            raise InvalidInput(f"invalid console origin {origin!r}", obj="console",
                               remedy="set STRONGROOM_CONSOLE_ORIGIN=https://host[:port]")
        if parts.scheme == "http" and host != "localhost":
            raise InvalidInput("the console needs https except on localhost", obj=origin,
                               remedy="serve the console behind TLS")
        rp = rp_id or host
        if host != rp and not host.endswith("." + rp):
            raise InvalidInput(f"RP id {rp!r} does not cover the origin's host {host!r}",
                               obj="console")
        return cls(origin.rstrip("/"), rp)


class ConsoleError(StrongroomError):
    """A console refusal with its own HTTP status (pages render it, JSON endpoints return it).

    Part of the one hierarchy; :class:`SecureRoute` answers it before any other
    :class:`~strongroom.errors.StrongroomError`, with ``status`` and ``{"error": message}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SecureRoute(APIRoute):
    """A route whose every response carries the security headers; errors become 4xx."""

    console: Console | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            try:
                response = await handler(request)
            except (StrongroomError, RequestValidationError) as exc:
                body: dict[str, Any]
                if isinstance(exc, ConsoleError):
                    status, message = exc.status, exc.message
                    body = {"error": message}
                elif isinstance(exc, StrongroomError):  # the API's status table and body
                    status, message, body = status_for(exc), str(exc), error_body(exc)
                else:
                    status, message = 422, "malformed request"
                    body = {"error": message}
                console = self.console
                wants_json = request.url.path.startswith("/webauthn/") or \
                    "application/json" in request.headers.get("accept", "")
                if status == 401 and not wants_json and request.method == "GET":
                    response = RedirectResponse("/console/sign-in", status_code=303)
                elif wants_json or console is None:
                    response = JSONResponse(body, status_code=status)
                else:
                    response = console.page(request, "error.html", None, status=status,
                                            message=message, status_code=status,
                                            title=ERROR_TITLES.get(status, "Refused"))
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
            return response

        return secured


class SignInThrottle:
    """Failed sign-ins: each one audited, and a client host over the limit is refused for a while.

    A security key cannot be guessed, but a flood of failed sign-ins is an
    attack (a stolen credential id, a cloned key, a phishing relay) the
    detectors must see. Past ``per_minute`` failures in a minute a host gets
    429 until the minute is over. Failures are audited one by one up to the
    limit; refusals while throttled are audited at the 1st, 10th, 100th ...
    of the minute, each entry carrying how many it stands for
    (``suppressed``), so a flood is counted in full without filling the log.
    """

    def __init__(self, ctx: ServerContext, *, per_minute: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        # host -> (minute start, failures, refused while throttled, throttled already logged)
        self._hosts: dict[str, tuple[float, int, int, int]] = {}

    def _current(self, host: str, now: float) -> tuple[float, int, int, int]:
        state = self._hosts.get(host, (now, 0, 0, 0))
        return (now, 0, 0, 0) if now - state[0] >= 60 else state

    def check(self, host: str) -> None:
        """429 while ``host`` is over its failures for this minute (counted, sampled in the log)."""
        now = self.clock()
        with self._lock:
            start, failures, throttled, logged = self._current(host, now)
            if failures < self.per_minute:
                return
            throttled += 1
            log_it = _power_of_ten(throttled)  # 1, 10, 100, ...
            self._hosts[host] = (start, failures, throttled, throttled if log_it else logged)
        if log_it:
            self._audit(host, None, "too many failed sign-ins: throttled (429)",
                        failures + throttled, suppressed=throttled - logged - 1)
        raise ConsoleError(429, "too many failed sign-ins from this address: wait a minute "
                           "and try again (security officers are alerted to repeats)")

    def failed(self, host: str, credential: str | None, exc: Exception) -> None:
        """Count and audit one failed sign-in."""
        now = self.clock()
        with self._lock:
            start, failures, throttled, logged = self._current(host, now)
            self._hosts[host] = (start, failures + 1, throttled, logged)
            if len(self._hosts) > 10_000:  # forget quiet hosts
                self._hosts = {h: v for h, v in self._hosts.items() if now - v[0] < 60}
        reason = getattr(exc, "message", None) or str(exc)
        self._audit(host, credential, str(reason), failures + throttled + 1)

    def _audit(self, host: str, credential: str | None, reason: str, this_minute: int, *,
               suppressed: int = 0) -> None:
        details: dict[str, object] = {"host": host, "failures_this_minute": this_minute}
        if suppressed > 0:
            details["suppressed"] = suppressed
        with contextlib.suppress(StrongroomError):  # sealed: no log to write
            self.ctx.audit().append(
                actor="anonymous", action="console.sign-in",
                obj=f"credential {credential[:32]}" if credential else "sign-in",
                decision="deny", reason=reason[:300], details=details)


def when(value: float | datetime | str | None, *, now: float | None = None) -> dict[str, str]:
    """A time for a page: ``{"iso": UTC stamp, "rel": "3 min ago"}`` (empty for None)."""
    if value is None or value == "":
        return {"iso": "", "rel": "never"}
    if isinstance(value, datetime):
        t = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, str):
        t = parse_utc(value)
    else:
        t = float(value)
    return {"iso": utc_stamp(t), "rel": relative(t, now=time.time() if now is None else now)}


def _power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class Console:
    """State shared by the console's routes: context, config, sessions, templates."""

    def __init__(self, ctx: ServerContext, config: ConsoleConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.sessions = Sessions(ctx.store)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True,
                                                                  default_for_string=True))
        self.templates.globals.update(human_bytes=human_bytes, duration=duration,
                                      short_code=short_code, when=when)
        self._engine: tuple[str, PolicyEngine] | None = None
        self._lock = threading.Lock()
        self.signins = SignInThrottle(ctx)

    # -- sessions and CSRF -------------------------------------------------------------

    def session(self, request: Request, response: Response | None = None) -> Session:
        """The request's session; a new anonymous one (cookie set on ``response``) if none."""
        sess = self.sessions.get(request.cookies.get(COOKIE))
        if sess is None:
            value, sess = self.sessions.new()
            if response is not None:
                self.set_cookie(response, value)
            request.state.new_cookie = value
        return sess

    def set_cookie(self, response: Response, value: str) -> None:
        """Set the session cookie: Secure, HttpOnly, SameSite=Strict, host-only, Path=/."""
        response.set_cookie(COOKIE, value, max_age=SESSION_TTL_S, path="/", secure=True,
                            httponly=True, samesite="strict")

    def check_post(self, request: Request, sess: Session, token: str | None) -> None:
        """Refuse cross-site POSTs and POSTs without this session's CSRF token (audited)."""
        try:
            origin = request.headers.get("origin")
            site = request.headers.get("sec-fetch-site")
            # Under Referrer-Policy: no-referrer a browser sends "Origin: null" for a plain
            # form POST, even same-origin; Sec-Fetch-Site (which no page can set) then vouches.
            same_site_form = origin == "null" and site == "same-origin"
            if origin is not None and origin != self.config.origin and not same_site_form:
                raise ConsoleError(403, f"cross-site request refused (origin {origin[:100]})")
            if site is not None and site not in ("same-origin", "none"):
                raise ConsoleError(403, f"cross-site request refused (Sec-Fetch-Site {site[:40]})")
            token = token or request.headers.get("x-csrf-token")
            if not sess.csrf_ok(token):
                raise ConsoleError(403, "missing or wrong CSRF token: reload the page and retry")
        except ConsoleError as exc:
            # A forged cross-site POST is an attack on an approver: make it visible.
            with contextlib.suppress(StrongroomError):
                self.ctx.audit().append(
                    actor=f"console-session:{sess.person_key or 'anonymous'}",
                    action="console.csrf", obj=f"POST {request.url.path}"[:200],
                    decision="deny", reason=exc.message[:300],
                    details={"host": request.client.host if request.client else "?"})
            raise

    def person(self, sess: Session, *, now: float | None = None) -> Enrollment:
        """The signed-in person, from the officer-verified directory (403 when none)."""
        if not sess.person_key:
            raise ConsoleError(401, "sign in with your security key first")
        who = self.ctx.directory(key_ids=[sess.person_key], resources=[]).principal(
            sess.person_key)
        if who is None or not who.eligible(time.time() if now is None else now):
            raise ConsoleError(403, "your enrollment is revoked, or your vetting or employment "
                               "is not current")
        return who

    def require_role(self, me: Enrollment, *roles: str) -> None:
        """Refuse unless ``me`` (officer-verified) holds one of ``roles``."""
        if not set(me.roles) & set(roles):
            raise ConsoleError(403, f"this page is for {' or '.join(roles)}")

    # -- policy ---------------------------------------------------------------------------

    def engine(self) -> PolicyEngine:
        """The policy in force (re-parsed only when it changes)."""
        from strongroom.access.policy import PolicyEngine, current_policy

        text, _ = current_policy(self.ctx.directory_reader())
        with self._lock:
            if self._engine is None or self._engine[0] != text:
                self._engine = (text, PolicyEngine(text))
            return self._engine[1]

    # -- rendering ---------------------------------------------------------------------------

    def page(self, request: Request, template: str, sess: Session | None, *, status: int = 200,
             **values: Any) -> HTMLResponse:
        """Render ``template`` (autoescaped) with the session's CSRF token and person."""
        if sess is None:
            try:
                sess = self.session(request)
            except StrongroomError:
                sess = None
        me = None
        if sess is not None and sess.person_key:
            try:
                me = self.person(sess)
            except StrongroomError:
                me = None
        html = self.templates.get_template(template).render(
            csrf=sess.csrf if sess is not None else "", me=me, config=self.config,
            auditor=me is not None and bool(set(me.roles) & set(AUDITORS)), **values)
        response = HTMLResponse(html, status_code=status)
        value = getattr(request.state, "new_cookie", None)
        if value:
            self.set_cookie(response, value)
        return response

"""``strongroom serve --code-release``: the server's installed modules checked while it serves.

``serve`` compares the installed files with the release's hashes before it starts
(:func:`~strongroom.gateway.codesign.check_installed`); each worker then verifies
the release against the code owners the officers pinned (``gateway owners set``,
the gateway's rule: :func:`~strongroom.gateway.codesign.verify_release`) before
its first request once the keyring is unsealed, and again before the first
request after each ``STRONGROOM_CODE_CHECK_S`` (the gateway's
:class:`~strongroom.gateway.codesign.CodeWatch`). A module changed, added or
removed since the release was signed, or a release the pinned owners did not
sign, makes the worker answer 503 ``code_changed`` to every request except the
health probes until an operator restarts it from the signed code; the change is
audited (``server.code``, denied) and alerted (``code-modified``, critical) once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from strongroom.errors import Sealed, StrongroomError
from strongroom.gateway.codesign import CodeWatch

__all__ = ["HEALTH_PATHS", "CodeCheck", "install", "release_check", "report_change"]

#: Answered whatever the code: a load balancer still sees the process (and its seal).
HEALTH_PATHS = frozenset({"/v1/sys/health", "/livez", "/readyz"})


def release_check(ctx: Any, release: Path, root: Path | None = None) -> Callable[[], object]:
    """Verify ``release`` against the code owners the officers pinned (Sealed while sealed).

    ``root``: the package directory to check (default: the installed one, whose imported
    modules are checked too).
    """
    from strongroom.gateway.codesign import verify_release
    from strongroom.gateway.owners import require_owners

    envelope = release.read_text(encoding="utf-8").strip()

    def check() -> object:
        owners, threshold = require_owners(ctx.directory_reader())
        return verify_release(envelope, owners, threshold, root)

    return check


class CodeCheck:
    """ASGI middleware: 503 to every request but the health probes once the code changed."""

    def __init__(self, app: Any, *, watch: CodeWatch, interval_s: float,
                 on_change: Callable[[str, str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.watch = watch
        self.interval_s = interval_s
        self.on_change = on_change
        self.clock = clock

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        now = self.clock()
        try:
            # The check hashes the whole package and reads the pinned owners: in a thread,
            # never on the event loop, and only when due (a request between checks pays a
            # comparison).
            changed, found = (await run_in_threadpool(self.watch.poll, now, self.interval_s)
                              if self.watch.due(now, self.interval_s)
                              else (self.watch.changed, False))
        except Sealed:
            changed, found = None, False  # checked at the first request once unsealed
        except StrongroomError as exc:  # no owners pinned, an unreadable release: fail closed
            await _refuse(send, "code_unverified", f"{exc.message} ({exc.obj})", exc.remedy)
            return
        if found:
            assert changed is not None
            await run_in_threadpool(self.on_change, changed, self.watch.file or "")
        if changed is not None:
            await _refuse(send, "code_changed",
                          f"the server's code changed since it started: {changed}",
                          "restore the signed release and restart `strongroom serve`")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Any, kind: str, message: str, remedy: str | None) -> None:
    body = json.dumps({"error": message, "object": "code release", "remedy": remedy or "",
                       "type": kind}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def report_change(ctx: Any) -> Callable[[str, str], None]:
    """Audit (``server.code``) and alert (``code-modified``) a change found while serving."""
    from strongroom.monitor.alerts import Alert

    def report(changed: str, file: str) -> None:
        host = str(ctx.settings.host_id)
        with contextlib.suppress(StrongroomError):
            ctx.audit().append(actor="server", action="server.code", obj=file or "code release",
                               decision="deny", reason=f"code changed while serving: {changed}",
                               details={"server": host})
        with contextlib.suppress(StrongroomError):
            ctx.alerts().raise_alert(Alert(
                "code-modified", "critical", host, file or "code release",
                f"strongroom serve on {host}: the installed code changed while serving: "
                f"{changed}; every request but health is refused", f"code-modified:{host}:{file}",
                {"file": file, "server": host}))

    return report


def install(app: Any, ctx: Any) -> bool:
    """Add :class:`CodeCheck` to ``app`` when ``ctx.settings.code_release`` names a release."""
    release = ctx.settings.code_release
    if release is None:
        return False
    app.add_middleware(CodeCheck, watch=CodeWatch(release_check(ctx, Path(release))),
                       interval_s=float(ctx.settings.code_check_s), on_change=report_change(ctx))
    return True

"""``strongroom serve``: the signed-request HTTP API (and the web console when installed).

``serve`` starts and owns the data directory's key agent (:mod:`strongroom.runtime.agent`)
with its own settings (a 30-day idle timeout unless ``STRONGROOM_AGENT_IDLE``
says otherwise); whatever ``--workers`` says, the unsealed keyring lives there
alone, so the CLI on this host and every worker reach one gate. The agent and
the workers die with ``serve``, however it dies (``kill -9`` included:
:mod:`strongroom.runtime.lifeline`), and ``serve`` stops when its agent does.
An agent already running for the directory is never adopted: a sealed one
is told to stop, an unsealed one makes ``serve`` refuse (exit 2) until it is
sealed (``strongroom seal``). ``--log-format json`` makes serve, its agent and
its workers log one JSON object a line (:mod:`strongroom.runtime.logs`). Every
process writes its metric counters under ``<home>/metrics`` (0700, emptied at
start; :mod:`strongroom.runtime.metrics`), which ``GET /metrics`` sums. See
``docs/operations.md``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from strongroom.datadir import require_vault
from strongroom.errors import ConfigError

__all__ = ["register", "serve"]

#: uvicorn's httptools protocol with each response's headers and body sent in one
#: write (:mod:`strongroom.server.http_protocol`), imported by every worker.
FAST_HTTP = "strongroom.server.http_protocol:CoalescingHttpTools"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8420,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64,
                                         help="worker processes (all use serve's key agent)")
                       ] = 1,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate chain")
                        ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key")] = None,
    max_body: Annotated[int, typer.Option("--max-body", min=1024,
                                          help="largest request body, bytes")] = 1 << 20,
    max_upload: Annotated[int, typer.Option("--max-upload", min=1024,
                                            help="largest streamed weights upload, bytes")
                          ] = 256 << 30,
    plain_http: Annotated[bool, typer.Option(
        "--plain-http", help="allow plain HTTP on a non-loopback address (only behind a "
        "TLS-terminating proxy on the same host)")] = False,
    log_format: Annotated[str, typer.Option(
        "--log-format", help="text, or json: one JSON object a line (time, level, logger, "
        "message, request_id)")] = "text",
    code_release: Annotated[Path | None, typer.Option(
        "--code-release", metavar="FILE",
        help="code release signed by the code owners the officers pinned (`gateway "
        "sign-release`): the installed modules are checked against it at start and while "
        "serving [env: STRONGROOM_CODE_RELEASE]")] = None,
) -> None:
    """Serve the HTTP API: every request signed (RFC 9421), key releases through the gate."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from strongroom.runtime.agent import start_owned_agent
    from strongroom.runtime.backup import require_checked
    from strongroom.runtime.lifeline import OWNER_ENV, Lifeline
    from strongroom.runtime.logs import FORMAT_ENV, FORMATS, uvicorn_log_config
    from strongroom.settings import Settings

    if log_format not in FORMATS:
        raise ConfigError(f"unknown log format {log_format!r}", obj="--log-format",
                          remedy="use text or json")

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither", obj="serve")
    if tls_cert is None and not _loopback(host) and not plain_http:
        raise ConfigError(f"refusing plain HTTP on {host}", obj="serve",
                          remedy="pass --tls-cert/--tls-key, listen on 127.0.0.1 behind a TLS "
                          "proxy, or pass --plain-http if a proxy on this host terminates TLS")
    os.environ[FORMAT_ENV] = log_format  # the agent and the workers log alike (and _note)
    _check_code(code_release)  # before anything of this installation runs
    settings = Settings()
    home = settings.resolved_home
    require_vault(home, settings.database_url)
    require_checked(home)  # a restored directory serves only once `backup check` passed
    import importlib.util

    fast = importlib.util.find_spec("httptools") is not None
    if not fast:
        _note("warning: httptools is not installed; uvicorn falls back to h11, which "
              "serves signed requests several times slower (pip install httptools uvloop)",
              "warning")
    os.environ["STRONGROOM_SERVER_MAX_BODY"] = str(max_body)
    os.environ["STRONGROOM_SERVER_MAX_UPLOAD"] = str(max_upload)
    os.environ.setdefault("STRONGROOM_HOST_ID", settings.host_id)
    # The agent serves the workers; a quiet night must not seal the server.
    os.environ.setdefault("STRONGROOM_AGENT_IDLE", str(30 * 24 * 3600))
    _stop_stray_agent(home)
    _fresh_metrics_dir(home)  # before any process of this server imports prometheus_client
    lifeline = Lifeline()
    agent = start_owned_agent(home, lifeline, dict(os.environ))
    lifeline.close_child_end()
    os.environ[OWNER_ENV] = str(os.getpid())  # the workers watch this process
    stopping = threading.Event()
    _stop_with(agent, stopping)
    level = os.environ.get("STRONGROOM_LOG_LEVEL", "info")
    try:
        # No access log: release responses carry file keys; the audit log records requests.
        uvicorn.run("strongroom.server.workers:agent_app", factory=True, host=host, port=port,
                    workers=workers, http=FAST_HTTP if fast else "h11",
                    ssl_certfile=str(tls_cert) if tls_cert else None,
                    ssl_keyfile=str(tls_key) if tls_key else None,
                    log_level=level,
                    access_log=False, server_header=False, proxy_headers=False,
                    log_config=uvicorn_log_config("json", level) if log_format == "json"
                    else LOGGING_CONFIG)
    finally:
        # Like a restarted Vault: a stopped server leaves no unsealed key behind.
        stopping.set()
        with contextlib.suppress(OSError):
            agent.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(10)


def _note(message: str, level: str = "info") -> None:
    """One line to stderr: plain text, or with ``--log-format json`` one JSON object as the logs'."""
    import logging

    from strongroom.runtime.logs import JsonFormatter, log_format

    if log_format() != "json":
        typer.echo(message, err=True)
        return
    record = logging.LogRecord("strongroom.serve", logging.getLevelName(level.upper()),
                               __file__, 0, message, None, None)
    typer.echo(JsonFormatter().format(record), err=True)


def _check_code(option: Path | None) -> None:
    """Refuse to start when an installed module differs from the code release (named).

    The release's signers are checked by each worker once the keyring is unsealed (the
    pinned code owners live behind the barrier); the workers find the release in
    ``STRONGROOM_CODE_RELEASE`` (:mod:`strongroom.server.codecheck`).
    """
    from strongroom.errors import NotFound
    from strongroom.gateway.codesign import check_installed
    from strongroom.settings import Settings

    release = option or Settings().code_release
    if release is None:
        _note("warning: no --code-release: this server does not check its installed "
              "modules against a signed release (docs/operations.md)", "warning")
        return
    release = release.expanduser().resolve()
    try:
        envelope = release.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotFound("code release not found", obj=str(release)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the code release ({type(exc).__name__})",
                          obj=str(release)) from None
    version = check_installed(envelope)
    os.environ["STRONGROOM_CODE_RELEASE"] = str(release)
    _note(f"code: the installed modules match release {release} (strongroom {version}); "
          "its signers are checked against the pinned code owners once unsealed")


def _fresh_metrics_dir(home: Path) -> None:
    """``<home>/metrics``, private and empty, as every process's metric files (multiprocess mode).

    Emptied at start: the counters of a previous server are not this one's (Prometheus
    sees a counter reset). Only ``serve`` runs here: no other server holds the directory.
    """
    from strongroom.datadir import make_private_dir
    from strongroom.runtime.metrics import MULTIPROC_ENV

    path = make_private_dir(home / "metrics")
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)


def _stop_stray_agent(home: Path) -> None:
    """Never adopt an agent ``serve`` did not start: stop a sealed one, refuse an unsealed one."""
    from strongroom.runtime.services import key_service

    svc = key_service(home, start=False)
    try:
        info = svc.client.ping()
        if info is None:
            return
        if info.get("owner"):
            raise ConfigError(f"strongroom serve (pid {info['owner']}) already runs on this "
                              "data directory", obj=str(home),
                              remedy="stop that server first; one server per data directory")
        if not svc.status().sealed:
            raise ConfigError(
                f"a key agent started outside serve (pid {info.get('pid')}) holds this data "
                "directory unsealed; serve does not adopt it", obj=str(home),
                remedy="seal it (`strongroom seal`), start serve, then unseal the server "
                "(`strongroom unseal` on this host, or over the API with STRONGROOM_URL)")
        svc.client.call("shutdown")  # sealed: nothing is lost
    finally:
        svc.client.close()
    deadline = time.monotonic() + 10
    while _alive(int(info.get("pid") or 0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    _note(f"stopped the sealed key agent (pid {info.get('pid')}) that was running for "
          f"{home}; serve starts its own")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _stop_with(agent: subprocess.Popen[bytes], stopping: threading.Event) -> None:
    """Stop this server (SIGTERM to itself) if its key agent exits: they live and die together."""
    def wait() -> None:
        code = agent.wait()
        if stopping.is_set():
            return
        _note(f"error: the key agent (pid {agent.pid}) exited ({code}); stopping the server",
              "error")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="agent-watch", daemon=True).start()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main app."""
    app.command("serve")(serve)

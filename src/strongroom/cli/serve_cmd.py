"""``strongroom serve``: the signed-request HTTP API (and the web console when installed).

``--workers 1`` (default) keeps the keyring and the release gate in the server
process: unseal it over the API (``STRONGROOM_URL=... strongroom unseal``).
``--workers N`` runs N uvicorn worker processes over the local key agent,
which alone holds the unsealed keyring; see ``docs/operations.md``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from strongroom.errors import ConfigError

__all__ = ["register", "serve"]


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
                                         help="worker processes (N > 1 uses the key agent)")] = 1,
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
) -> None:
    """Serve the HTTP API: every request signed (RFC 9421), key releases through the gate."""
    import uvicorn

    from strongroom.settings import Settings

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither", obj="serve")
    if tls_cert is None and not _loopback(host) and not plain_http:
        raise ConfigError(f"refusing plain HTTP on {host}", obj="serve",
                          remedy="pass --tls-cert/--tls-key, listen on 127.0.0.1 behind a TLS "
                          "proxy, or pass --plain-http if a proxy on this host terminates TLS")
    home = Settings().resolved_home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    import importlib.util

    fast = importlib.util.find_spec("httptools") is not None
    if not fast:
        typer.echo("warning: httptools is not installed; uvicorn falls back to h11, which "
                   "serves signed requests several times slower (pip install httptools uvloop)",
                   err=True)
    os.environ["STRONGROOM_SERVER_MAX_BODY"] = str(max_body)
    os.environ["STRONGROOM_SERVER_MAX_UPLOAD"] = str(max_upload)
    if workers > 1:
        from strongroom.runtime.services import key_service

        # The agent serves the workers; a quiet night must not seal the server.
        os.environ.setdefault("STRONGROOM_AGENT_IDLE", str(30 * 24 * 3600))
        key_service(home).status()  # start the agent now, before the workers race to
        target = "strongroom.server.workers:agent_app"
    else:
        target = "strongroom.server.workers:local_app"
    try:
        # No access log: release responses carry file keys; the audit log records requests.
        uvicorn.run(target, factory=True, host=host, port=port, workers=workers,
                    http="httptools" if fast else "h11",
                    ssl_certfile=str(tls_cert) if tls_cert else None,
                    ssl_keyfile=str(tls_key) if tls_key else None,
                    log_level=os.environ.get("STRONGROOM_LOG_LEVEL", "info"),
                    access_log=False, server_header=False, proxy_headers=False)
    finally:
        if workers > 1:
            # Like a restarted Vault: a stopped server leaves no unsealed key behind.
            key_service(home, start=False).seal()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main app."""
    app.command("serve")(serve)

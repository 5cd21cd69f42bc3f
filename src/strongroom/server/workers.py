"""The app each ``strongroom serve --workers N`` process runs (uvicorn's ``factory=True``).

With several workers the unsealed keyring must live in exactly one process:
the local key agent (:mod:`strongroom.runtime.agent`), which ``serve`` starts
before the workers. Each worker holds a :class:`ServerContext` over the agent
(:meth:`ServerContext.agent`), its own store connections and audit-log handle,
and shares one signature-nonce cache with the other workers — the
``server_nonces`` table of the database on PostgreSQL (every host), else the
host's ``<home>/server-nonces.db`` (see
:func:`~strongroom.server.signatures.default_nonce_cache`) — so that a request
replayed to another worker or host is still refused. ``serve`` passes its options in the environment
(``STRONGROOM_SERVER_*``), which uvicorn's worker processes inherit.
"""

from __future__ import annotations

import atexit
import os

from fastapi import FastAPI

from strongroom.server.app import create_app
from strongroom.server.auth import DEFAULT_MAX_BODY, DEFAULT_MAX_UPLOAD
from strongroom.server.context import ServerContext
from strongroom.server.signatures import default_nonce_cache
from strongroom.settings import Settings

__all__ = ["NONCE_DB", "agent_app", "local_app"]

#: The nonce cache the workers of one host share, under the data directory.
NONCE_DB = "server-nonces.db"
_local_ctx: ServerContext | None = None


def _max_body() -> int:
    return int(os.environ.get("STRONGROOM_SERVER_MAX_BODY", DEFAULT_MAX_BODY))


def _max_upload() -> int:
    return int(os.environ.get("STRONGROOM_SERVER_MAX_UPLOAD", DEFAULT_MAX_UPLOAD))


def agent_app() -> FastAPI:
    """A worker's app: keys through the local agent, shared nonce cache."""
    settings = Settings()
    ctx = ServerContext.agent(settings)
    atexit.register(ctx.close)
    nonces = default_nonce_cache(ctx.store, shared_host=settings.resolved_home / NONCE_DB)
    return create_app(ctx, nonces=nonces, max_body=_max_body(), max_upload=_max_upload())


def local_app() -> FastAPI:
    """The single-process app: keyring and gate in this process (``--workers 1``)."""
    global _local_ctx
    settings = Settings()
    _local_ctx = ServerContext.local(settings)
    atexit.register(_local_ctx.close)
    return create_app(_local_ctx, max_body=_max_body(), max_upload=_max_upload())

"""The app each ``strongroom serve --workers N`` process runs (uvicorn's ``factory=True``).

The unsealed keyring lives in exactly one process per data directory: the
local key agent (:mod:`strongroom.runtime.agent`), which ``serve`` starts and
owns before the workers, whatever ``--workers`` says, so that the CLI on the
host reaches the same gate. A worker process dies with ``serve`` (parent-death
watch, :mod:`strongroom.runtime.lifeline`) and never starts an agent itself. Each worker holds a :class:`ServerContext` over the agent
(:meth:`ServerContext.agent`), its own store connections and audit-log handle,
and shares one signature-nonce cache with the other workers — the
``server_nonces`` table of the database on PostgreSQL (every host), else the
host's ``<home>/server-nonces.map`` (see
:func:`~strongroom.server.signatures.default_nonce_cache`) — so that a request
replayed to another worker or host is still refused. ``serve`` passes its options in the environment
(``STRONGROOM_SERVER_*``), which uvicorn's worker processes inherit.
"""

from __future__ import annotations

import atexit
import os
import signal

from fastapi import FastAPI

from strongroom.runtime.lifeline import OWNER_ENV, watch_parent
from strongroom.server.app import create_app
from strongroom.server.auth import DEFAULT_MAX_BODY, DEFAULT_MAX_UPLOAD
from strongroom.server.context import ServerContext
from strongroom.server.signatures import default_nonce_cache
from strongroom.settings import Settings

__all__ = ["NONCE_DB", "agent_app", "local_app"]

#: The nonce cache the workers of one host share, under the data directory (a mapped
#: table; it adopts the live nonces of ``server-nonces.db``, earlier releases' SQLite file).
NONCE_DB = "server-nonces.map"
_local_ctx: ServerContext | None = None


def _max_body() -> int:
    return int(os.environ.get("STRONGROOM_SERVER_MAX_BODY", DEFAULT_MAX_BODY))


def _max_upload() -> int:
    return int(os.environ.get("STRONGROOM_SERVER_MAX_UPLOAD", DEFAULT_MAX_UPLOAD))


def _die_with_serve() -> None:
    """In a worker process of ``serve``: stop answering the moment ``serve`` is gone."""
    owner = os.environ.get(OWNER_ENV)
    if not owner or int(owner) == os.getpid():  # --workers 1: this process is serve
        return
    watch_parent(int(owner), lambda: os._exit(1), signum=signal.SIGKILL)


def agent_app() -> FastAPI:
    """A worker's app: keys through the agent ``serve`` owns, shared nonce cache."""
    _die_with_serve()
    settings = Settings()
    ctx = ServerContext.agent(settings, start=not os.environ.get(OWNER_ENV))
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

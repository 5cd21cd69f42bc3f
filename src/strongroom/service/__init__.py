"""One interface of operations over a vault, with two transports.

Every face asks the same :class:`~strongroom.service.protocol.Service` for
what it does — status, seal and unseal, weights, requests and approvals, the
audit log, alerts, egress, the directory, documents, posture — and gets plain
rows back whose keys docs/cli.md lists, so what it shows is the same wherever
the vault is::

    from strongroom.service import open_service

    svc = open_service()        # STRONGROOM_URL set: RemoteService, else EmbeddedService
    try:
        rows = svc.weights_ls()
    finally:
        svc.close()

* :mod:`~strongroom.service.embedded` — this host's data directory and its key
  agent (``STRONGROOM_HOME``, ``STRONGROOM_DATABASE_URL``);
* :mod:`~strongroom.service.remote` — ``strongroom serve`` over the signed HTTP
  API (``STRONGROOM_URL``, ``STRONGROOM_IDENTITY``); an operation the server
  does not offer refuses ("runs only on the vault host", exit 2) and never
  falls back to a local directory.

The choice is made once, from the environment, by :func:`open_service`.

Layers: this package sits under the CLI and above the server (``cli ->
service -> server.client``). The web console is not a client of it: the
console lives inside the server process, beside the gate it would otherwise
call over HTTP, so it stays on the embedded side and uses the server's own
context; the server may not import this package (import-linter's "house").
"""

from __future__ import annotations

import os

from strongroom.service.protocol import Service

__all__ = ["Service", "open_service", "remote_url"]


def remote_url() -> str | None:
    """The server ``STRONGROOM_URL`` names, or None (work on the local vault)."""
    return os.environ.get("STRONGROOM_URL") or None


def open_service() -> Service:
    """The service the environment names: the server at ``STRONGROOM_URL``, else the local vault."""
    if remote_url():
        from strongroom.service.remote import RemoteService

        return RemoteService()
    from strongroom.service.embedded import EmbeddedService

    return EmbeddedService()

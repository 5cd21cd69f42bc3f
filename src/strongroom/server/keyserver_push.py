"""``strongroom serve`` sends a revocation it just stored to its own key servers, at once.

A server configured with key servers (``STRONGROOM_THRESHOLD_SERVERS``, the ones it
asks for threshold releases) pushes each Grant revocation and each key revocation
(or a cosignature of one) stored over the API to every key server, best effort,
through :func:`strongroom.runtime.keyserver_sync.push`: the operator's machine
needs no key-server settings. Each server's answer is audited here under the
caller's name (``keyserver.push``: ``allow`` when it stored or already held the
revocation, ``deny`` when it was not reached or refused it) and returned by name in
the API answer, which the CLI prints; one not reached carries ``keyserver sync``
as the remedy. Each key server still verifies the statement itself::

    results = push_revocation(ctx, caller.name, "grant-revocation", envelope)  # None: no key servers
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strongroom.server.context import ServerContext

__all__ = ["SYNC_REMEDY", "push_revocation"]

_log = logging.getLogger(__name__)

#: What the operator does about a key server the push did not reach.
SYNC_REMEDY = "run `strongroom keyserver sync` on the vault host when the key server is reachable"


def push_revocation(
    ctx: ServerContext, actor: str, kind: str, envelope: str
) -> dict[str, dict[str, Any]] | None:
    """``envelope`` (a ``kind`` revocation just stored) to every key server this server uses;
    by name, each server's answer or ``{"error", "remedy"}``. None without key servers."""
    from strongroom import errors
    from strongroom.access import statements
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.keyserver_sync import push
    from strongroom.runtime.threshold_keys import parse_servers

    digest = statements.payload_digest(envelope)
    try:
        servers = parse_servers(KeysSettings().threshold_servers)
    except errors.StrongroomError as exc:
        results: dict[str, dict[str, Any]] = {
            "STRONGROOM_THRESHOLD_SERVERS": {
                "error": f"{type(exc).__name__}: {exc.message}",
                "remedy": f"fix the server's STRONGROOM_THRESHOLD_SERVERS, then {SYNC_REMEDY}",
            }
        }
    else:
        if not servers:
            return None
        results = push(servers, [{"kind": kind, "envelope": envelope}])
    for name, result in results.items():
        if "error" in result:
            result["remedy"] = (
                SYNC_REMEDY
                if not result.get("remedy")
                else (f"{result['remedy']}; then {SYNC_REMEDY}")
            )
        sent = "error" not in result and not result.get("refused")
        _log.log(
            logging.INFO if sent else logging.WARNING,
            "revocation %s to key server %s: %s",
            digest[:16],
            name,
            "sent" if sent else result.get("error") or result["refused"],
        )
        ctx.audit().append(
            actor=actor,
            action="keyserver.push",
            obj=name,
            decision="allow" if sent else "deny",
            reason="revocation sent to the key server" if sent else "revocation not sent",
            details={
                "kind": kind,
                "statement": digest,
                **({"error": str(result["error"])} if "error" in result else {}),
            },
        )
    return results

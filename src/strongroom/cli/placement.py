"""Where each command runs when ``STRONGROOM_URL`` names a server, and the service it uses.

Every command is in exactly one of three places (a test walks the Typer app
and fails on a command that is in none, so a new command cannot slip through):

* ``REMOTE`` — goes over the signed HTTP API to the server. Derived, not
  written down: a command is remote when every service operation it calls
  (:data:`strongroom.service.protocol.COMMANDS`) is one the remote service
  performs rather than refuses, so this table and the remote implementation
  cannot drift;
* ``ANYWHERE`` — needs no vault (file encryption, offline verification, key
  files, scanning local files, a witness): it runs on this machine, with or
  without ``STRONGROOM_URL``;
* ``VAULT_HOST`` — everything else runs only on the vault host. With
  ``STRONGROOM_URL`` set it is refused before it touches anything — never run
  against a local directory instead of the server the user named (the failure
  the deployed-mode issue saw: ``strongroom seal`` "sealed" an empty
  ``./.strongroom`` while the server kept releasing keys).

Commands that go through the service open it with :func:`service`, which
picks the implementation once, from the environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from strongroom.service import Service, open_service
from strongroom.service.protocol import COMMANDS, offered, refusal
from strongroom.service.remote import RemoteService

__all__ = ["ANYWHERE", "REMOTE", "VAULT_HOST", "check", "service"]

_REMOTE_OPS = offered(RemoteService)

#: Commands that go to the server over the API when STRONGROOM_URL is set.
REMOTE = frozenset(cmd for cmd, ops in COMMANDS.items() if set(ops) <= _REMOTE_OPS)

#: Commands that need no vault: they run here either way.
ANYWHERE = frozenset({
    "attest verify",
    "audit verify-checkpoint", "audit verify-note", "audit verify-proof",
    "backup verify", "bundle",
    "decrypt", "encrypt", "keygen",
    "doctor", "sbom", "scan",
    "gateway sign-release", "gateway verify-release",
    "keys new-identity", "keys verify-share",
    # a key server is its own data directory and host, never the vault's
    "keyserver admin", "keyserver pin", "keyserver revoke-grant", "keyserver revoke-key", "keyserver serve",
    "redteam list",
    "serve",
    "trust ls", "trust rm", "trust set",
    "witness key", "witness keygen", "witness serve",
})

#: Commands outside the service that need this host's data directory or agent.
_HOST_ONLY = frozenset({
    "access policy set", "access policy show",
    "attest policy set", "attest policy show",
    "alerts outbox", "alerts test", "audit key",
    # the log's redaction salt stays on the host: over the API these would be an oracle
    # that tells anyone which secret a redacted field holds
    "audit check-value", "audit hash",
    "backup check", "backup create", "backup restore",
    "console endorse", "console pending", "console register-token",
    "db upgrade",
    "docs add", "docs read",
    "gateway owners set", "gateway owners show", "gateway serve",
    "init", "rekey",
    "keys retire",
    "keyserver rewrap",  # the vault's blobs and manifests, through its key servers
    "keyserver sync",  # the vault's signed access statements, to its key servers
    "monitor budget", "monitor eval",
    "redteam run", "redteam schedule",
    "transfer approve", "transfer approve-sign", "transfer export", "transfer import",
    "transfer keygen",
})

#: Commands that run only on the vault host (refused with STRONGROOM_URL set).
VAULT_HOST = _HOST_ONLY | frozenset(COMMANDS).difference(REMOTE)


def check(command: str) -> None:
    """Refuse ``command`` when STRONGROOM_URL is set and it cannot run against that server.

    An empty ``command`` (``strongroom --version``, ``--help``, no arguments) and a group
    named alone (``strongroom weights``) run nothing; ``main`` skips the check for ``--help``.
    """
    url = os.environ.get("STRONGROOM_URL")
    if not url or not command or command in REMOTE or command in ANYWHERE:
        return
    if command not in VAULT_HOST and any(c.startswith(command + " ")
                                         for c in REMOTE | ANYWHERE | VAULT_HOST):
        return  # a group alone (`strongroom weights`) prints its help and runs nothing
    raise refusal(command, url)


@contextlib.contextmanager
def service() -> Iterator[Service]:
    """The service this command works with (the server at STRONGROOM_URL, else the local vault)."""
    svc = open_service()
    try:
        yield svc
    finally:
        svc.close()

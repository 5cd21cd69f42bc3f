"""Where each command runs when ``STRONGROOM_URL`` names a server.

Every command is in exactly one of three places (a test walks the Typer app
and fails on a command that is in none, so a new command cannot slip through):

* ``REMOTE`` — goes over the signed HTTP API to the server;
* ``ANYWHERE`` — needs no vault (file encryption, offline verification, key
  files, scanning local files, a witness): it runs on this machine, with or
  without ``STRONGROOM_URL``;
* everything else runs only on the vault host. With ``STRONGROOM_URL`` set it is
  refused before it touches anything — never run against a local directory
  instead of the server the user named (the failure the deployed-mode issue saw:
  ``strongroom seal`` "sealed" an empty ``./.strongroom`` while the server kept
  releasing keys).
"""

from __future__ import annotations

import os

from strongroom.errors import InvalidInput

__all__ = ["ANYWHERE", "REMOTE", "VAULT_HOST", "check"]

#: Commands that go to the server over the API when STRONGROOM_URL is set.
REMOTE = frozenset({
    "access approve", "access deny", "access grants", "access request",
    "alerts ack", "alerts ls",
    "audit checkpoint", "audit tail",
    "keys public",
    "seal", "status", "unseal",
    "weights import", "weights ls", "weights verify",
})

#: Commands that need no vault: they run here either way.
ANYWHERE = frozenset({
    "audit check-value", "audit hash", "audit verify-checkpoint", "audit verify-note",
    "audit verify-proof",
    "backup verify",
    "decrypt", "encrypt", "keygen",
    "doctor", "sbom", "scan",
    "gateway sign-release", "gateway verify-release",
    "keys new-identity", "keys verify-share",
    "redteam list",
    "serve",
    "trust ls", "trust rm", "trust set",
    "witness key", "witness keygen", "witness serve",
})

#: Commands that run only on the vault host (refused with STRONGROOM_URL set).
VAULT_HOST = frozenset({
    "access break-glass", "access caps", "access policy set", "access policy show",
    "access revoke",
    "alerts outbox", "alerts test",
    "alerts export", "audit export",
    "audit key", "audit prove", "audit show", "audit verify",
    "backup check", "backup create", "backup restore",
    "compartments label", "compartments ls",
    "console endorse", "console pending", "console register-token",
    "docs add", "docs ls", "docs read",
    "gateway owners set", "gateway owners show", "gateway serve",
    "init", "rekey",
    "keys retire", "keys rewrap", "keys rotate",
    "monitor budget", "monitor egress", "monitor eval",
    "people cosign", "people enroll", "people ls", "people revoke",
    "posture assess", "redteam run",
    "transfer approve", "transfer approve-sign", "transfer export", "transfer import",
    "transfer keygen",
    "weights export", "weights show",
})


def check(command: str) -> None:
    """Refuse ``command`` when STRONGROOM_URL is set and it cannot run against that server."""
    url = os.environ.get("STRONGROOM_URL")
    if not url or command in REMOTE or command in ANYWHERE:
        return
    raise InvalidInput(
        f"`strongroom {command}` runs only on the vault host: it is not offered over the API, "
        f"and STRONGROOM_URL is set ({url}), so it was not run against a local directory instead",
        obj=command,
        remedy="run it on the vault host, where STRONGROOM_HOME names the data directory, "
               "or unset STRONGROOM_URL to work on a local vault",
    )

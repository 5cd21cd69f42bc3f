"""strongroom: model weights and algorithmic secrets, encrypted, approved, audited and metered.

The public API::

    import strongroom
    with strongroom.open_weights("minilm") as weights:    # read-only mapping name -> numpy array
        ...

Everything not re-exported here may change.
"""

from __future__ import annotations

from strongroom.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalRequired,
    AuditUnavailable,
    BudgetExceeded,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NotFound,
    Sealed,
    StorageError,
    StrongroomError,
)

# typing is imported only by type checkers: `strongroom --version` starts without it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "ApprovalRequired",
    "AuditUnavailable",
    "BudgetExceeded",
    "ConfigError",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "Sealed",
    "Settings",
    "StorageError",
    "StrongroomError",
    "Vault",
    "Weights",
    "open_weights",
]

__version__ = "0.1.0"


def open_weights(
    name: str,
    version: int | None = None,
    *,
    lazy: bool = False,
    framework: str = "numpy",
    vault: Any = None,
    into: Any = None,
) -> Any:
    """Decrypt an artifact's tensors into memory: a read-only mapping of name -> array.

    Opens the vault from the environment unless one is given: with
    ``STRONGROOM_URL`` set, the server's (keys from its gate, ciphertext by
    range, signed as ``STRONGROOM_IDENTITY``), else the local data directory
    (``STRONGROOM_HOME``). Close the result (or use it as a context manager) to
    zero the buffers. ``into`` (full loads) maps shard paths to writable buffers
    to decrypt into, reused across loads (``strongroom.vault.loader.shard_buffers``).
    """
    import os

    owned = vault is None
    if owned and os.environ.get("STRONGROOM_URL"):
        from strongroom.server.remote_vault import RemoteVault

        v: Any = RemoteVault.from_env()
    elif owned:
        from strongroom.runtime.services import open_vault

        v = open_vault()
    else:
        v = vault
    try:
        weights = (v.open_weights(name, version, lazy=lazy, framework=framework)
                   if into is None else
                   v.open_weights(name, version, lazy=lazy, framework=framework, into=into))
    except BaseException:
        if owned:
            v.close()
        raise
    if owned:
        weights._stack.callback(v.close)
    return weights


def __getattr__(attr: str) -> Any:
    if attr == "Settings":
        from strongroom.settings import Settings

        return Settings
    if attr == "Vault":
        from strongroom.vault.vault import Vault

        return Vault
    if attr == "Weights":
        from strongroom.vault.loader import Weights

        return Weights
    raise AttributeError(attr)

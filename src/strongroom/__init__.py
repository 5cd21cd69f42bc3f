"""strongroom: model weights and algorithmic secrets, encrypted, approved, audited and metered.

The public API::

    import strongroom
    with strongroom.open_weights("minilm") as weights:    # read-only mapping name -> numpy array
        ...

Everything not re-exported here may change.
"""

from __future__ import annotations

from typing import Any

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
) -> Any:
    """Decrypt an artifact's tensors into memory: a read-only mapping of name -> array.

    Opens the vault from the environment (``STRONGROOM_HOME``...) unless one is
    given; close the result (or use it as a context manager) to zero the buffers.
    """
    from strongroom.runtime.services import open_vault

    owned = vault is None
    v = open_vault() if owned else vault
    try:
        weights = v.open_weights(name, version, lazy=lazy, framework=framework)
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

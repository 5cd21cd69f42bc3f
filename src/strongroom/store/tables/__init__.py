"""Every table strongroom keeps, one module per part that owns them."""

from strongroom.store.tables import access, attest, audit, console, keys, monitor, server, vault

__all__ = ["access", "attest", "audit", "console", "keys", "monitor", "server", "vault"]

"""Every table strongroom keeps, one module per part that owns them."""

from strongroom.store.tables import audit, keys, monitor, vault

__all__ = ["audit", "keys", "monitor", "vault"]

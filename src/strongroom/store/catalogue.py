"""What the store's artifact table lists, read without opening the vault (no keys needed).

For faces that show sizes beside budgets (``strongroom monitor egress``); the
vault (:meth:`strongroom.vault.vault.Vault.list_artifacts`) is the reader when
a vault is open::

    for ref, size in artifact_sizes(store):   # ("minilm@1", 90_000_000), ...
        ...
"""

from __future__ import annotations

from sqlalchemy import select

from strongroom.artifacts import ArtifactRef
from strongroom.store.db import Store
from strongroom.store.tables.vault import Artifact

__all__ = ["artifact_sizes"]


def artifact_sizes(store: Store) -> list[tuple[str, int]]:
    """Every stored artifact version (``name@version``) with its total size, by name and version."""
    query = select(Artifact.name, Artifact.version, Artifact.total_size).order_by(
        Artifact.name, Artifact.version)
    with store.session(readonly=True) as s:
        return [(str(ArtifactRef(name, version)), int(size))
                for name, version, size in s.execute(query).all()]

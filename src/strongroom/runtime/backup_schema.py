"""The schema revision a backup's database is at, against the revisions this code knows.

A backup records its database's schema revisions (``database.schema`` in the
signed statement; backups made before that record none). A restore uses them:

* a backup **newer** than this code (a newer strongroom migrated its database)
  is refused before anything is written — old code never writes into a schema
  it does not understand (:func:`refuse_newer_backup`);
* a backup **older** than this code restores as it was made, and stays older:
  nothing migrates behind the operator's back. :func:`restored_schema` reads the
  restored database's state, so ``backup restore`` names the next steps —
  ``strongroom db upgrade``, then unseal, then ``strongroom backup check``
  (docs/operations.md, "Upgrades").

A backup without recorded revisions is checked once restored, and a newer one
rolled back there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strongroom.store.db import Store
from strongroom.store.schema import SchemaState

__all__ = ["recorded_schema", "refuse_newer_backup", "restored_schema"]


def recorded_schema(store: Store) -> list[str]:
    """The revisions to record in a backup of ``store``'s database."""
    return sorted(store.schema_versions())


def refuse_newer_backup(statement: Mapping[str, Any]) -> None:
    """Refuse (SchemaMismatch, exit 9) a backup whose recorded schema this code does not know."""
    recorded = statement["database"].get("schema_revisions")
    if recorded:
        SchemaState.of(frozenset(map(str, recorded))).refuse_newer(
            f"backup {statement['backup_id']} (made by strongroom {statement.get('strongroom')})")


def restored_schema(url: str, statement: Mapping[str, Any]) -> SchemaState:
    """The restored database's state; SchemaMismatch when it is newer than this code."""
    store = Store.open(url, schema="unchecked")
    try:
        state = store.schema_state()
    finally:
        store.close()
    state.refuse_newer(f"backup {statement['backup_id']} (made by strongroom "
                       f"{statement.get('strongroom')})")
    return state

"""Steps that steal data at rest: a database dump with the whole blob bucket, a backup.

The attacker here holds storage, not a person's credentials: a DBA's dump of
every table, a copy of every blob the dump names, or the directory
``strongroom backup create`` wrote. The steps only copy what such an attacker
would walk away with, under the target's directory and named with the
scenario's marker; the check :func:`strongroom.redteam.checks.stolen_data_opens_nothing`
then tries every key-sized value the loot holds.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import MetaData, select

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import step

if TYPE_CHECKING:
    from strongroom.redteam.live import LiveTarget


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def dump_tables(ctx: RunContext, out: Path) -> list[str]:
    """Every row of every table as JSON lines (bytes in base64), as ``pg_dump``/``.dump`` would
    hand over; the blob ids of the wrapped keys it holds."""
    engine = ctx.target.store.engine
    meta = MetaData()
    meta.reflect(engine)
    blob_ids: set[str] = set()
    with engine.connect() as conn, out.open("w", encoding="utf-8") as f:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                doc = {k: _jsonable(v) for k, v in row.items()}
                f.write(json.dumps({"table": table.name, "row": doc}) + "\n")
                if table.name == "wrapped_keys":
                    blob_ids.add(str(row["blob_id"]))
    return sorted(blob_ids)


@step("steal_database_and_blobs")
def steal_database_and_blobs(ctx: RunContext) -> None:
    """Dump every table and copy every blob the dump names (the whole bucket of weights)."""
    loot = ctx.target.root / f"loot-{ctx.marker}"
    (loot / "blobs").mkdir(parents=True)
    blob_ids = dump_tables(ctx, loot / "dump.jsonl")
    blobs = ctx.target.vault.blobs
    for bid in blob_ids:
        src = blobs.open(bid)
        try:
            (loot / "blobs" / bid.replace("/", "_")).write_bytes(bytes(src.read_at(0, len(src))))
        finally:
            src.close()
    ctx.vars["loot"] = loot
    ctx.saw(f"dumped the database and copied {len(blob_ids)} blobs to {loot.name}")


@step("steal_backup")
def steal_backup(ctx: RunContext) -> None:
    """An operator runs ``backup create``; the attacker copies the backup directory away.

    Live (``host-shell``): the backup is made on the serving host, through its own key
    agent, as the red-team identity (recorded as ``backup.create`` in the deployment's log).
    """
    from strongroom.runtime.backup import create_backup

    t = ctx.target
    loot = t.root / f"loot-{ctx.marker}"
    loot.mkdir()
    if t.kind == "live":
        live = cast("LiveTarget", t)
        assert live.host is not None and live.identity is not None  # host-shell: both given
        with live.host.vault(live.identity) as vault:
            create_backup(vault, live.host.home, loot / "backup")
    else:
        create_backup(t.vault, t.vault.settings.home, loot / "backup")
    ctx.vars["loot"] = loot
    ctx.saw(f"copied the backup `backup create` wrote to {loot.name}")


@step("remove_loot")
def remove_loot(ctx: RunContext) -> None:
    """Cleanup: delete what the attacker copied."""
    loot = ctx.vars.pop("loot", None)
    if isinstance(loot, Path):
        shutil.rmtree(loot, ignore_errors=True)

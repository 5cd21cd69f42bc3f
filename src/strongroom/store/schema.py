"""Which schema revision a database is at, compared with the revisions this code knows.

Only two paths change a database's schema: ``strongroom init`` (a new, empty
database gets the whole schema) and ``strongroom db upgrade``. What a deployment
runs (``serve``, its workers, the key agent, the CLI's commands on the vault
host) opens its database with ``Store.open(url, schema="current")``, which
calls :meth:`SchemaState.require` and so refuses

* a database *older* than the code (a migration is pending): nothing migrates
  behind an operator's back, so an upgrade happens once, explicitly, after a
  backup;
* a database *newer* than the code (a revision these migration files do not
  know: a newer strongroom migrated it), naming both revisions: old code must
  never write rows into a schema it does not understand;
* a database with no strongroom schema at all (a stray directory or an empty
  PostgreSQL database): ``strongroom init`` creates a vault.

The revisions are read from the migration files' ``revision =`` lines without
importing Alembic (importing it costs most of a CLI command's start-up); a test
checks the result against Alembic's own reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from strongroom.errors import StorageError

__all__ = ["MIGRATIONS_DIR", "SchemaMismatch", "SchemaMode", "SchemaState", "schema_heads",
           "schema_revisions"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.M)

#: What ``Store.open`` may do to a schema: ``create`` (the library default: a new, empty
#: database gets the schema, an existing one must be current), ``current`` (a deployment:
#: refuse anything but the code's revisions), ``upgrade`` (``strongroom db upgrade``: apply
#: pending migrations) or ``unchecked`` (read the revisions, change nothing).
SchemaMode = Literal["create", "current", "upgrade", "unchecked"]

#: The one command that migrates an existing database.
UPGRADE_COMMAND = "strongroom db upgrade"


class SchemaMismatch(StorageError):
    """The database's schema revision is not the one this strongroom runs on."""


def _graph() -> tuple[frozenset[str], frozenset[str]]:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(text)
        if down is not None:
            parents.update(re.findall(r'"([^"]+)"', down.group(1)))
    return frozenset(revisions), frozenset(parents)


def schema_revisions() -> frozenset[str]:
    """Every Alembic revision this code's migration files define."""
    return _graph()[0]


def schema_heads() -> frozenset[str]:
    """The newest Alembic revisions (those no other revision names as its parent)."""
    revisions, parents = _graph()
    return revisions - parents


def _names(revisions: frozenset[str]) -> str:
    return ", ".join(sorted(revisions)) or "none"


@dataclass(frozen=True)
class SchemaState:
    """The revisions a database is at (``at``) beside this code's ``heads`` and ``known`` ones."""

    at: frozenset[str]
    heads: frozenset[str]
    known: frozenset[str]

    @classmethod
    def of(cls, at: frozenset[str]) -> SchemaState:
        """The state of a database at revisions ``at``, against this code's migration files."""
        revisions, parents = _graph()
        return cls(at=at, heads=revisions - parents, known=revisions)

    @property
    def new(self) -> bool:
        """The database has no strongroom schema yet."""
        return not self.at

    @property
    def current(self) -> bool:
        """The database is exactly at this code's newest revisions."""
        return self.at == self.heads

    @property
    def unknown(self) -> frozenset[str]:
        """Revisions the database is at that this code does not know (a newer strongroom's)."""
        return self.at - self.known

    @property
    def pending(self) -> bool:
        """The database is older than the code: ``strongroom db upgrade`` has work to do."""
        return bool(self.at) and not self.unknown and not self.current

    def describe(self) -> str:
        """``from -> to`` in revision names, for the operator."""
        return f"{_names(self.at)} -> {_names(self.heads)}"

    def refuse_newer(self, obj: str) -> None:
        """Raise :class:`SchemaMismatch` when a newer strongroom migrated this database."""
        if self.unknown:
            raise SchemaMismatch(
                f"the database is at schema revision {_names(self.unknown)}, which this "
                f"strongroom does not know (its newest is {_names(self.heads)}): a newer "
                "strongroom migrated it", obj=obj,
                remedy="run the strongroom release that migrated it (install it on this host); "
                "a database is never downgraded, so restore a backup taken before the upgrade "
                "to go back")

    def require(self, obj: str, *, allow_new: bool = False) -> None:
        """Raise :class:`SchemaMismatch` unless the database is current (or new, when allowed)."""
        self.refuse_newer(obj)
        if self.current or (allow_new and self.new):
            return
        if self.new:
            raise SchemaMismatch(
                "the database has no strongroom schema", obj=obj,
                remedy="`strongroom init` creates a vault in it; otherwise set STRONGROOM_HOME "
                "or STRONGROOM_DATABASE_URL to the vault's database")
        raise SchemaMismatch(
            f"the database is at schema revision {_names(self.at)}, older than this "
            f"strongroom's {_names(self.heads)}", obj=obj,
            remedy=f"take a backup, then run `{UPGRADE_COMMAND}` on the vault host (serve and "
            "the key agent never migrate a database on their own)")

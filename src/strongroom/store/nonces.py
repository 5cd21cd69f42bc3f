"""Spent request nonces kept in the database's table, shared by every host on it.

(:class:`StoreAttestNonces` keeps the gates' attestation nonces the same way:
every host on the database spends them, once.)

The server's RFC 9421 verifier (:mod:`strongroom.server.signatures`) refuses a
signed request whose nonce was already spent; this is where it remembers them
across hosts (the in-process one stays with the verifier; the workers of
one host share :class:`strongroom.server.nonce_table.SharedNonceTable`)::

    nonces = StoreNonceCache(store)            # every host on one database (``server_nonces``)
    nonces.spend(key_id, nonce, expires, now)  # False: already spent (a replay)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from strongroom.errors import InvalidInput

if TYPE_CHECKING:  # SQLAlchemy loads only when a database cache is made (CLI start-up)
    from strongroom.store.db import Store

__all__ = ["StoreAttestNonces", "StoreNonceCache"]


class StoreNonceCache:
    """Nonces shared by every host and worker on one database (table ``server_nonces``).

    The default when the server runs on a database other hosts can reach
    (PostgreSQL): a request replayed to another host within its window finds
    the nonce already spent there. One statement per request, insert-if-absent
    on (key id, nonce), reusing a row only once its window has closed; rows
    past their expiry are pruned every ``prune_every_s`` by whichever process
    gets there first.
    """

    #: spend() is a database round trip: the server calls it from its thread pool.
    inline = False

    def __init__(self, store: Store, *, prune_every_s: float = 10.0) -> None:
        from strongroom.store.tables.server import ServerNonce

        self.store = store
        self._table: Any = ServerNonce.__table__
        self._prune_every_s = prune_every_s
        self._next_prune = 0.0
        self._lock = threading.Lock()
        if store.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert: Any = pg_insert
        elif store.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert
        else:
            raise InvalidInput(f"no nonce cache for the {store.dialect} dialect",
                               obj=store.url, remedy="use PostgreSQL or SQLite")

    def spend(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """Insert the nonce; False when a live row already holds it (a replay)."""
        from sqlalchemy import delete
        from sqlalchemy.exc import SQLAlchemyError

        from strongroom.errors import StorageError

        table = self._table
        stmt = self._insert(table).values(key_id=key, nonce=nonce, expires=expires)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.key_id, table.c.nonce],
            set_={"expires": stmt.excluded.expires},
            where=table.c.expires <= now).returning(table.c.key_id)
        prune = False
        with self._lock:
            if now >= self._next_prune:
                self._next_prune = now + self._prune_every_s
                prune = True
        try:
            with self.store.engine.begin() as conn:
                if prune:
                    conn.execute(delete(table).where(table.c.expires <= now))
                spent = conn.execute(stmt).first() is not None
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot record the request nonce: {type(exc).__name__}",
                               obj="server_nonces",
                               remedy="check that the database is reachable, then retry"
                               ) from None
        return spent


class StoreAttestNonces:
    """The gates' attestation nonces on the database (table ``attest_nonces``).

    A :class:`strongroom.attest.nonces.NonceLedger`: :meth:`record` inserts the
    row at issue; :meth:`spend` marks it spent in one ``UPDATE … WHERE spent IS
    NULL AND expires > now`` (atomic on SQLite and PostgreSQL: of two hosts
    racing, one updates the row, the other finds none). The row is trusted for
    nothing else: the nonce's MAC and expiry are checked before it is read.
    """

    def __init__(self, store: Store, *, prune_every_s: float = 60.0) -> None:
        from strongroom.store.tables.attest import AttestNonce

        self.store = store
        self._table: Any = AttestNonce.__table__
        self._prune_every_s = prune_every_s
        self._next_prune = 0.0
        self._lock = threading.Lock()

    def _storage_error(self, what: str, exc: Exception) -> Exception:
        from strongroom.errors import StorageError

        return StorageError(f"cannot {what} the attestation nonce: {type(exc).__name__}",
                            obj="attest_nonces",
                            remedy="check that the database is reachable, then retry")

    def record(self, nonce_id: str, expires: float, now: float) -> None:
        """Insert the issued nonce's row (pruning rows long expired now and then)."""
        from sqlalchemy import delete, insert
        from sqlalchemy.exc import SQLAlchemyError

        table = self._table
        with self._lock:
            prune = now >= self._next_prune
            if prune:
                self._next_prune = now + self._prune_every_s
        try:
            with self.store.engine.begin() as conn:
                if prune:
                    conn.execute(delete(table).where(table.c.expires <= now))
                conn.execute(insert(table).values(nonce_id=nonce_id, expires=expires))
        except SQLAlchemyError as exc:
            raise self._storage_error("record", exc) from None

    def spend(self, nonce_id: str, now: float) -> bool:
        """Mark the nonce spent; False when its row is absent, expired or already spent."""
        from sqlalchemy import update
        from sqlalchemy.exc import SQLAlchemyError

        table = self._table
        stmt = (update(table)
                .where(table.c.nonce_id == nonce_id, table.c.spent.is_(None),
                       table.c.expires > now)
                .values(spent=now))
        try:
            with self.store.engine.begin() as conn:
                return conn.execute(stmt).rowcount == 1
        except SQLAlchemyError as exc:
            raise self._storage_error("spend", exc) from None

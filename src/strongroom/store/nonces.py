"""Spent request nonces kept in the database's table, shared by every host on it.

(:class:`StoreAttestNonces` keeps the gates' attestation nonces the same way:
every host on the database spends them, once.)

The server's RFC 9421 verifier (:mod:`strongroom.server.signatures`) refuses a
signed request whose nonce was already spent; this is where it remembers them
across hosts (the in-process one stays with the verifier; the workers of
one host share :class:`strongroom.server.nonce_table.SharedNonceTable`)::

    nonces = StoreNonceCache(store)            # every host on one database (``server_nonces``)
    nonces.spend(key_id, nonce, expires, now)  # False: already spent (a replay)
    await nonces.spend_async(key_id, nonce, expires, now)  # PostgreSQL, on a server's loop

On PostgreSQL a spend is one statement on connections of the cache's own
(psycopg, autocommit, prepared), not SQLAlchemy's pool: ``spend_async`` awaits
it on the caller's event loop (the spends of concurrent requests in one round
trip), ``spend`` blocks a thread on it. Those
connections commit with ``synchronous_commit = off``: another host sees the
nonce as soon as the statement returns, and only a crash of PostgreSQL itself
can lose the spends of its last moments (at most three times its
``wal_writer_delay``, 0.6 s by default) -- the durability the host's mapped
table (:mod:`strongroom.server.nonce_table`) has against an operating-system
crash. A key release does not rest on it: its evidence nonce is spent in the
release's own audit transaction, which commits synchronously. Measured on a
2-vCPU machine (docs/operations.md): the SQLAlchemy transaction per request
cost the workers ~1.3 ms of CPU and a WAL flush of latency per signed request.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import TYPE_CHECKING, Any

from strongroom.errors import InvalidInput, StorageError

if TYPE_CHECKING:  # SQLAlchemy loads only when a database cache is made (CLI start-up)
    import psycopg

    from strongroom.store.db import Store

__all__ = ["StoreAttestNonces", "StoreNonceCache"]


_PG_PRUNE = "DELETE FROM server_nonces WHERE expires <= %s"


@functools.lru_cache(maxsize=64)
def _pg_spend(n: int) -> str:
    """PostgreSQL: spend ``n`` distinct (key id, nonce) rows (a row whose window closed is
    taken over; the last parameter is now); the pairs returned are the ones spent now."""
    rows = ", ".join(["(%s, %s, %s)"] * n)
    return ("INSERT INTO server_nonces (key_id, nonce, expires) VALUES " + rows  # noqa: S608
            + " ON CONFLICT (key_id, nonce) DO UPDATE SET expires = EXCLUDED.expires "
            "WHERE server_nonces.expires <= %s RETURNING key_id, nonce")


#: Settings of each of the cache's own PostgreSQL connections (libpq ``options``: set
#: as it connects, no statement of their own).
_PG_SESSION = "-c synchronous_commit=off -c statement_timeout=5s -c lock_timeout=5s"
#: Idle connections :meth:`StoreNonceCache.spend` keeps (spend_async has one per loop).
_KEEP = 8


def _unreachable(exc: BaseException) -> StorageError:
    return StorageError(f"cannot record the request nonce: {type(exc).__name__}",
                        obj="server_nonces",
                        remedy="check that the database is reachable, then retry")


#: Spends one ``spend_async`` batch carries at most (one statement).
_BATCH = 64
#: A spend waiting for its batch: its arguments and its caller's future.
_Queued = tuple[tuple[str, str, float, float], "asyncio.Future[bool]"]


class _LoopSpends:
    """One event loop's :meth:`StoreNonceCache.spend_async` state: its connection, the
    spends queued while a batch is out, the batch's task (referenced while it runs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.queued: list[_Queued] = []
        self.task: asyncio.Task[None] | None = None

    def forget(self) -> None:
        """Close the idle connection from outside its loop (libpq's close, no loop needed)."""
        if self.conn is not None and self.task is None:
            conn, self.conn = self.conn, None
            conn.pgconn.finish()


class StoreNonceCache:
    """Nonces shared by every host and worker on one database (table ``server_nonces``).

    The default when the server runs on a database other hosts can reach
    (PostgreSQL): a request replayed to another host within its window finds
    the nonce already spent there. One statement per request, insert-if-absent
    on (key id, nonce), reusing a row only once its window has closed; rows
    past their expiry are pruned every ``prune_every_s`` by whichever process
    gets there first.
    """

    #: spend() is a database round trip: the server calls it from its thread pool
    #: (spend_async, on PostgreSQL, awaits it on the event loop instead).
    inline = False

    def __init__(self, store: Store, *, prune_every_s: float = 10.0) -> None:
        from strongroom.store.tables.server import ServerNonce

        self.store = store
        self._table: Any = ServerNonce.__table__
        self._prune_every_s = prune_every_s
        self._next_prune = 0.0
        self._lock = threading.Lock()
        self._pg = store.dialect == "postgresql"
        self._idle: list[psycopg.Connection[Any]] = []  # spend()'s, PostgreSQL
        self._loop: _LoopSpends | None = None  # spend_async()'s
        self._closed = False
        if store.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert: Any = sqlite_insert
        elif not self._pg:
            raise InvalidInput(f"no nonce cache for the {store.dialect} dialect",
                               obj=store.url, remedy="use PostgreSQL or SQLite")

    @property
    def asynchronous(self) -> bool:
        """Whether :meth:`spend_async` is offered (PostgreSQL)."""
        return self._pg

    def _prune_due(self, now: float) -> bool:
        with self._lock:
            if now >= self._next_prune:
                self._next_prune = now + self._prune_every_s
                return True
            return False

    def _connect_args(self) -> dict[str, Any]:
        engine = self.store.engine
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # SQLAlchemy's adapters: the driver's own are wanted
        params["autocommit"] = True
        params["options"] = f"{params.get('options', '')} {_PG_SESSION}".strip()
        return dict(params)

    async def spend_async(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """:meth:`spend` awaited on the running event loop (PostgreSQL only).

        Spends asked for while a batch is out go together in the next one: one
        statement on the loop's connection, one round trip (a lone spend goes at
        once); psycopg's asyncio path costs ~200 us of CPU a statement. A nonce
        twice in one batch is spent by the first asker only.
        A caller cancelled meanwhile (its client gone) leaves its spend to finish.
        One event loop at a time (a server worker's): another loop starts afresh.
        """
        if not self._pg:
            raise InvalidInput("spend_async needs PostgreSQL", obj=self.store.url,
                               remedy="call spend()")
        loop = asyncio.get_running_loop()
        state = self._loop
        if state is None or state.loop is not loop:  # a connection belongs to its loop
            if state is not None:
                state.forget()  # the old loop's connection
            state = self._loop = _LoopSpends(loop)
        future: asyncio.Future[bool] = loop.create_future()
        state.queued.append(((key, nonce, expires, now), future))
        if state.task is None:
            state.task = loop.create_task(self._send(state))
        return await future

    async def _send(self, state: _LoopSpends) -> None:
        """Run the queued spends, batch after batch, until none is left."""
        try:
            while state.queued:
                batch, state.queued = state.queued[:_BATCH], state.queued[_BATCH:]
                try:
                    spent = await self._run(state, [args for args, _ in batch])
                except Exception as exc:
                    failure = exc if isinstance(exc, StorageError) else _unreachable(exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                except BaseException:  # the loop is closing: nobody waits any longer
                    for _, future in batch + state.queued:
                        future.cancel()
                    state.queued = []
                    raise
                for (_, future), answer in zip(batch, spent, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            state.task = None

    async def _run(self, state: _LoopSpends, spends: list[tuple[str, str, float, float]]
                   ) -> list[bool]:
        """One batch's statements on the loop's connection (opened when needed)."""
        import psycopg

        conn = state.conn
        try:
            if conn is None or conn.closed:
                state.conn = None
                conn = state.conn = await psycopg.AsyncConnection.connect(
                    **self._connect_args())
            earliest = min(now for *_, now in spends)
            if self._prune_due(earliest):
                await conn.execute(_PG_PRUNE, (earliest,))
            # One statement for the batch: each (key id, nonce) once (a second one in the
            # batch is a replay of the first), every row judged by the earliest clock.
            first: dict[tuple[str, str], float] = {}
            for key, nonce, expires, _ in spends:
                first.setdefault((key, nonce), expires)
            params: list[Any] = []
            for (key, nonce), expires in first.items():
                params += (key, nonce, expires)
            cur = await conn.execute(_pg_spend(len(first)), [*params, earliest])
            spent = {(str(k), str(n)) for k, n in await cur.fetchall()}
        except BaseException:  # whatever state it was left in goes with it
            state.conn = None
            if conn is not None:
                await conn.close()
            raise
        answers: list[bool] = []
        for key, nonce, *_ in spends:  # the first asker of a pair gets it, once
            answers.append((key, nonce) in spent)
            spent.discard((key, nonce))
        return answers

    def _spend_pg(self, key: str, nonce: str, expires: float, now: float) -> bool:
        import psycopg

        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None or conn.closed:
                conn = psycopg.Connection.connect(**self._connect_args())
            if self._prune_due(now):
                conn.execute(_PG_PRUNE, (now,))
            spent = conn.execute(_pg_spend(1), (key, nonce, expires, now)).fetchone() is not None
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise _unreachable(exc) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        with self._lock:
            if len(self._idle) < _KEEP and not self._closed:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()
        return spent

    async def aclose(self) -> None:
        """Close this event loop's connection of :meth:`spend_async` (it reopens when needed)."""
        state = self._loop
        if (state is not None and state.loop is asyncio.get_running_loop()
                and state.conn is not None):
            conn, state.conn = state.conn, None
            await conn.close()

    def close(self) -> None:
        """Close the cache's connections: those of :meth:`spend`, and the last event loop's
        of :meth:`spend_async` (its socket, from any thread; :meth:`aclose` on the loop)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._loop is not None:
            self._loop.forget()

    def spend(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """Insert the nonce; False when a live row already holds it (a replay)."""
        if self._pg:
            return self._spend_pg(key, nonce, expires, now)
        from sqlalchemy import delete
        from sqlalchemy.exc import SQLAlchemyError

        table = self._table
        stmt = self._insert(table).values(key_id=key, nonce=nonce, expires=expires)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.key_id, table.c.nonce],
            set_={"expires": stmt.excluded.expires},
            where=table.c.expires <= now).returning(table.c.key_id)
        prune = self._prune_due(now)
        try:
            with self.store.engine.begin() as conn:
                if prune:
                    conn.execute(delete(table).where(table.c.expires <= now))
                spent = conn.execute(stmt).first() is not None
        except SQLAlchemyError as exc:
            raise _unreachable(exc) from None
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

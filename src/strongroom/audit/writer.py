"""The group-commit writer: every queued audit append commits in one transaction.

Appends from any number of threads are queued; the first caller that waits
while no commit is under way becomes the batch's *leader* and commits
everything queued in one transaction (one fsync) on its own thread, then wakes
the other callers (followers) with their indices and, when more appends queued
meanwhile, makes one of their callers the next leader. No thread of its own:
an append that finds the writer idle commits without a hand-off between
threads. The batch transaction first locks the single
``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serialises writers), waiting at most ``lock_timeout`` for
it, reads the size and extends the stored tree from there; the in-memory
frontier is reloaded whenever another process moved the head. Conditional
appends hand a claim to an :class:`AppendGuard` that decides it inside that
same transaction; on PostgreSQL a :class:`PipelinedGuard` (the egress meter)
sends its statements with the writer's own, so a release batch's transaction
takes three round trips (locks and reads; entries, nodes, head and the guard's
rows in one statement; commit). :class:`strongroom.audit.log.AuditLog` owns one writer::

    writer = GroupCommitWriter(store, tree, encoder.refusal, origin=origin)
    batch, offset = writer.enqueue([encoder.encode(...)])
    index = writer.wait(batch, offset, 1)[0]     # durable, or AuditUnavailable
    writer.close()                               # commits what is still queued
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

from sqlalchemy import Connection

from strongroom.audit.entry import EncodedEntry
from strongroom.audit.merkle import Frontier
from strongroom.audit.recent import RecentEntries
from strongroom.audit.tree import StoredTree
from strongroom.errors import AuditUnavailable
from strongroom.store.db import Store, dbapi_errors, writer_engine
from strongroom.store.pg_arrays import ByteaArray, Int2Array, Int8Array

__all__ = [
    "APPEND_TIMEOUT_S",
    "COMMIT_DELAY_S",
    "LOCK_TIMEOUT_S",
    "AppendGuard",
    "GroupCommitWriter",
    "PendingAppend",
    "PipelinedGuard",
]

log = logging.getLogger(__name__)

#: How long an append waits for its batch to commit before refusing.
APPEND_TIMEOUT_S = 30.0
#: How long the writer holds a batch open for appends announced with
#: :meth:`GroupCommitWriter.expecting` (PostgreSQL's ``commit_delay``, bounded), seconds.
COMMIT_DELAY_S = 0.002
#: How long a batch waits for the database's write lock (SQLite busy timeout,
#: PostgreSQL ``lock_timeout`` and ``statement_timeout``) before it is refused, seconds.
LOCK_TIMEOUT_S = 5.0
#: A PostgreSQL connection idle this long is pinged before its next batch, seconds.
_PING_AFTER_S = 1.0
#: PostgreSQL: the batch transaction's bounds on lock waits and statements (local to it).
_SET_BOUNDS = ("SELECT set_config('lock_timeout', %s, true), "
               "set_config('statement_timeout', %s, true)")
#: PostgreSQL: a batch's entries, nodes and head move in one statement.
_WRITE_BATCH = (
    "WITH e AS (INSERT INTO audit_entries (idx, leaf_hash, body) "
    "SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[])), "
    "n AS (INSERT INTO audit_nodes (level, idx, hash) "
    "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])) "
    "UPDATE audit_head SET size = %s, root = %s WHERE id = 1 AND size = %s")
#: A leader lets the callers its predecessor woke join its batch (_let_join) when that
#: batch woke this many or more, for at most this many turns of the GIL.
_LET_JOIN_AFTER = 8
_LET_JOIN_TURNS = 4
#: Refusals kept in memory while the store cannot take them (oldest dropped beyond).
_MAX_UNRECORDED = 10_000


def _with(parts: Sequence[tuple[str, Sequence[Any]]], statement: str) -> str:
    """``statement`` with the data-modifying ``parts`` run as its first ``WITH`` queries."""
    named = ", ".join(f"g{i} AS ({sql})" for i, (sql, _) in enumerate(parts))
    if statement.startswith("WITH "):
        return f"WITH {named}, {statement.removeprefix('WITH ')}"
    return f"WITH {named} {statement}"


class AppendGuard(Protocol):
    """Decides conditional appends inside the batch's transaction (:meth:`AuditLog.append_if`)."""

    def admit(self, conn: Connection, claims: Sequence[Any]) -> Sequence[bool]:
        """Decide ``claims`` in order; True keeps the claim's entry, False drops it.

        Runs on the batch leader's thread inside the batch's transaction, after the
        audit head is locked, and may write through ``conn``: those rows commit
        with the entries or not at all. Raising fails the whole batch (every
        append in it gets :class:`AuditUnavailable`).
        """
        ...

    def settle(self, claims: Sequence[Any], committed: bool) -> None:
        """Called once the transaction is over: ``committed`` is False when it failed
        or its outcome is unknown (forget anything cached from :meth:`admit`)."""
        ...


class PipelinedGuard(AppendGuard, Protocol):
    """An :class:`AppendGuard` whose statements ride on the batch's own statements (PostgreSQL).

    The writer sends :meth:`queue_first`'s statements in the pipeline that begins the
    batch's transaction, after the transaction's lock bounds and the audit head's
    lock (run in that order: each a consistent read of its own once the locks before
    it are held), and hands what it returned to :meth:`admit`; once the guard has
    decided, the data-modifying statements :meth:`writes` names run as parts
    (``WITH``) of the statement that writes the batch's entries and moves the head,
    or on their own when no entry is written. A statement of either that fails
    fails the batch, as one run by :meth:`AppendGuard.admit` would. Elsewhere
    (SQLite) the writer calls ``admit(conn, claims)`` alone.
    """

    def queue_first(self, conn: Connection, claims: Sequence[Any]) -> Any:
        """Send (not await) the statements the decision needs first; returned to admit."""
        ...

    def admit(self, conn: Connection, claims: Sequence[Any], queued: Any = None
              ) -> Sequence[bool]:
        """:meth:`AppendGuard.admit`, with what :meth:`queue_first` returned."""
        ...

    def writes(self, queued: Any) -> Sequence[tuple[str, Sequence[Any]]]:
        """What :meth:`admit` decided to write: INSERT or UPDATE statements (no RETURNING,
        ``%s`` placeholders) and their parameters."""
        ...


class _Done:
    """A batch's outcome: a flag, and each waiting appender's own lock.

    ``threading.Event.set`` notifies a shared condition: with 64 appenders
    waiting, its O(n^2) notify and each waiter re-taking the condition's lock in
    turn cost more than the batch's own inserts. Here each waiter blocks on a
    lock of its own, which the leader releases. The writer's ``_lock`` guards
    ``flag`` and ``waiters``.
    """

    __slots__ = ("flag", "waiters")

    def __init__(self) -> None:
        self.flag = False
        self.waiters: list[Any] = []


class _Batch:
    """Appends that will commit together: one wake-up for all of them."""

    __slots__ = ("done", "error", "first", "groups", "guarded", "indices", "items")

    def __init__(self) -> None:
        self.items: list[EncodedEntry] = []
        # (position in items, guard, claim) of each conditional append
        self.guarded: list[tuple[int, AppendGuard, Any]] = []
        # ``guarded`` by guard, made once the batch is closed (admit, then settle).
        self.groups: list[tuple[AppendGuard, list[int], list[Any]]] | None = None
        self.done = _Done()
        self.first = -1
        # Each item's index (-1: refused by its guard) when a guard dropped any item.
        self.indices: list[int] | None = None
        self.error: BaseException | None = None


class PendingAppend:
    """An append queued by :meth:`AuditLog.submit`."""

    __slots__ = ("_batch", "_offset", "_writer")

    def __init__(self, writer: GroupCommitWriter, batch: _Batch, offset: int) -> None:
        self._writer = writer
        self._batch = batch
        self._offset = offset

    def result(self) -> int:
        """Wait until the entry is durable; its index (raises AuditUnavailable)."""
        index = self._writer.wait(self._batch, self._offset, 1)[0]
        assert index is not None  # only guarded appends are ever dropped
        return index


def lock_timed_out(exc: BaseException | None) -> bool:
    """Whether a database error is a lock wait past its bound (SQLite busy, PostgreSQL timeouts).

    ``exc`` is an SQLAlchemy error (its driver error in ``orig``) or the driver's own.
    """
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in ("55P03", "57014"):  # lock_not_available, query_canceled
        return True
    return getattr(orig, "sqlite_errorcode", None) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class GroupCommitWriter:
    """The queue and its leader/follower commits; ``refusal`` turns a failed entry into a refusal."""

    def __init__(
        self,
        store: Store,
        tree: StoredTree,
        refusal: Callable[[EncodedEntry, BaseException], EncodedEntry],
        *,
        origin: str,
        append_timeout: float = APPEND_TIMEOUT_S,
        commit_delay: float = COMMIT_DELAY_S,
        lock_timeout: float = LOCK_TIMEOUT_S,
        recent: RecentEntries | None = None,
    ) -> None:
        self.store = store
        #: Where committed entries go, for the log's followers to read without the database.
        self.recent = recent
        self.tree = tree
        self.origin = origin
        self.append_timeout = append_timeout
        self.commit_delay = commit_delay
        self.lock_timeout = lock_timeout
        self._refusal = refusal
        #: Called after each committed batch with (entries, seconds the commit took); metrics.
        self.on_commit: Callable[[int, float], None] | None = None
        self._pg = store.dialect == "postgresql"
        # Statements are built from constants and placeholders only (no values).
        mark = "%s" if self._pg else "?"
        # The statement that writes a batch's entries: on PostgreSQL the one that writes
        # its entries, nodes and head together (_WRITE_BATCH); per row elsewhere.
        self._insert_entry = _WRITE_BATCH if self._pg else (
            f"INSERT INTO audit_entries (idx, leaf_hash, body) VALUES ({mark}, {mark}, {mark})"  # noqa: S608
        )
        self._insert_node = (
            f"INSERT INTO audit_nodes (level, idx, hash) VALUES ({mark}, {mark}, {mark})"  # noqa: S608
        )
        lock = " FOR UPDATE" if self._pg else ""
        self._select_size = f"SELECT size FROM audit_head WHERE id = 1{lock}"  # noqa: S608
        self._move_head = (
            f"UPDATE audit_head SET size = {mark}, root = {mark} "  # noqa: S608
            f"WHERE id = 1 AND size = {mark}"
        )
        self._frontier: Frontier | None = None
        # The writer's own connection, kept between batches (see _connection), and
        # whether the leader emits SQLite's BEGIN IMMEDIATE itself (store.db.writer_engine).
        self._conn: Connection | None = None
        # The driver's connection and cursors of it, kept with ``_conn`` (reached through
        # SQLAlchemy's wrappers once, not per commit): SQLite with BEGIN IMMEDIATE on the
        # driver (_begin_raw) uses ``_cur``; PostgreSQL ``_cur`` and ``_bounds``, whose
        # psycopg adaptation state (the dumpers each parameter needs) lives on with them
        # instead of being found again for every batch.
        self._raw: Any = None
        self._cur: Any = None
        self._bounds: Any = None
        self._engine, self._begin_raw = writer_engine(store)
        self._used = 0.0  # when the connection last ran a batch (monotonic)
        self._db_errors = dbapi_errors(store.engine)  # SQLAlchemy's and the driver's
        # Entries of failed batches, turned into refusals: they ride on the next batch.
        self._unrecorded: list[EncodedEntry] = []
        # Guards the open batch, the leader's state and every batch's _Done.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # a gathering leader waits on it
        self._batch = _Batch()  # the open batch: appends queue here
        self._inflight: _Batch | None = None  # the batch a leader is committing
        self._closed = False
        self._expected = 0  # announced appends (expecting()) not yet enqueued
        self._gathering = False
        self._announced = threading.local()
        self._woken = 0  # callers the last finished batch woke (_let_join)

    # -- callers --------------------------------------------------------------

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce that this thread will append soon (see :meth:`AuditLog.expecting`)."""
        with self._lock:
            self._expected += 1
        self._announced.pending = True
        try:
            yield
        finally:
            if getattr(self._announced, "pending", False):
                self._announced.pending = False
                with self._lock:
                    self._expected -= 1
                    if self._gathering:
                        self._wake.notify()

    def enqueue(
        self, items: list[EncodedEntry], guarded: tuple[AppendGuard, Any] | None = None,
        *, claims: Sequence[tuple[int, AppendGuard, Any]] = (),
    ) -> tuple[_Batch, int]:
        """Queue ``items``; their batch and first offset in it.

        ``guarded`` is the first item's guard and claim; ``claims`` gives
        (position in ``items``, guard, claim) for several, all in one batch.
        """
        with self._lock:
            return self._queue(items, guarded, claims)

    def _queue(self, items: list[EncodedEntry], guarded: tuple[AppendGuard, Any] | None,
               claims: Sequence[tuple[int, AppendGuard, Any]]) -> tuple[_Batch, int]:
        """:meth:`enqueue` with the lock held."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed", remedy="open the log again")
        # No thread announced an append (expecting()): this one did not either, and the
        # thread-local flag is not read (a missing attribute raises inside getattr).
        if self._expected and getattr(self._announced, "pending", False):
            self._announced.pending = False
            self._expected -= 1
        batch = self._batch
        offset = len(batch.items)
        batch.items.extend(items)
        if guarded is not None:
            batch.guarded.append((offset, *guarded))
        if claims:
            batch.guarded.extend((offset + i, guard, claim) for i, guard, claim in claims)
        if self._gathering:
            self._wake.notify()
        return batch, offset

    def append(
        self, items: list[EncodedEntry], guarded: tuple[AppendGuard, Any] | None = None,
        *, claims: Sequence[tuple[int, AppendGuard, Any]] = (),
    ) -> list[int | None]:
        """:meth:`enqueue` then :meth:`wait` for all of ``items``, taking the lock once.

        With 64 appenders the writer's lock is contended: queueing and, when a
        commit is under way, registering as its follower in one hold of it
        halves the lock traffic of an append.
        """
        batch, offset, waiter = self._join(items, guarded, claims)
        if waiter is None:
            self._lead()
        return self._await(batch, offset, len(items), waiter)

    def _join(self, items: list[EncodedEntry], guarded: tuple[AppendGuard, Any] | None,
              claims: Sequence[tuple[int, AppendGuard, Any]]) -> tuple[_Batch, int, Any]:
        """Queue ``items`` and, in the same hold of the lock, lead (waiter None) or follow."""
        with self._lock:
            batch, offset = self._queue(items, guarded, claims)
            if self._inflight is None:
                self._inflight = batch  # this thread leads it: claimed under the lock
                return batch, offset, None
            waiter = _allocate_lock()
            waiter.acquire()
            batch.done.waiters.append(waiter)
            return batch, offset, waiter

    def append_one(self, item: EncodedEntry) -> int:
        """:meth:`append` of one unconditional item: its index once durable.

        Every :meth:`AuditLog.append` comes here: the same queueing and waiting as
        :meth:`append`, without the lists around one item; a follower woken with its
        batch committed returns its index straight away.
        """
        batch, offset, waiter = self._join([item], None, ())
        if waiter is None:
            self._lead()
        elif not waiter.acquire(timeout=self.append_timeout):
            return self._index(self._await(batch, offset, 1, waiter, expired=True))
        if batch.done.flag and batch.error is None and batch.indices is None:
            return batch.first + offset
        # Made the next leader (or the batch failed): the general path.
        return self._index(self._await(batch, offset, 1, None))

    @staticmethod
    def _index(found: list[int | None]) -> int:
        index = found[0]
        assert index is not None  # only guarded appends are ever dropped
        return index

    def pending(self, batch: _Batch, offset: int) -> PendingAppend:
        """A handle that waits for the item at ``offset`` of ``batch``."""
        return PendingAppend(self, batch, offset)

    def wait(self, batch: _Batch, offset: int, count: int) -> list[int | None]:
        """The indices of ``count`` items from ``offset`` once durable (None: guard refused).

        Leads the commit itself when ``batch`` is still open and no commit is
        under way; otherwise waits for the leader that has it, or to be made the
        next one.
        """
        return self._await(batch, offset, count, None)

    def _await(self, batch: _Batch, offset: int, count: int, waiter: Any, *,
               expired: bool = False) -> list[int | None]:
        """:meth:`wait`, ``waiter`` already registered with the batch (or None).

        ``expired``: the caller already waited ``append_timeout`` on ``waiter`` in vain.
        """
        done = batch.done
        lock = self._lock
        deadline = -1.0 if expired else 0.0
        while not done.flag:
            if waiter is None:
                with lock:
                    if done.flag:
                        break
                    lead = self._inflight is None and batch is self._batch
                    if lead:
                        self._inflight = batch  # claimed under the lock
                    else:
                        waiter = _allocate_lock()
                        waiter.acquire()
                        done.waiters.append(waiter)
                if lead:
                    self._lead()
                    continue
            if not deadline:
                deadline = time.monotonic() + self.append_timeout
            left = deadline - time.monotonic()
            if left > 0 and waiter.acquire(timeout=left):
                waiter = None
                continue  # done, or made the next leader (then the loop leads)
            with lock:
                try:
                    done.waiters.remove(waiter)
                except ValueError:  # released meanwhile: done, or made the leader
                    waiter = None
                    continue
            raise AuditUnavailable(
                f"audit append not durable after {self.append_timeout:.0f} s",
                obj=self.store.url,
            )
        if batch.error is not None:
            if isinstance(batch.error, AuditUnavailable):
                raise AuditUnavailable(batch.error.message, obj=batch.error.obj,
                                       remedy=batch.error.remedy) from batch.error
            raise AuditUnavailable(
                f"audit append failed: {type(batch.error).__name__}: {batch.error}",
                obj=self.store.url,
            ) from batch.error
        if batch.indices is not None:
            return [None if i < 0 else i for i in batch.indices[offset:offset + count]]
        first = batch.first + offset
        return list(range(first, first + count))

    def close(self) -> None:
        """Commit what is queued (after any commit under way), then let the connection go."""
        with self._lock:
            self._closed = True
            self._wake.notify()  # a gathering leader commits now
        while True:
            with self._lock:
                batch = self._inflight or self._batch
                if batch is self._batch and not batch.items:
                    break
            with contextlib.suppress(AuditUnavailable):  # its callers got the error
                self.wait(batch, 0, 0)
        self._drop(reuse=True)
        if self._engine is not self.store.engine:
            self._engine.dispose()

    # -- the leader -----------------------------------------------------------

    def _gather(self) -> None:
        """With the lock held and a batch waiting: let announced appends join it (bounded)."""
        if self.commit_delay <= 0 or self._expected <= 0:
            return
        deadline = time.monotonic() + self.commit_delay
        self._gathering = True
        try:
            while self._expected > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
        finally:
            self._gathering = False

    def _let_join(self, woken: int) -> None:
        """Before this leader takes its batch: let the callers just woken append again.

        Many synchronous callers (threads that append in a loop) otherwise split into
        two halves that alternate: the callers of the last batch, woken, need the GIL
        to queue their next appends, while the leader, holding it, commits the batch
        without them. Letting the GIL go (``time.sleep(0)``) a few times while the
        batch grows towards the woken callers' number joins them (a 64-thread loop
        then commits ~56 entries a batch, not ~31, and spends less CPU an append); as
        soon as a turn adds nothing (callers that do not append again) it commits.
        Only after a batch that woke ``_LET_JOIN_AFTER`` callers or more.
        """
        if woken < _LET_JOIN_AFTER:
            return
        items = self._batch.items
        want = len(items) + woken
        for _ in range(_LET_JOIN_TURNS):
            had = len(items)
            time.sleep(0)  # the GIL: the woken callers queue meanwhile
            if len(items) >= want or len(items) == had:
                return

    def _lead(self) -> None:
        """Commit the open batch on this thread.

        The caller made the open batch the one in flight under the lock (so no
        other thread leads meanwhile); appends still join it while the leader
        gathers. Once it is over every follower is woken and, when appends
        queued meanwhile, one of their callers is made the next leader.
        """
        woken = self._woken
        if woken:
            self._woken = 0
            self._let_join(woken)
        with self._lock:
            batch = self._batch  # the one in flight
            try:
                if self._expected > 0:
                    self._gather()
            finally:
                self._batch = _Batch()
                carried, self._unrecorded = self._unrecorded, []
        own = len(batch.items)
        batch.items.extend(carried)  # after the callers' items: their offsets stand
        committed = False
        started = time.perf_counter()
        try:
            batch.first = self._commit(batch)
            committed = True
        except BaseException as exc:  # every failure reaches the callers: fail closed
            self._frontier = None
            batch.error = exc
            log.error("audit batch of %d entries failed: %s", len(batch.items), exc)
            # Refused before anything was written (the locks were never had): recorded
            # as refusals by the next batch that commits.
            refused = ([self._refusal(item, exc) for item in batch.items[:own]]
                       if lock_timed_out(exc.__cause__) else [])
            with self._lock:
                self._unrecorded[:0] = carried + refused
                del self._unrecorded[:-_MAX_UNRECORDED]
        finally:
            took = time.perf_counter() - started
            try:
                if batch.guarded:
                    self._settle(batch, committed)
            finally:
                self._finish(batch)
        if committed and self.on_commit is not None:  # after the wake-ups
            try:
                self.on_commit(len(batch.items), took)
            except Exception:  # a metric must never fail an append
                log.exception("the audit commit observer failed")

    def _finish(self, batch: _Batch) -> None:
        """Mark ``batch`` done, make a caller of the next one its leader, wake the followers."""
        with self._lock:
            done = batch.done
            done.flag = True
            waiters, done.waiters = done.waiters, []
            self._inflight = None
            following = self._batch.done.waiters
            # The longest waiter of the next batch leads it (its loop finds the writer idle).
            nxt = following.pop(0) if following and self._batch.items else None
            self._woken = len(waiters)
        if nxt is not None:
            nxt.release()
        for waiter in waiters:
            waiter.release()

    def _connection(self) -> Connection:
        """The writer's connection: opened once, kept between batches.

        Checking a pooled connection out and back in (with its reset, and the lock
        bound set and restored each time) cost more than the batch's own
        statements; only the batch's leader uses it, one leader at a time. SQLite's busy timeout is set to the
        bound once; PostgreSQL's bounds are set per transaction (``set_config(...,
        true)``), so nothing of the writer's leaks into the pool.
        """
        conn = self._conn
        if conn is not None and not conn.closed and not conn.invalidated:
            if not self._pg or time.monotonic() - self._used < _PING_AFTER_S or self._alive(conn):
                return conn
            self._drop()  # the server went away while idle (what the pool's pre-ping caught)
        conn = self._engine.connect()
        if not self._pg:
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                f"PRAGMA busy_timeout={max(1, int(self.lock_timeout * 1000))}")
        self._conn = conn
        return conn

    def _alive(self, conn: Connection) -> bool:
        """Whether an idle PostgreSQL connection still answers (the pool's pre-ping)."""
        raw = conn.connection.dbapi_connection
        try:
            return raw is not None and bool(self._engine.dialect.do_ping(raw))
        except self._db_errors:
            return False

    def _drop(self, *, reuse: bool = False) -> None:
        """Let go of the writer's connection: back to the pool (``reuse``), else discarded.

        After a failed batch it is discarded: whatever state the failure left it in
        (a lost server, a half-finished transaction) goes with it.
        """
        conn, self._conn = self._conn, None
        cursors = (self._cur, self._bounds)
        self._cur, self._bounds, self._raw = None, None, None
        for cur in cursors:
            if cur is None:
                continue
            # First: a statement a cursor still holds (a failed one) would keep the driver's
            # connection, and its open transaction with SQLite's write lock, past close().
            with contextlib.suppress(Exception):
                cur.close()
        if conn is None or conn.closed:
            return
        shared = self._engine is self.store.engine
        with contextlib.suppress(Exception):  # it is being let go either way
            if reuse and shared and not self._pg and not conn.invalidated:
                conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA busy_timeout=30000")  # the store's own setting (store/db.py)
            elif not reuse:
                conn.invalidate()
            conn.close()

    @contextlib.contextmanager
    def _write_tx(self, what: str) -> Iterator[Connection]:
        """A write transaction that waits at most ``lock_timeout`` for the database's locks.

        Whoever holds SQLite's write lock or PostgreSQL's row locks (the audit
        head, the egress ledger) can otherwise stall every release: past the
        bound the batch is refused with :class:`AuditUnavailable`.
        """
        try:
            conn = self._connection()
            try:
                if self._begin_raw:
                    # SQLite: the transaction on the DB-API connection alone (BEGIN IMMEDIATE,
                    # under the bound; SQLAlchemy's begin and commit around it cost ~10 us a
                    # commit). A guard whose SQLAlchemy statement began a transaction on
                    # ``conn`` meanwhile ends it (the driver's commit) through SQLAlchemy.
                    raw = conn.connection.dbapi_connection
                    raw.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
                    yield conn
                    if conn.in_transaction():
                        conn.commit()
                    else:
                        raw.commit()  # type: ignore[union-attr]
                else:
                    # PostgreSQL: _extend sets the bounds (lock_timeout, statement_timeout) in
                    # the transaction's first round trip, before it locks the head.
                    with conn.begin():
                        yield conn
            except BaseException:  # discarded: SQLite rolls back what the failure left open
                self._drop()
                raise
            finally:
                self._used = time.monotonic()
        except self._db_errors as exc:
            if lock_timed_out(exc):
                raise self._locked(what) from exc
            raise self.tree.failed(what, exc) from exc

    @staticmethod
    def _by_guard(batch: _Batch) -> list[tuple[AppendGuard, list[int], list[Any]]]:
        """The closed batch's claims grouped by guard, in order (made once, kept on it)."""
        if batch.groups is not None:
            return batch.groups
        guarded = batch.guarded
        first = guarded[0][1]
        if all(g is first for _, g, _ in guarded):  # one guard: every release batch
            batch.groups = [(first, [o for o, _, _ in guarded], [c for _, _, c in guarded])]
            return batch.groups
        groups: dict[int, tuple[AppendGuard, list[int], list[Any]]] = {}
        for offset, guard, claim in guarded:
            group = groups.setdefault(id(guard), (guard, [], []))
            group[1].append(offset)
            group[2].append(claim)
        batch.groups = list(groups.values())
        return batch.groups

    def _queue_first(self, conn: Connection, batch: _Batch) -> list[tuple[PipelinedGuard, Any]]:
        """In the batch's first pipeline: each :class:`PipelinedGuard`'s first statements."""
        queued: list[tuple[PipelinedGuard, Any]] = []
        for guard, _, claims in self._by_guard(batch):
            if callable(getattr(guard, "queue_first", None)):
                pipelined = cast(PipelinedGuard, guard)
                queued.append((pipelined, pipelined.queue_first(conn, claims)))
        return queued

    def _admit(self, conn: Connection, batch: _Batch, size: int,
               queued: Sequence[tuple[PipelinedGuard, Any]] = ()) -> list[EncodedEntry]:
        """Ask each guard about its claims; return the items to write from index ``size``.

        ``queued``: what each :class:`PipelinedGuard` sent in the first round trip.
        When a guard drops any item, ``batch.indices`` maps every item to its index
        (-1 when dropped).
        """
        keep: list[bool] | None = None  # made when a guard refuses something
        sent = {id(guard): (guard, token) for guard, token in queued}
        for guard, offsets, claims in self._by_guard(batch):
            pipelined = sent.get(id(guard))
            verdicts = list(guard.admit(conn, claims) if pipelined is None
                            else pipelined[0].admit(conn, claims, pipelined[1]))
            if len(verdicts) != len(claims):
                raise AuditUnavailable(f"an append guard answered {len(verdicts)} of "
                                       f"{len(claims)} claims", obj=self.origin)
            if all(verdicts):
                continue
            if keep is None:
                keep = [True] * len(batch.items)
            for offset, ok in zip(offsets, verdicts, strict=True):
                keep[offset] = bool(ok)
        if keep is None:
            return batch.items
        indices: list[int] = []
        items: list[EncodedEntry] = []
        for item, ok in zip(batch.items, keep, strict=True):
            indices.append(size + len(items) if ok else -1)
            if ok:
                items.append(item)
        batch.indices = indices
        return items

    def _settle(self, batch: _Batch, committed: bool) -> None:
        for guard, _, claims in self._by_guard(batch):
            try:
                guard.settle(claims, committed)
            except Exception as exc:  # the batch's outcome stands; the guard must recover
                log.error("append guard %r failed to settle: %s", guard, exc)

    def _commit(self, batch: _Batch) -> int:
        if self._begin_raw:
            size, frontier, bodies = self._commit_raw(batch)
        else:
            with self._write_tx(f"append {len(batch.items)} entries") as conn:
                # DB-API statements on the transaction's own connection: this transaction
                # is the hot loop of every append (an SQLAlchemy execute costs ~5x a cursor's).
                # Its cursors are kept with the connection (_drop closes them with it).
                raw = conn.connection.dbapi_connection
                if self._cur is None or self._raw is not raw:
                    self._raw, self._cur = raw, raw.cursor()  # type: ignore[union-attr]
                    self._bounds = raw.cursor()  # type: ignore[union-attr]
                size, frontier, bodies = self._extend(conn, self._cur, batch)
        if frontier is not None:  # once committed
            self._frontier = frontier
            if self.recent is not None:
                self.recent.add_bodies(size, bodies)
        return size

    def _commit_raw(self, batch: _Batch) -> tuple[int, Frontier | None, list[bytes]]:
        """SQLite: :meth:`_write_tx` and the batch's statements without its generator.

        The same transaction, bound and failure handling as :meth:`_write_tx`, written
        out for the one-entry commit every release pays: the driver's connection and
        a cursor of it are kept with the writer's connection, and the description of
        what failed is only built when something did.
        """
        try:
            conn, cur = self._conn, self._cur
            if conn is None or cur is None:  # _drop forgets both
                conn = self._connection()
                raw = conn.connection.dbapi_connection
                cur = raw.cursor()  # type: ignore[union-attr]
                self._raw, self._cur = raw, cur
            try:
                cur.execute("BEGIN IMMEDIATE")
                done = self._extend(conn, cur, batch)
                if conn.in_transaction():  # a guard's (or the frontier's) SQLAlchemy statement
                    conn.commit()
                else:
                    self._raw.commit()
            except BaseException:  # discarded: SQLite rolls back what the failure left open
                self._drop()
                raise
            return done
        except self._db_errors as exc:
            if lock_timed_out(exc):
                raise self._locked(f"append {len(batch.items)} entries") from exc
            raise self.tree.failed(f"append {len(batch.items)} entries", exc) from exc

    def _locked(self, what: str) -> AuditUnavailable:
        return AuditUnavailable(
            f"the audit database stayed locked for more than {self.lock_timeout:g} s "
            f"while trying to {what}: the decision was refused (nothing took effect)",
            obj=self.store.url,
            remedy="find what holds the database's write lock (a long transaction, a "
            "backup, another process) and end it, then retry; the refusal is audited "
            "once the log can write again (STRONGROOM_DB_LOCK_TIMEOUT_S sets the bound)",
        )

    def _extend(self, conn: Connection, cur: Any, batch: _Batch
                ) -> tuple[int, Frontier | None, list[bytes]]:
        """Inside the batch's transaction: admit, append, move the head.

        Returns the size before, the new frontier and the bodies appended.
        """
        pipeline = cur.connection.pipeline if self._pg else None
        queued: list[tuple[PipelinedGuard, Any]] = []
        if pipeline is not None:
            # One round trip for psycopg's BEGIN, the transaction's lock bounds, the
            # head's lock and the guards' first statements (the egress ledger's lock and
            # reads): sent together, run in order, so the bounds hold for every lock wait.
            bounds = self._bounds  # kept with ``cur`` by _commit, as PostgreSQL's batches run
            assert bounds is not None
            ms = f"{max(1, int(self.lock_timeout * 1000))}ms"
            with pipeline():
                bounds.execute(_SET_BOUNDS, (ms, ms))
                cur.execute(self._select_size)
                if batch.guarded:
                    queued = self._queue_first(conn, batch)
        else:
            cur.execute(self._select_size)
        found = cur.fetchone()
        if found is None:
            raise AuditUnavailable("the audit head row is missing", obj=self.store.url,
                                   remedy="run the migrations (Store.open) on this database")
        size = int(found[0])
        items = self._admit(conn, batch, size, queued) if batch.guarded else batch.items
        writes = [w for guard, sent in queued for w in guard.writes(sent)]
        if not items:
            for sql, values in writes:  # what the guards decided to write, though no entry is
                cur.execute(sql, values)
            return size, None, []  # every item was conditional and refused: nothing appended
        frontier = self._frontier
        if frontier is None or frontier.size != size:
            frontier = self.tree.load_frontier(conn, size)
        # Extended in place, not copied: any failure from here on (the statements, the
        # commit) makes _lead forget the frontier, so the next batch reloads it.
        bodies = [b"%b%d%b" % (prefix, i, suffix)
                  for i, (prefix, suffix) in enumerate(items, size)]
        leaves, nodes = frontier.extend(bodies)
        head = (frontier.size, frontier.root(), size)
        if pipeline is not None:
            # The rows and the head in one statement (one round trip, one parse): the
            # entries and nodes as arrays, unnested into their tables, and the guards'
            # writes (the egress ledger's rows) as parts of it.
            params: list[Any] = [p for _, values in writes for p in values]
            params.extend((Int8Array(range(size, frontier.size)), ByteaArray(leaves),
                           ByteaArray(bodies), Int2Array([n[0] for n in nodes]),
                           Int8Array([n[1] for n in nodes]), ByteaArray([n[2] for n in nodes]),
                           *head))
            cur.execute(_with(writes, self._insert_entry) if writes else self._insert_entry,
                        params)
            moved = cur.rowcount
        else:
            if len(bodies) == 1:  # a single row: execute, not executemany's iteration
                cur.execute(self._insert_entry, (size, leaves[0], bodies[0]))
            else:
                cur.executemany(self._insert_entry, zip(range(size, frontier.size), leaves,
                                                         bodies, strict=True))
            if len(nodes) == 1:
                cur.execute(self._insert_node, nodes[0])
            elif nodes:
                cur.executemany(self._insert_node, nodes)
            cur.execute(self._move_head, head)
            moved = cur.rowcount
        if moved != 1:
            raise AuditUnavailable("audit head moved during a batch (lost lock)")
        return size, frontier, bodies

"""The egress ledger: its rows, its locked transactions, and the running totals kept of it.

The ledger is two tables (``egress_charges``, one row per charge keyed by the
release evidence's nonce; ``egress_budgets``) and one state row
(``egress_ledger``) whose generation every change bumps, and whose epoch only
the changes that are not appends bump (refunds, repairs, budgets).
:class:`strongroom.monitor.egress.EgressMeter` is its only writer; it uses:

* :class:`LedgerStore` — the SQL: a write transaction (:meth:`LedgerStore.begin`),
  the ledger lock that bumps the generation (:meth:`LedgerStore.lock`), and the
  reads and inserts made under it (held charge ids, window rows, Grant budget
  totals, stored budgets)::

      db = LedgerStore(store)
      with db.begin() as conn:
          generation, epoch = db.lock(conn)     # before any read that decides a charge
          new = [r for r in rows if r[0] not in db.held(conn, [r[0] for r in rows])]
          db.insert(conn, new)
          if new:
              generation = db.appended(conn)

  On PostgreSQL, inside the audit log's batch (:class:`LedgerRound`), the lock and the
  held ids are sent in the batch's first round trip and the rows with the bump are
  written by the statement that writes the batch's entries.
* :class:`LedgerCache` and :class:`WindowTotal` — what a process knows of the
  ledger at one generation (budgets, the newest charge time, one running total
  per budget window, lifetime totals per Grant budget). Valid as it is while the
  database's generation is the cache's; at a newer generation of the same epoch
  only appends happened (other hosts' charges, each stamped at or after every
  charge before it), so the cache catches up on the rows stamped since its high
  water (:meth:`LedgerStore.since`); at another epoch it is rebuilt. Only a
  transaction that added rows moves the generation, so one that moved with no
  new row to read is someone else's doing (rows deleted by hand, say).
* :func:`charge_row` — the row a ``key.release`` allow entry of the audit log
  stands for, so a replay (or the state guard's repair) charges it exactly as
  the gate did.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Connection, func, or_, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from strongroom.errors import StorageError
from strongroom.monitor.budgets import (
    SCOPES,
    UNKNOWN_ARTIFACT,
    Budget,
    Scope,
    applicable,
    subject_key,
)
from strongroom.store.db import READONLY
from strongroom.store.pg_arrays import Float8Array, Int8Array, VarcharArray
from strongroom.store.tables.monitor import EgressBudgetRow, EgressCharge

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent
    from strongroom.store.db import Store

__all__ = [
    "ACTION",
    "MAX_BUDGET_ID",
    "ChargeRow",
    "LedgerCache",
    "LedgerRound",
    "LedgerStore",
    "WindowKey",
    "WindowTotal",
    "charge_row",
]

#: The audit action of a key release: its ``allow`` entries are the charges.
ACTION = "key.release"
#: Entries kept in the per-(principal, artifact) and per-window caches before pruning.
MAX_CACHED = 4096
#: Charge ids checked per ``IN (...)`` query.
ID_CHUNK = 500
#: Longest budget id ``egress_charges.budget_id`` holds (a request digest is far shorter).
MAX_BUDGET_ID = 128

#: What a running total is kept for: scope, who (principal, artifact name or ``*``), window.
WindowKey = tuple[str, str, int]
#: One ``egress_charges`` row: charge id, principal, artifact, bytes, time, budget id.
ChargeRow = tuple[str, str, str, int, float, str | None]


def charge_row(ev: AuditEvent) -> ChargeRow | None:
    """The ledger row a ``key.release`` allow entry stands for, keyed as the gate charges it.

    (charge id: the evidence nonce or else ``audit:<index>``; principal;
    artifact; bytes; time; Grant or break-glass budget id). ``None`` for any
    other entry.
    """
    if ev.action != ACTION or ev.decision != "allow" or ev.nbytes is None:
        return None
    nonce = ev.details.get("nonce")
    cid = nonce if isinstance(nonce, str) and nonce else f"audit:{ev.index}"
    bid = ev.details.get("request_digest") or ev.details.get("break_glass")
    budget_id = bid if isinstance(bid, str) and len(bid) <= MAX_BUDGET_ID else None
    return (cid, ev.actor, ev.object.split("/", 1)[0], int(ev.nbytes), ev.at,
            budget_id)


class WindowTotal:
    """The charges one window key sees, oldest first, and their running total."""

    __slots__ = ("entries", "total", "window_s")

    def __init__(self, window_s: int, rows: Iterable[tuple[float, int]]) -> None:
        self.window_s = window_s
        self.entries: deque[tuple[float, int]] = deque(rows)
        self.total = sum(n for _, n in self.entries)

    def used(self, t: float, floor: float) -> int:
        """Bytes charged after ``t - window_s``; forgets what no charge at or after ``floor`` sees."""
        q = self.entries
        gone = floor - self.window_s
        while q and q[0][0] <= gone:
            self.total -= q.popleft()[1]
        edge = t - self.window_s
        used = self.total
        for at, n in q:  # only entries in (floor - window, t - window]: few or none
            if at > edge:
                break
            used -= n
        return used

    def add(self, at: float, nbytes: int) -> None:
        """Count a new charge (stamped at or after every charge already counted)."""
        self.entries.append((at, nbytes))
        self.total += nbytes


class LedgerCache:
    """What this process knows of the ledger at one generation: budgets, high water, totals.

    Valid only while the database's ``egress_ledger.generation`` equals
    ``generation``; every transaction that changes charges or budgets bumps it,
    so a change by another process (or a rolled-back batch) forces a reload.
    """

    __slots__ = ("at_high", "budgets", "epoch", "generation", "high", "hits", "keys",
                 "lengths", "spent", "windows")

    def __init__(self, generation: int, budgets: list[Budget], high: float,
                 epoch: int = 0, at_high: Iterable[str] = ()) -> None:
        self.generation = generation
        self.epoch = epoch
        self.budgets = budgets
        self.high = high
        #: Ids of the charges stamped exactly at ``high`` (a catch-up skips them).
        self.at_high: set[str] = set(at_high)
        self.windows: dict[WindowKey, WindowTotal] = {}
        #: Lifetime bytes charged under each Grant / break-glass budget id loaded so far.
        self.spent: dict[str, int] = {}
        self.hits: dict[tuple[str, str], list[tuple[Budget, WindowKey]]] = {}
        #: (principal, artifact) -> the window keys a charge of theirs counts in (see add).
        self.keys: dict[tuple[str, str], list[WindowKey]] = {}
        self.lengths = {scope: sorted({b.window_s for b in budgets if b.scope == scope})
                        for scope in SCOPES}

    def applicable(self, principal: str, artifact: str) -> list[tuple[Budget, WindowKey]]:
        """The budgets a charge counts against, each with the running total it is checked on."""
        found = self.hits.get((principal, artifact))
        if found is None:
            if len(self.hits) > MAX_CACHED:
                self.hits.clear()
            found = [(b, (b.scope, subject_key(b.scope, principal, artifact), b.window_s))
                     for b in applicable(self.budgets, principal, artifact)]
            self.hits[principal, artifact] = found
        return found

    def add(self, principal: str, artifact: str, at: float, nbytes: int,
            charge_id: str = "") -> None:
        """Count a recorded charge in every loaded total whose filter it matches."""
        windows = self.windows
        for key in self._keys(principal, artifact):
            w = windows.get(key)
            if w is not None:
                w.add(at, nbytes)
        if at > self.high:
            self.high = at
            self.at_high = {charge_id}
        elif at == self.high:
            self.at_high.add(charge_id)

    def _keys(self, principal: str, artifact: str) -> list[WindowKey]:
        """Every window key whose filter a charge by ``principal`` on ``artifact`` matches."""
        found = self.keys.get((principal, artifact))
        if found is None:
            if len(self.keys) > MAX_CACHED:
                self.keys.clear()
            found = [(scope, subject_key(scope, principal, artifact), length)
                     for scope in SCOPES
                     if not (scope == "artifact" and artifact == UNKNOWN_ARTIFACT)
                     for length in self.lengths[scope]]
            self.keys[principal, artifact] = found
        return found

    def catch_up(self, rows: Iterable[ChargeRow]) -> int:
        """Count the appended rows (:meth:`LedgerStore.since`) not counted yet; how many."""
        spent, counted = self.spent, 0
        for cid, principal, artifact, nbytes, at, bid in rows:
            if at < self.high or (at == self.high and cid in self.at_high):
                continue  # counted already (or a row put back: that bumps the epoch)
            self.add(principal, artifact, at, nbytes, cid)
            if bid is not None and bid in spent:
                spent[bid] += nbytes
            counted += 1
        return counted

    def prune(self) -> None:
        """Forget totals that hold no charge any more (bounded memory for idle principals)."""
        if len(self.spent) > MAX_CACHED:
            self.spent.clear()  # reloaded on demand (one query per batch)
        if len(self.windows) > MAX_CACHED:
            floor = self.high
            for key in [k for k, w in self.windows.items() if w.used(floor, floor) == 0]:
                del self.windows[key]

    def fell_below(self, previous: LedgerCache) -> bool:
        """Whether a total here counts less than ``previous`` did (at the same time)."""
        at = max(self.high, previous.high)
        for key, w in self.windows.items():
            old = previous.windows.get(key)
            if old is not None and w.used(at, at) < old.used(at, at):
                return True
        return any(bid in self.spent and self.spent[bid] < used
                   for bid, used in previous.spent.items())


def _driver_rows(conn: Connection, sql: str, params: Any = ()) -> list[Any]:
    """Rows of one statement run on ``conn``'s DB-API connection, inside its transaction.

    The ledger's statements run inside every audit batch: a DB-API cursor costs a
    fraction of an SQLAlchemy execute. ``sql`` is a constant with the driver's
    placeholders; a list of tuples in ``params`` runs it once per tuple (no rows).
    Driver errors are raised as SQLAlchemy's (as ``exec_driver_sql`` would), parameters hidden.
    """
    dbapi = conn.dialect.loaded_dbapi
    try:
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if isinstance(params, list):
                cur.executemany(sql, params)
                return []
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else []
        finally:
            cur.close()
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, hide_parameters=True,
                                  dialect=conn.dialect) from exc


class LedgerRound:
    """PostgreSQL: one batch's ledger statements, sent in the audit writer's round trips.

    :meth:`LedgerStore.queue_lock` sends the ledger lock and the read of the batch's
    charge ids already held into the pipeline that begins the audit batch's
    transaction (after the audit head's lock and the transaction's lock bounds, in
    that order: the server runs a pipeline's statements one after another, each a
    consistent read of its own, so the ids are read once the ledger lock is held);
    :meth:`locked` gives their answers once that round trip is back. The rows the
    batch charges (:attr:`rows`) and the generation's bump are then written by the
    statement that writes the batch's entries (:meth:`LedgerStore.append_statements`).
    Used on the audit batch leader's thread only, for one transaction.
    """

    __slots__ = ("_held", "_lock", "_store", "rows")

    def __init__(self, store: LedgerStore, lock: Any, held: Any) -> None:
        self._store = store
        self._lock = lock
        self._held = held
        #: The rows the batch charges, written with its entries.
        self.rows: list[ChargeRow] = []

    def locked(self) -> tuple[int, int, set[str]]:
        """(generation, epoch) under the ledger lock, and which of the ids the ledger holds."""
        state = self._lock.fetchall()
        held = {str(r[0]) for r in self._held.fetchall()}
        return (*self._store.state(state), held)


def _like_escape(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class LedgerStore:
    """The egress ledger's tables in one :class:`~strongroom.store.db.Store`.

    Its methods that take a ``conn`` run inside the caller's transaction; those
    that decide or change charges expect the caller to have taken
    :meth:`lock` first.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        #: PostgreSQL: the connection :meth:`queue_lock` last ran on and two cursors of it,
        #: kept for the next batch on it (a fresh psycopg cursor finds the dumpers of its
        #: parameters again; the audit writer keeps its own likewise). A batch on another
        #: connection (the writer's was discarded after a failure) replaces them.
        self._round_cursors: tuple[Any, Any, Any] | None = None
        mark = "%s" if store.dialect == "postgresql" else "?"
        self._mark = mark
        # Statements are built from constants and placeholders only (no values).
        # PostgreSQL: the row lock serialises charges; SQLite: BEGIN IMMEDIATE already did.
        self._sql_lock = ("SELECT generation, epoch FROM egress_ledger WHERE id = 1"  # noqa: S608
                          + (" FOR UPDATE" if store.dialect == "postgresql" else ""))
        self._sql_bump_only = "UPDATE egress_ledger SET generation = generation + 1 WHERE id = 1"
        self._sql_bump = self._sql_bump_only + " RETURNING generation"
        self._sql_rewrite = ("UPDATE egress_ledger SET generation = generation + 1, "
                             "epoch = epoch + 1 WHERE id = 1 RETURNING generation, epoch")
        self._sql_since = ("SELECT charge_id, principal, artifact, nbytes, at, budget_id "  # noqa: S608
                           f"FROM egress_charges WHERE at >= {mark} ORDER BY at")
        self._sql_insert = ("INSERT INTO egress_charges (charge_id, principal, artifact, "  # noqa: S608
                            f"nbytes, at, budget_id) VALUES ({mark}, {mark}, {mark}, {mark}, "
                            f"{mark}, {mark})")
        # PostgreSQL: the held ids of a batch in one statement whatever its size (held() and
        # LedgerRound), and its rows in one statement (the rows as arrays), with _sql_bump_only.
        self._sql_held = "SELECT charge_id FROM egress_charges WHERE charge_id = ANY(%s::varchar[])"
        self._sql_append = (
            "INSERT INTO egress_charges (charge_id, principal, artifact, nbytes, at, budget_id) "
            "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::bigint[], "
            "%s::float8[], %s::varchar[])")

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); errors become StorageError."""
        try:
            with self.store.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"egress ledger transaction failed: {type(exc).__name__}",
                               obj=self.store.url,
                               remedy="check that the database is reachable and writable") from exc

    def lock(self, conn: Connection, *, rewrite: bool = False) -> tuple[int, int]:
        """Lock the ledger for this transaction: its (generation, epoch) from now on.

        Every transaction that may change charges or budgets calls this first.
        One that appends charges calls :meth:`appended` once it has inserted
        rows (so the generation moves only when rows were added: a batch whose
        charges were all refused leaves it alone). One that may do anything but
        append charges stamped at or after the newest (refund, put rows back,
        change budgets) passes ``rewrite``, which bumps the epoch and the
        generation at once, so every cache is rebuilt rather than caught up.
        SQLite: the transaction's ``BEGIN IMMEDIATE`` already holds the write
        lock. PostgreSQL: ``FOR UPDATE`` (or the ``UPDATE``) locks the one state
        row until commit.
        """
        return self.state(_driver_rows(conn, self._sql_rewrite if rewrite else self._sql_lock))

    def state(self, rows: Sequence[Any]) -> tuple[int, int]:
        """(generation, epoch) from the rows of the ledger lock; StorageError when missing."""
        if not rows or rows[0][0] is None:
            raise StorageError("the egress ledger's state row is missing", obj=self.store.url,
                               remedy="run the migrations (Store.open) on this database")
        return int(rows[0][0]), int(rows[0][1])

    def queue_lock(self, conn: Connection, ids: Sequence[str]) -> LedgerRound:
        """PostgreSQL, in a pipeline on ``conn``: the ledger lock, then the read of ``ids`` held.

        Nothing is answered until the pipeline's round trip is back
        (:meth:`LedgerRound.locked`); a statement that fails there (a lock wait past
        the transaction's ``lock_timeout``) fails the pipeline, and the transaction.
        """
        raw = conn.connection.dbapi_connection
        assert raw is not None
        kept = self._round_cursors
        if kept is not None and kept[0] is raw and not raw.closed:
            lock, held = kept[1], kept[2]
        else:
            lock, held = raw.cursor(), raw.cursor()
            self._round_cursors = (raw, lock, held)
        lock.execute(self._sql_lock)
        held.execute(self._sql_held, (VarcharArray(ids),))
        return LedgerRound(self, lock, held)

    def append_statements(self, rows: Sequence[ChargeRow]) -> list[tuple[str, list[Any]]]:
        """PostgreSQL, under :meth:`lock`: the statements that insert ``rows`` and bump the
        generation (to the locked one plus one: the lock is held), for the audit writer to
        run as parts of the statement that writes the batch's entries (none without rows)."""
        if not rows:
            return []
        cids, principals, artifacts, sizes, stamps, budgets = zip(*rows, strict=True)
        return [(self._sql_append, [VarcharArray(cids), VarcharArray(principals),
                                    VarcharArray(artifacts), Int8Array(sizes),
                                    Float8Array(stamps), VarcharArray(budgets)]),
                (self._sql_bump_only, [])]

    def appended(self, conn: Connection) -> int:
        """Bump the generation after inserting charges under :meth:`lock`; the new one."""
        return int(_driver_rows(conn, self._sql_bump)[0][0])

    def since(self, conn: Connection, high: float) -> list[ChargeRow]:
        """The rows stamped at or after ``high``, oldest first (read under the ledger lock)."""
        floor = high if high != float("-inf") else -1.0e300  # every row of an empty cache
        return [(str(cid), str(p), str(a), int(n), float(at), None if bid is None else str(bid))
                for cid, p, a, n, at, bid in _driver_rows(conn, self._sql_since, (floor,))]

    # -- budgets -----------------------------------------------------------

    @staticmethod
    def budgets(s: Session | Connection,
                defaults: Mapping[tuple[str, str, int], Budget]) -> list[Budget]:
        """Every budget in force: the stored ones over ``defaults`` (keyed by ``Budget.key``)."""
        merged = dict(defaults)
        rows = s.execute(select(EgressBudgetRow.scope, EgressBudgetRow.subject,
                                EgressBudgetRow.window_s, EgressBudgetRow.cap_bytes))
        for scope, subject, window_s, cap in rows:
            b = Budget(cast(Scope, scope), str(subject), int(window_s), int(cap))
            merged[b.key] = b
        return sorted(merged.values(), key=lambda b: b.key)

    # -- window totals -----------------------------------------------------

    @staticmethod
    def where(scope: str, who: str) -> ColumnElement[bool]:
        """The charges a budget of ``scope`` sums for ``who`` (:func:`subject_key`)."""
        if scope == "principal":
            return EgressCharge.principal == who
        if scope == "artifact":
            return or_(EgressCharge.artifact == who,
                       EgressCharge.artifact.like(_like_escape(who) + "@%", escape="\\"))
        return EgressCharge.nbytes >= 0

    def used(self, s: Session, b: Budget, principal: str, artifact: str | None,
             now: float) -> int:
        """Bytes charged against ``b`` for this principal and artifact in the window to ``now``."""
        who = subject_key(b.scope, principal, artifact or UNKNOWN_ARTIFACT)
        # No upper bound on time: charges stamped "in the future" (clock stepped back) count.
        total = s.scalar(select(func.coalesce(func.sum(EgressCharge.nbytes), 0))
                         .where(self.where(b.scope, who), EgressCharge.at > now - b.window_s))
        return int(total or 0)

    @staticmethod
    def high_water(s: Session | Connection) -> float:
        """The newest charge's time (``-inf`` for an empty ledger)."""
        latest = s.execute(select(func.max(EgressCharge.at))).scalar()
        return float(latest) if latest is not None else float("-inf")

    def load(self, conn: Connection, ledger: LedgerCache, key: WindowKey) -> WindowTotal:
        """Read one window's charges into ``ledger`` (those its high water still sees)."""
        scope, who, window_s = key
        q = select(EgressCharge.at, EgressCharge.nbytes).where(self.where(scope, who))
        if ledger.high != float("-inf"):
            q = q.where(EgressCharge.at > ledger.high - window_s)
        rows = conn.execute(q.order_by(EgressCharge.at)).all()
        w = WindowTotal(window_s, ((float(at), int(n)) for at, n in rows))
        ledger.windows[key] = w
        return w

    # -- charge ids and Grant budgets --------------------------------------

    def held(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger already holds, read in ``conn``'s transaction."""
        if self.store.dialect == "postgresql":  # one statement whatever the size (_sql_held)
            return ({str(r[0]) for r in _driver_rows(conn, self._sql_held, (VarcharArray(ids),))}
                    if ids else set())
        found: set[str] = set()
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i:i + ID_CHUNK]
            marks = ", ".join([self._mark] * len(chunk))
            rows = _driver_rows(
                conn, f"SELECT charge_id FROM egress_charges WHERE charge_id IN ({marks})",  # noqa: S608
                tuple(chunk))
            found.update(str(r[0]) for r in rows)
        return found

    def ids_since(self, floor: float, conn: Connection | None = None) -> set[str]:
        """Charge ids of the rows stamped after ``floor`` (one query; no ledger lock).

        In ``conn``'s transaction when given, else on a read-only connection of its own.
        """
        sql = f"SELECT charge_id FROM egress_charges WHERE at > {self._mark}"  # noqa: S608
        if conn is not None:
            return {str(r[0]) for r in _driver_rows(conn, sql, (floor,))}
        try:
            with self.store.engine.connect().execution_options(**{READONLY: True}) as own:
                rows: Any = own.exec_driver_sql(sql, (floor,))
                return {str(r[0]) for r in rows}
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the egress ledger: {type(exc).__name__}",
                               obj=self.store.url,
                               remedy="check that the database is reachable") from exc

    def missing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the ledger does not hold (a read; no ledger lock).

        On SQLite a read-only snapshot: it never waits for another connection's write
        lock (the audit log's bound is what a release may wait for).
        """
        try:
            with self.store.engine.connect().execution_options(**{READONLY: True}) as conn:
                return set(ids) - self.held(conn, ids)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the egress ledger: {type(exc).__name__}",
                               obj=self.store.url,
                               remedy="check that the database is reachable") from exc

    def budget_totals(self, conn: Connection, ids: Sequence[str]) -> dict[str, int]:
        """Bytes the ledger holds under each of ``ids`` (lifetime, no window).

        One grouped query per :data:`ID_CHUNK` ids, answered from the
        ``(budget_id, nbytes)`` index alone.
        """
        found = dict.fromkeys(ids, 0)
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i:i + ID_CHUNK]
            marks = ", ".join([self._mark] * len(chunk))
            rows = _driver_rows(
                conn, "SELECT budget_id, coalesce(sum(nbytes), 0) FROM egress_charges "  # noqa: S608
                f"WHERE budget_id IN ({marks}) GROUP BY budget_id", tuple(chunk))
            found.update((str(bid), int(total or 0)) for bid, total in rows)
        return found

    def insert(self, conn: Connection, rows: Sequence[ChargeRow]) -> None:
        """Insert ledger rows in ``conn``'s transaction (the caller holds the ledger lock)."""
        if rows:
            _driver_rows(conn, self._sql_insert, list(rows))

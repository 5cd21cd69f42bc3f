"""The KEK ring: key-encryption-key versions and the file keys wrapped under them.

File keys are wrapped under the newest KEK version (AES-256-GCM, associated
data = vault id ‖ KEK version ‖ blob id) into the ``wrapped_keys`` table and an
age ``strongroom-keyring`` stanza for the blob header. KEK versions themselves
are barrier entries (:mod:`strongroom.keys.barrier`): ``rotate`` adds one,
``rewrap`` wraps every file key also under the newest, ``retire`` removes one
that no file key depends on any more.

The keyring owns one :class:`KekRing` and delegates to it; use the keyring
(through the key service and the release gate), not this class::

    ring.wrap_file_key(blob_id, file_key)       # -> age stanza
    located = ring.locate(blob_id, stanzas)     # no decryption
    file_key = ring.unwrap(blob_id, located)    # only strongroom.release; caller zeroes it
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from strongroom.crypto import age
from strongroom.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    StrongroomError,
)
from strongroom.keys.barrier import KEK_PREFIX, NONCE_LEN, Barrier, KekVersion, b64
from strongroom.store.db import Store, dbapi_errors, raw_query, reader_engine
from strongroom.store.tables.keys import KeyringEntry, WrappedKey

__all__ = ["STANZA_TYPE", "KekRing", "Located"]

#: age stanza type of a file key wrapped by a keyring KEK: args (vault id, KEK version).
STANZA_TYPE = "strongroom-keyring"
_REWRAP_BATCH = 64
#: Blob ids asked in one statement by :meth:`KekRing.locate_many` (bounds its parameters).
_LOCATE_CHUNK = 64
#: Verified wrapped keys kept at most (then dropped all at once and read again).
_VERIFIED_MAX = 16384
#: Seconds a verified wrapped key is used without reading the table again. Bounds how long
#: a change this ring did not make (another host's rewrap or retirement, a deleted row)
#: goes unseen here: absence of the row is noticed within this time.
VERIFIED_TTL_S = 1.0


def _wrap_aad(vault_id: str, version: int, blob_id: str) -> bytes:
    return f"{STANZA_TYPE} {vault_id} {version} {blob_id}".encode()


@dataclass(frozen=True)
class Located:
    """Where a blob's file key is: its KEK version and wrapped body."""

    version: int
    wrapped: bytes


class KekRing:
    """The KEK versions of one keyring while unsealed, and the wrapped keys table.

    ``require_unsealed`` and ``lock`` are the keyring's: every operation checks
    the keyring is unsealed where the keyring's own methods did.
    """

    def __init__(self, store: Store, clock: Callable[[], datetime], lock: threading.RLock,
                 require_unsealed: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self._lock = lock
        self._require_unsealed = require_unsealed
        self._barrier: Barrier | None = None
        self._keks: dict[int, KekVersion] = {}
        # Pooled connections are kept (not closed and reopened) for up to 64 threads
        # releasing at once.
        self._reader = reader_engine(store, pool_size=64, max_overflow=64)
        mark = self._mark = "?" if store.dialect == "sqlite" else "%s"
        # Plain DB-API statement: built from constants only; every release runs it.
        self._locate_sql = ("SELECT kek_version, wrapped FROM wrapped_keys "  # noqa: S608
                            f"WHERE blob_id = {mark} ORDER BY kek_version DESC")
        self._locate_many_sql: dict[int, str] = {}
        # Wrapped keys a release batch read, by blob id, kept once they authenticated under
        # their KEK (see locate_many); _fresh holds the picks of batches not yet unwrapped.
        self._verified: dict[str, tuple[Located, float]] = {}  # with its expiry (monotonic)
        self._fresh: dict[str, tuple[Located, int, float]] = {}  # pick, epoch, read at
        self._epoch = 0

    # -- holding the KEKs ---------------------------------------------------------

    def install(self, barrier: Barrier, keks: dict[int, KekVersion]) -> None:
        """Hold the KEK versions just opened from ``barrier`` (at unseal)."""
        self._barrier = barrier
        self._keks = keks
        self._forget()

    def drop(self) -> None:
        """Forget every KEK (at seal)."""
        self._barrier = None
        self._keks = {}
        self._forget()

    def _forget(self) -> None:
        """Drop the verified wrapped keys (the ring or the table changed here)."""
        self._epoch += 1
        self._verified = {}
        self._fresh = {}

    def close(self) -> None:
        """Release the reader connections (SQLite; PostgreSQL reads through the store's own)."""
        if self._reader is not self.store.engine:
            self._reader.dispose()

    def versions(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The active and the retired KEK versions held in memory."""
        active = tuple(sorted(v for v, k in self._keks.items() if not k.retired))
        retired = tuple(sorted(v for v, k in self._keks.items() if k.retired))
        return active, retired

    def listed_versions(self) -> tuple[int, ...]:
        """Every KEK version the barrier lists (readable while sealed; no secret)."""
        with self.store.session() as session:
            paths = session.scalars(
                select(KeyringEntry.path).where(KeyringEntry.path.like(f"{KEK_PREFIX}%"))
            ).all()
        return tuple(sorted(int(p[len(KEK_PREFIX):]) for p in paths))

    @property
    def vault_id(self) -> str:
        """The vault's id (unsealed only)."""
        self._require_unsealed()
        assert self._barrier is not None
        return self._barrier.vault_id

    # -- file keys ------------------------------------------------------------------

    def newest_version(self) -> int:
        """The newest KEK version that is not retired."""
        self._require_unsealed()
        active = [v for v, k in self._keks.items() if not k.retired]
        if not active:
            raise IntegrityError("every KEK version is retired", obj="keyring",
                                 remedy="run `strongroom keys rotate`")
        return max(active)

    def wrap_file_key(self, blob_id: str, file_key: bytes | bytearray) -> age.Stanza:
        """Wrap ``file_key`` under the newest KEK, record it for ``blob_id``, return its stanza."""
        if not isinstance(blob_id, str) or not 1 <= len(blob_id) <= 100:
            raise InvalidInput("blob id must be 1..100 characters", obj="wrap_file_key")
        if len(file_key) != age.FILE_KEY_SIZE:
            raise InvalidInput(f"a file key must be {age.FILE_KEY_SIZE} bytes", obj=blob_id)
        with self._lock:
            version = self.newest_version()
            vid = self.vault_id
            aead = self._keks[version].aead
        body = self._seal_file_key(aead, vid, version, blob_id, file_key)
        with self.store.session() as session:
            row = session.get(WrappedKey, (blob_id, version))
            if row is None:
                session.add(WrappedKey(blob_id=blob_id, kek_version=version, wrapped=body,
                                       created_at=self.clock()))
            else:
                row.wrapped, row.created_at = body, self.clock()
        self._forget()
        return age.Stanza(STANZA_TYPE, (vid, str(version)), body)

    @staticmethod
    def _seal_file_key(aead: AESGCM, vid: str, version: int, blob_id: str,
                       file_key: bytes | bytearray) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + aead.encrypt(nonce, bytes(file_key), _wrap_aad(vid, version, blob_id))

    def locate(self, blob_id: str, stanzas: Sequence[age.Stanza] = ()) -> Located:
        """Find the newest usable wrapping of ``blob_id``'s file key (no decryption)."""
        self._require_unsealed()
        try:
            rows = raw_query(self._reader, self._locate_sql, (blob_id,))
        except dbapi_errors(self._reader) as exc:
            raise StorageError(f"cannot read wrapped keys ({type(exc).__name__})",
                               obj=f"blob {blob_id}", remedy="check the database") from exc
        return self._pick(blob_id, [(int(v), bytes(w)) for v, w in rows], stanzas)

    def locate_many(self, wanted: Sequence[tuple[str, Sequence[age.Stanza]]]
                    ) -> list[Located | StrongroomError]:
        """:meth:`locate` for each ``(blob_id, stanzas)``, from one read of the table.

        For a release batch: the rows of every blob not yet verified are read in
        one statement, taken when called. A wrapping read from the table is kept
        for the blob once :meth:`unwrap` authenticated it under its KEK (AES-GCM
        bound to vault, version and blob id), and later batches use it without
        reading the table: it is the same file key, and every release still
        unwraps (authenticates) it. A kept wrapping is used for
        :data:`VERIFIED_TTL_S` from the read that found it, then read again (a
        rewrap or retirement on another host, or a deleted row, is seen within
        that second); it is dropped sooner when its version
        is retired or unknown here (then the table is read again), and all are
        dropped by a rotation, a rewrap, a retirement or a wrapping written by
        this ring, and at seal. The table is only a store of wrapped bytes (a
        release's own header may carry them too): a row edited or added later
        is never trusted without authenticating, and revocation lives in the
        access statements, which the gate reads on every batch. Each answer is
        that blob's :class:`Located` or its own refusal; a failed read refuses
        them all.
        """
        self._require_unsealed()
        keks, verified = self._keks, self._verified
        known: dict[str, Located] = {}
        now = time.monotonic()
        for blob, _ in wanted:
            kept = verified.get(blob)
            if kept is not None and kept[1] > now:
                hit = kept[0]
                kek = keks.get(hit.version)
                if kek is not None and not kek.retired:
                    known[blob] = hit
        blobs = [b for b in dict.fromkeys(b for b, _ in wanted) if b not in known]
        rows: dict[str, list[tuple[int, bytes]]] = {b: [] for b in blobs}
        epoch = self._epoch
        try:
            for start in range(0, len(blobs), _LOCATE_CHUNK):
                chunk = blobs[start:start + _LOCATE_CHUNK]
                for blob, version, wrapped in raw_query(self._reader, self._many_sql(len(chunk)),
                                                        tuple(chunk)):
                    rows[blob].append((int(version), bytes(wrapped)))
        except dbapi_errors(self._reader) as exc:
            failed = StorageError(f"cannot read wrapped keys ({type(exc).__name__})",
                                  obj=f"{len(blobs)} blob(s)", remedy="check the database")
            return [failed] * len(wanted)
        out: list[Located | StrongroomError] = []
        fresh = self._fresh
        for blob_id, stanzas in wanted:
            if blob_id in known:
                out.append(known[blob_id])
                continue
            stored = rows[blob_id]
            try:
                located = self._pick(blob_id, list(stored), stanzas)
            except StrongroomError as exc:
                out.append(exc)
                continue
            if any(w is located.wrapped for _, w in stored):  # from the table, not a header
                if len(fresh) >= _VERIFIED_MAX:
                    fresh.clear()
                fresh[blob_id] = (located, epoch, now)
            out.append(located)
        return out

    def _many_sql(self, n: int) -> str:
        sql = self._locate_many_sql.get(n)
        if sql is None:
            marks = ", ".join([self._mark] * n)
            # Built from constants and a count only; the blob ids travel as parameters.
            sql = self._locate_many_sql[n] = (
                "SELECT blob_id, kek_version, wrapped FROM wrapped_keys "  # noqa: S608
                f"WHERE blob_id IN ({marks}) ORDER BY kek_version DESC")
        return sql

    def _pick(self, blob_id: str, candidates: list[tuple[int, bytes]],
              stanzas: Sequence[age.Stanza]) -> Located:
        """The newest usable of ``candidates`` (stored rows, newest first) and the stanzas'."""
        vid = self.vault_id
        for stanza in stanzas:
            args = stanza.args
            if stanza.type == STANZA_TYPE and len(args) == 2 and args[0] == vid \
                    and args[1].isdigit():
                candidates.append((int(args[1]), stanza.body))
        if not candidates:
            raise NotFound("no wrapped file key for this blob in the keyring",
                           obj=f"blob {blob_id}",
                           remedy="the blob was not imported under this vault's keyring")
        retired: list[int] = []
        for version, wrapped in candidates:
            kek = self._keks.get(version)
            if kek is None:
                continue
            if kek.retired:
                retired.append(version)
                continue
            return Located(version, wrapped)
        if retired:
            raise IntegrityError(
                f"the file key is wrapped only by retired KEK version(s) "
                f"{', '.join(map(str, sorted(set(retired))))}",
                obj=f"blob {blob_id}",
                remedy="a retired version must not be in use; restore the wrapped_keys rows "
                "from backup and investigate how retirement happened while in use",
            )
        raise IntegrityError("the file key is wrapped by a KEK version this keyring lacks",
                             obj=f"blob {blob_id}", remedy="restore the keyring from backup")

    def unwrap(self, blob_id: str, located: Located) -> bytearray:
        """The file key (caller zeroes it). Only ``strongroom.release`` may call this."""
        self._require_unsealed()
        kek = self._keks.get(located.version)
        if kek is None or kek.retired:
            raise IntegrityError(f"KEK version {located.version} is retired or unknown",
                                 obj=f"blob {blob_id}")
        w = located.wrapped
        try:
            key = kek.aead.decrypt(w[:NONCE_LEN], w[NONCE_LEN:],
                                   _wrap_aad(self.vault_id, located.version, blob_id))
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"wrapped file key fails authentication under KEK version {located.version}",
                obj=f"blob {blob_id}",
            ) from None
        picked = self._fresh.get(blob_id)
        if picked is not None and picked[0] is located and picked[1] == self._epoch:
            # kept from the read on: a change the ring did not make is seen within the TTL
            verified = self._verified  # it authenticated: later batches need not read it
            if len(verified) >= _VERIFIED_MAX:
                verified.clear()
            verified[blob_id] = (located, picked[2] + VERIFIED_TTL_S)
        return bytearray(key)

    # -- versions ---------------------------------------------------------------------

    def rotate(self) -> int:
        """Create the next KEK version; new file keys are wrapped under it."""
        with self._lock:
            self._require_unsealed()
            assert self._barrier is not None
            version = max(self._keks) + 1
            raw = os.urandom(32)
            created = self.clock().isoformat()
            with self.store.session() as session:
                self._barrier.put(session, f"{KEK_PREFIX}{version}",
                                  {"key": b64(raw), "created": created, "retired": False},
                                  self.clock())
            self._keks[version] = KekVersion(version, AESGCM(raw), False, created)
            self._forget()
            return version

    def rewrap(self, progress: Callable[[int], None] | None = None) -> int:
        """Wrap every file key also under the newest KEK (payloads untouched); returns the count.

        Each batch is one transaction that adds new rows and keeps the old ones,
        so a crash leaves every key unwrappable by the old or the new version.
        """
        newest = self.newest_version()
        vid = self.vault_id
        done = 0
        while True:
            self._forget()  # each batch adds rows of the newest version
            with self.store.session() as session:
                have_newest = select(WrappedKey.blob_id).where(WrappedKey.kek_version == newest)
                rows = session.execute(
                    select(WrappedKey.blob_id, WrappedKey.kek_version, WrappedKey.wrapped)
                    .where(WrappedKey.blob_id.not_in(have_newest))
                    .order_by(WrappedKey.blob_id, WrappedKey.kek_version.desc())
                    .limit(_REWRAP_BATCH * 4)
                ).all()
                batch: dict[str, Located] = {}
                for blob_id, version, wrapped in rows:
                    kek = self._keks.get(int(version))
                    if blob_id not in batch and kek is not None and not kek.retired:
                        batch[blob_id] = Located(int(version), bytes(wrapped))
                    if len(batch) >= _REWRAP_BATCH:
                        break
                if not batch:
                    if rows:
                        raise IntegrityError(
                            f"{len({r[0] for r in rows})} file key(s) are wrapped only by "
                            "retired or unknown KEK versions", obj="rewrap",
                            remedy="restore wrapped_keys from backup")
                    return done
                aead = self._keks[newest].aead
                for blob_id, located in batch.items():
                    key = self.unwrap(blob_id, located)
                    try:
                        body = self._seal_file_key(aead, vid, newest, blob_id, key)
                    finally:
                        key[:] = bytes(len(key))
                    session.add(WrappedKey(blob_id=blob_id, kek_version=newest, wrapped=body,
                                           created_at=self.clock()))
            done += len(batch)
            if progress is not None:
                progress(done)

    def usage(self) -> dict[int, tuple[int, int]]:
        """Per KEK version: (file keys wrapped by it, of which wrapped by no other usable version)."""
        self._require_unsealed()
        with self.store.session() as session:
            rows = session.execute(select(WrappedKey.blob_id, WrappedKey.kek_version)).all()
        by_blob: dict[str, set[int]] = {}
        for blob_id, version in rows:
            by_blob.setdefault(blob_id, set()).add(int(version))
        usable = {v for v, k in self._keks.items() if not k.retired}
        out: dict[int, tuple[int, int]] = {v: (0, 0) for v in self._keks}
        for versions in by_blob.values():
            for v in versions:
                total, only = out.get(v, (0, 0))
                alone = not (versions - {v}) & usable
                out[v] = (total + 1, only + (1 if alone else 0))
        return out

    def retire(self, version: int) -> int:
        """Retire KEK ``version`` once no file key depends on it; returns the rows removed."""
        with self._lock:
            self._require_unsealed()
            assert self._barrier is not None
            kek = self._keks.get(version)
            if kek is None:
                raise NotFound(f"no KEK version {version}", obj="keyring")
            if kek.retired:
                raise InvalidInput(f"KEK version {version} is already retired", obj="keyring")
            if version == self.newest_version():
                raise InvalidInput(f"KEK version {version} is the newest; it cannot be retired",
                                   obj="keyring", remedy="run `strongroom keys rotate` first")
            total, only = self.usage().get(version, (0, 0))
            if only:
                raise InvalidInput(
                    f"KEK version {version} still wraps {only} file key(s) that no other "
                    "version wraps", obj=f"KEK version {version}",
                    remedy="run `strongroom keys rewrap`, then retire again",
                )
            try:
                with self.store.session() as session:
                    session.execute(delete(WrappedKey).where(WrappedKey.kek_version == version))
                    self._barrier.put(session, f"{KEK_PREFIX}{version}",
                                      {"key": "", "created": kek.created, "retired": True},
                                      self.clock())
            except SQLAlchemyError as exc:  # pragma: no cover - wrapped by Store.session
                raise StorageError("cannot retire", obj=f"KEK version {version}") from exc
            kek.retired = True
            kek.aead = AESGCM(bytes(32))  # the old key is gone from the barrier and memory
            self._forget()
            return total

    def count_wrapped(self) -> int:
        """How many file keys the keyring holds."""
        with self.store.session() as session:
            n = session.scalar(select(func.count(func.distinct(WrappedKey.blob_id))))
        return int(n or 0)

"""The web console's session rows (table ``console_sessions``): add, read, update, delete.

The console (:mod:`strongroom.server.console.sessions`) decides what a session
is (cookie hashing, lifetimes, the ceremony's expiry); this module only keeps
its rows, so the face runs no SQL::

    rows = ConsoleSessionRows(store)
    rows.add(SessionRow(id_hash, person_key, csrf, "", expires), now=now)  # prunes expired rows
    row = rows.get(id_hash)                  # None if absent
    rows.set_ceremony(id_hash, text)         # the ceremony in progress, as JSON text
    text = rows.take_ceremony(id_hash)       # read and cleared in one transaction
    rows.delete(id_hash)
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from strongroom.store.db import Store
from strongroom.store.tables.console import ConsoleSession

__all__ = ["ConsoleSessionRows", "SessionRow"]


@dataclass(frozen=True)
class SessionRow:
    """One stored console session: its cookie's hash, who, CSRF token, ceremony, expiry."""

    id_hash: str
    person_key: str
    csrf: str
    ceremony: str
    expires: float


class ConsoleSessionRows:
    """The ``console_sessions`` rows of one store (shared by every worker)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, row: SessionRow, *, now: float) -> None:
        """Store a new session created at ``now`` and delete the sessions expired before it."""
        with self.store.session() as s:
            s.add(ConsoleSession(id_hash=row.id_hash, person_key=row.person_key, csrf=row.csrf,
                                 ceremony=row.ceremony, created=now, expires=row.expires))
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires < now))

    def get(self, id_hash: str) -> SessionRow | None:
        """The stored session of ``id_hash``, or None (expired rows included)."""
        with self.store.session() as s:
            row = s.get(ConsoleSession, id_hash)
            if row is None:
                return None
            return SessionRow(row.id_hash, row.person_key, row.csrf, row.ceremony, row.expires)

    def set_ceremony(self, id_hash: str, ceremony: str) -> None:
        """Replace the session's ceremony text (no-op if the session is gone)."""
        with self.store.session() as s:
            row = s.get(ConsoleSession, id_hash)
            if row is not None:
                row.ceremony = ceremony

    def take_ceremony(self, id_hash: str) -> str:
        """The session's ceremony text, cleared in the same transaction ("" if none)."""
        with self.store.session() as s:
            row = s.get(ConsoleSession, id_hash)
            if row is None or not row.ceremony:
                return ""
            ceremony = str(row.ceremony)
            row.ceremony = ""
        return ceremony

    def delete(self, id_hash: str) -> None:
        """Delete the session of ``id_hash``."""
        with self.store.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))

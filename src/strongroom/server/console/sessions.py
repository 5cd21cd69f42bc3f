"""Console sessions: opaque cookies, state on the server, one CSRF token per session.

The cookie carries 32 random bytes; the database keeps only their SHA-256,
the signed-in person's key id, the session's CSRF token and the WebAuthn
ceremony in progress (its challenge and what the challenge covers). Signing
in rotates the session (a new cookie value), so a value planted before sign-in
is worthless after it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from strongroom.store.console_sessions import ConsoleSessionRows, SessionRow
from strongroom.store.db import Store

__all__ = ["COOKIE", "SESSION_TTL_S", "Session", "Sessions"]

#: ``__Host-``: the browser accepts it only with Secure, Path=/ and no Domain.
COOKIE = "__Host-strongroom-console"
#: How long a signed-in session lasts (sign in again after).
SESSION_TTL_S = 8 * 3600
#: How long a session lasts before anyone signs in with it (bounds rows made by anonymous visits).
ANONYMOUS_TTL_S = 30 * 60
#: How long a WebAuthn ceremony may take.
CEREMONY_TTL_S = 300


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Session:
    """One browser session as the server holds it."""

    id_hash: str
    person_key: str
    csrf: str
    ceremony: dict[str, Any]
    expires: float

    def csrf_ok(self, token: str | None) -> bool:
        """True when ``token`` is this session's CSRF token (constant-time)."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf)


class Sessions:
    """Session storage in the database (shared by every worker)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rows = ConsoleSessionRows(store)

    def new(self, person_key: str = "", *, now: float | None = None) -> tuple[str, Session]:
        """A fresh session; returns the cookie value (shown once) and the session."""
        now = time.time() if now is None else now
        value = secrets.token_urlsafe(32)
        sess = Session(_hash(value), person_key, secrets.token_urlsafe(32), {},
                       now + (SESSION_TTL_S if person_key else ANONYMOUS_TTL_S))
        self._rows.add(SessionRow(sess.id_hash, person_key, sess.csrf, "", sess.expires),
                       now=now)
        return value, sess

    def get(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The live session of a cookie value, or None."""
        if not value or len(value) > 100:
            return None
        now = time.time() if now is None else now
        row = self._rows.get(_hash(value))
        if row is None or row.expires <= now:
            return None
        try:
            ceremony = json.loads(row.ceremony) if row.ceremony else {}
        except ValueError:
            ceremony = {}
        return Session(row.id_hash, row.person_key, row.csrf, ceremony, row.expires)

    def set_ceremony(self, sess: Session, ceremony: dict[str, Any]) -> None:
        """Remember the ceremony in progress (replacing any other)."""
        ceremony = {**ceremony, "expires": time.time() + CEREMONY_TTL_S}
        self._rows.set_ceremony(sess.id_hash, json.dumps(ceremony, sort_keys=True))
        sess.ceremony = ceremony

    def take_ceremony(self, sess: Session, kind: str) -> dict[str, Any] | None:
        """The ceremony of ``kind`` in progress, removed (each challenge is used once)."""
        text = self._rows.take_ceremony(sess.id_hash)
        if not text:
            return None
        try:
            ceremony = json.loads(text)
        except ValueError:
            ceremony = {}
        sess.ceremony = {}
        if ceremony.get("kind") != kind or float(ceremony.get("expires", 0)) <= time.time():
            return None
        return dict(ceremony)

    def end(self, sess: Session) -> None:
        """Delete a session (sign-out, or rotation at sign-in)."""
        self._rows.delete(sess.id_hash)

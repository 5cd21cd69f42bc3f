"""Tables of the web console (owned by ``strongroom.server.console``).

``console_credentials`` holds security keys (WebAuthn credentials) people
registered in the console, with their last sign count. A row grants nothing:
a key counts only once k security officers sign an enrollment listing it
(``strongroom console endorse``); the row is what officers review and what
the console's sign-count check uses. ``console_sessions`` holds browser
sessions by the SHA-256 of their opaque cookie value, with the session's CSRF
token and the WebAuthn ceremony in progress.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["ConsoleCredential", "ConsoleSession"]


class ConsoleCredential(Base):
    """A security key registered by a person in the console (pending until officers enroll it)."""

    __tablename__ = "console_credentials"

    #: base64url credential id
    credential_id: Mapped[str] = mapped_column(String(1400), primary_key=True)
    #: key id of the person's Ed25519 identity the registration token was signed with
    person_key: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    #: base64url COSE public key
    public_key: Mapped[str] = mapped_column(Text, nullable=False)
    alg: Mapped[int] = mapped_column(Integer, nullable=False)
    rp_id: Mapped[str] = mapped_column(String(253), nullable=False)
    origin: Mapped[str] = mapped_column(String(300), nullable=False)
    #: the registration token's nonce: each token registers one key
    token_nonce: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    sign_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    registered_at: Mapped[float] = mapped_column(Float, nullable=False)
    last_used_at: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class ConsoleSession(Base):
    """A browser session: who signed in, its CSRF token, the ceremony in progress."""

    __tablename__ = "console_sessions"

    #: SHA-256 (hex) of the cookie value; the value itself is never stored
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: key id of the signed-in person ("" before sign-in)
    person_key: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    csrf: Mapped[str] = mapped_column(String(64), nullable=False)
    #: JSON of the WebAuthn ceremony in progress ("" when none)
    ceremony: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created: Mapped[float] = mapped_column(Float, nullable=False)
    expires: Mapped[float] = mapped_column(Float, nullable=False, index=True)

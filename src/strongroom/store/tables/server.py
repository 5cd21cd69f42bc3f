"""Tables of the HTTP server (owned by ``strongroom.server``).

``server_nonces`` is the signature-nonce cache shared by every host and worker
on one database: a row per (signing key id, RFC 9421 nonce) until the replay
window of its signature closes (``expires``), so that a signed request
replayed to another host is refused there too. Rows past ``expires`` carry no
meaning and are pruned; the table holds no secret.
"""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["ServerNonce"]


class ServerNonce(Base):
    """One spent request-signature nonce, remembered until its window closes."""

    __tablename__ = "server_nonces"

    #: DSSE key id of the signer
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: the signature's ``nonce`` parameter (16-128 characters)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Unix time after which the signature is expired anyway
    expires: Mapped[float] = mapped_column(Float, nullable=False, index=True)

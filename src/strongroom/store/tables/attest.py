"""Tables of attested releases (owned by ``strongroom.attest`` through the runtime).

``attest_nonces`` holds the nonces the gates issued to enclaves, so that the
evidence may come back to any gate on the database, after a restart too: a row
per nonce (its random part, hex) until ``expires``, marked ``spent`` once by
one atomic update. A row proves nothing by itself: a gate accepts a nonce only
when its MAC (under a key sealed in the keyring's barrier) and the expiry it
carries verify, so an inserted row admits nothing, and a deleted one makes its
nonce unspendable. Rows past ``expires`` are pruned; the table holds no secret.
"""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.store.base import Base

__all__ = ["AttestNonce"]


class AttestNonce(Base):
    """One nonce a gate issued for an enclave's evidence, spent at most once."""

    __tablename__ = "attest_nonces"

    #: the nonce's random part, hex (the MAC'd rest travels with the evidence)
    nonce_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Unix time after which the nonce is stale anyway
    expires: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    #: Unix time it was spent (None: not yet)
    spent: Mapped[float | None] = mapped_column(Float, nullable=True)

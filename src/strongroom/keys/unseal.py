"""Unseal and rekey ceremonies: who has submitted a share, and what a quorum rebuilds.

A vault on the ``shamir`` backend is unsealed by k custodians, each submitting
their share age-encrypted to the current ceremony's ephemeral recipient (so a
share captured in transit is useless to another ceremony). A rekey is the same
ceremony run while unsealed: the quorum must rebuild the very root key in
memory, which is then split again for the new custodians.

:class:`Ceremonies` is the state machine; the keyring holds one and calls it
under its own lock::

    ceremony = ceremonies.current(state, unsealed=False)   # starts an unseal ceremony
    if ceremonies.accept(state, ceremony, submission):     # True once k shares are in
        root = ceremonies.complete(state, ceremony, current_root=None)  # unseal: the root key

It never touches the database or the barrier; the keyring does.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from strongroom.crypto import age, shamir
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.errors import IntegrityError, InvalidInput, NoIdentityMatched
from strongroom.keys.barrier import CeremonyConfig, unb64
from strongroom.store.tables.keys import KeyringState

__all__ = ["HSM_HINT", "UNSEAL_HINT", "Ceremonies", "Ceremony"]

UNSEAL_HINT = "unseal it: `strongroom unseal --share FILE --identity IDENTITY_FILE` by k custodians"
HSM_HINT = "unseal it: `strongroom unseal` with STRONGROOM_HSM_PIN set (or at the prompt)"


@dataclass
class Ceremony:
    """One unseal or rekey ceremony: a nonce, an ephemeral recipient, shares so far."""

    kind: str
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    #: Custodians' submissions travel to this key: hybrid, so a recorded one stays closed.
    identity: HybridIdentity = field(default_factory=HybridIdentity.generate)
    shares: dict[int, shamir.Share] = field(default_factory=dict)
    new_custodians: tuple[str, ...] = ()
    new_threshold: int = 0
    result: tuple[CeremonyConfig, list[shamir.Share]] | None = None


class Ceremonies:
    """The keyring's one running ceremony (if any); callers hold the keyring's lock."""

    def __init__(self) -> None:
        self._ceremony: Ceremony | None = None

    def current(self, state: KeyringState, *, unsealed: bool) -> Ceremony | None:
        """The running ceremony: a new unseal one while sealed, none for an HSM vault."""
        if state.backend != "shamir":
            return None
        if self._ceremony is None and not unsealed:
            self._ceremony = Ceremony(kind="unseal")
        if self._ceremony is not None and self._ceremony.kind == "unseal" and unsealed:
            self._ceremony = None
        return self._ceremony

    def wipe(self) -> None:
        """Forget the running ceremony and its shares."""
        self._ceremony = None

    def accept(self, state: KeyringState, ceremony: Ceremony, submission: bytes) -> bool:
        """Count one custodian's submission; True once the threshold is reached."""
        content = self._open_submission(ceremony, submission)
        config = CeremonyConfig.from_json(state.ceremony_json)
        if content["vault_id"] != state.vault_id or content["generation"] != state.generation:
            raise InvalidInput(
                f"the share belongs to vault {content['vault_id']} generation "
                f"{content['generation']}, this vault is {state.vault_id} generation "
                f"{state.generation}",
                obj=f"share of custodian {content['index']}",
                remedy="submit a share file dealt for this vault (newest rekey)",
            )
        share = content["share"]
        if share.x in ceremony.shares:
            raise InvalidInput(
                f"custodian {share.x} has already submitted a share in this ceremony",
                obj=f"ceremony {ceremony.nonce}", remedy="another custodian must submit",
            )
        if not 1 <= share.x <= len(config.commitments) or not shamir.verify_share(
            share, config.commitments[share.x - 1]
        ):
            raise IntegrityError(
                f"share of custodian {share.x} does not match its published commitment",
                obj=f"share of custodian {share.x}",
                remedy="the share file is corrupted or forged; use the custodian's own file",
            )
        ceremony.shares[share.x] = share
        return len(ceremony.shares) >= state.threshold

    @staticmethod
    def _open_submission(ceremony: Ceremony, submission: bytes) -> dict[str, Any]:
        where = f"{ceremony.kind} ceremony {ceremony.nonce}"
        try:
            text = age.decrypt(submission, [ceremony.identity])
        except NoIdentityMatched:
            raise InvalidInput(
                "the share was submitted for another ceremony (it was reset, completed, or "
                "the agent restarted)", obj=where,
                remedy="run `strongroom status` and submit the share again",
            ) from None
        except (IntegrityError, InvalidInput) as exc:
            raise InvalidInput(f"malformed share submission ({exc.message})", obj=where) from None
        try:
            d = json.loads(text)
            if d["nonce"] != ceremony.nonce:
                raise InvalidInput("the submission names another ceremony", obj=where,
                                   remedy="run `strongroom status` and submit again")
            return {"vault_id": str(d["vault_id"]), "generation": int(d["generation"]),
                    "index": int(d["index"]),
                    "share": shamir.Share.from_bytes(unb64(d["share"]))}
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"malformed share submission ({type(exc).__name__})",
                               obj=where) from None

    def complete(self, state: KeyringState, ceremony: Ceremony,
                 current_root: bytearray | None) -> bytearray | None:
        """Combine the quorum: an unseal returns the root key (caller unseals and zeroes it).

        A rekey checks that the quorum rebuilt ``current_root``, deals the new
        shares into ``ceremony.result`` and returns None.
        """
        shares = list(ceremony.shares.values())
        try:
            root = bytearray(shamir.combine(shares, threshold=state.threshold))
        except InvalidInput:
            self.wipe()
            raise
        if ceremony.kind == "unseal":
            self.wipe()
            return root
        # rekey: the quorum must rebuild the very root key in memory
        if current_root is None or not hmac.compare_digest(bytes(root), bytes(current_root)):
            root[:] = bytes(len(root))
            self.wipe()
            raise IntegrityError(
                "the submitted shares do not rebuild this vault's root key; rekey cancelled",
                obj="rekey ceremony", remedy="start the rekey again with the custodians' files",
            )
        new_shares = shamir.split(root, ceremony.new_threshold, len(ceremony.new_custodians))
        root[:] = bytes(len(root))
        config = CeremonyConfig(
            vault_id=state.vault_id, generation=state.generation + 1,
            threshold=ceremony.new_threshold, custodians=ceremony.new_custodians,
            commitments=tuple(shamir.commit(new_shares)),
        )
        ceremony.result = (config, new_shares)
        return None

    def start_rekey(self, custodians: Sequence[str], threshold: int) -> None:
        """Begin a rekey to ``threshold``-of-``len(custodians)`` (replaces any ceremony)."""
        for c in custodians:
            age.parse_recipient(c)  # hybrid age1pq1... or classical age1...
        if not 2 <= threshold <= len(custodians) <= shamir.MAX_SHARES:
            raise InvalidInput(f"cannot rekey to {threshold}-of-{len(custodians)}",
                               remedy="need 2 <= --threshold <= custodians <= 255")
        if len(set(custodians)) != len(custodians):
            raise InvalidInput("a custodian's key is given twice", obj="rekey")
        self._ceremony = Ceremony(kind="rekey", new_custodians=tuple(custodians),
                                  new_threshold=threshold)

    def rekey_result(self, nonce: str) -> tuple[CeremonyConfig, list[shamir.Share]]:
        """The new configuration and shares of the completed rekey ``nonce``."""
        c = self._ceremony
        if c is None or c.kind != "rekey" or c.nonce != nonce or c.result is None:
            raise InvalidInput("no completed rekey ceremony with that nonce", obj="rekey",
                               remedy="start the rekey again")
        return c.result

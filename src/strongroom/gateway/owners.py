"""Code owners pinned by the security officers, so the gateway's signers cannot be swapped.

The keys that may sign a code release must not come from a place the code's
writer controls (a command line, a file next to the code). Here they come from
a ``codeowners`` statement signed by k of the officers pinned in the sealed
keyring, like enrollments and labels: a database administrator cannot add an
owner, and a change of owners is itself an officers' act, with a serial so the
newest verified statement wins::

    env = CodeOwners((olga.public, omar.public, oren.public), 2, serial=1,
                     issued=now).sign(officer_key)
    publish_owners(store, env)
    owners = pinned_owners(reader)          # None until officers pinned some
    verify_release(release, owners.owners, owners.threshold)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.access import statements
from strongroom.access.directory import DirectoryReader
from strongroom.crypto.dsse import ExternalKey
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.keys.identity import PublicIdentity
from strongroom.store.db import Store

__all__ = ["KIND", "SUBJECT", "CodeOwners", "pinned_owners", "publish_owners", "require_owners"]

#: The access statement kind and the subject it is stored under.
KIND = "codeowners"
SUBJECT = "gateway"


@dataclass(frozen=True)
class CodeOwners:
    """Who may sign the gateway's code releases, and how many of them must."""

    owners: tuple[PublicIdentity, ...]
    threshold: int
    serial: int
    issued: int

    def __post_init__(self) -> None:
        kids = {o.key_id for o in self.owners}
        if len(kids) != len(self.owners):
            raise InvalidInput("a code owner is listed twice", obj="code owners")
        if not 1 <= self.threshold <= len(self.owners):
            raise InvalidInput(f"threshold {self.threshold} with {len(self.owners)} code owner(s)",
                               obj="code owners",
                               remedy="give 1 <= --threshold <= number of --code-owner keys")
        if self.serial < 1:
            raise InvalidInput("the serial starts at 1", obj="code owners")

    def to_statement(self) -> dict[str, Any]:
        """The signed form."""
        return {"scope": SUBJECT, "threshold": self.threshold, "serial": self.serial,
                "issued": self.issued,
                "owners": [{"name": o.name or "", "key": o.public_bytes.hex(),
                            # a hybrid owner's ML-DSA-65 key: its releases need both signatures
                            **({"mldsa_key": o.mldsa_bytes.hex()} if o.mldsa_bytes else {})}
                           for o in self.owners]}

    @classmethod
    def from_statement(cls, st: dict[str, Any]) -> CodeOwners:
        """Parse a verified statement."""
        try:
            owners = tuple(PublicIdentity(bytes.fromhex(str(o["key"])), str(o["name"]) or None,
                                          bytes.fromhex(str(o.get("mldsa_key", ""))))
                           for o in st["owners"])
            if any(len(o.public_bytes) != 32 for o in owners):
                raise ValueError("key length")
            for o in owners:  # a malformed ML-DSA-65 key is refused here (ValueError)
                if o.mldsa_bytes:
                    MLDSA65PublicKey.from_public_bytes(o.mldsa_bytes)
            return cls(owners, int(st["threshold"]), int(st["serial"]), int(st["issued"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("the code-owners statement is malformed",
                               obj="code owners") from None

    def sign(self, *officers: Ed25519PrivateKey | ExternalKey,
             pq: MLDSA65PrivateKey | None = None) -> str:
        """The statement signed by each officer key given (k are needed; ``pq``: a hybrid
        officer's ML-DSA-65 key)."""
        return statements.sign(KIND, self.to_statement(), *officers, pq=pq)


def publish_owners(store: Store, env: str) -> str:
    """Store a code-owners statement (trusted only once k officers signed it); its digest."""
    st = statements.unverified_payload(env)
    if st.get("scope") != SUBJECT:
        raise InvalidInput("not a gateway code-owners statement", obj="code owners")
    return statements.put(store, KIND, env, subject=SUBJECT)


def pinned_owners(reader: DirectoryReader) -> CodeOwners | None:
    """The newest code-owners statement signed by k pinned officers, or None."""
    best: CodeOwners | None = None
    for env in statements.envelopes(reader.store, KIND, subject=SUBJECT):
        try:
            owners = CodeOwners.from_statement(
                reader.verify_officer_statement(env, KIND, "code owners"))
        except (IntegrityError, InvalidInput):
            continue  # unsigned, under-signed or malformed: does not count
        if best is None or owners.serial > best.serial:
            best = owners
    return best


def require_owners(reader: DirectoryReader) -> tuple[Sequence[PublicIdentity], int]:
    """The pinned owners and threshold, or a clear error saying how to pin them."""
    found = pinned_owners(reader)
    if found is None:
        raise InvalidInput("no code owners are pinned by the security officers",
                           obj="gateway code owners",
                           remedy="k officers run `strongroom gateway owners set --code-owner "
                           "PUB… --threshold K` (and `strongroom people cosign`)")
    return found.owners, found.threshold

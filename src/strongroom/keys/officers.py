"""The security officers pinned in the keyring, and the one rule for counting their signatures.

An officer holds an Ed25519 key and, if hybrid (``keys new-identity --pq``), an
ML-DSA-65 key too; ``init --officer`` pins both from the officer's ``.pub``. A
hybrid officer's signature on a statement (enrollment, revocation, label,
policy, attestation policy, code owners, key order, Grant revocation...) counts
only when **both** signatures verify: an Ed25519 signature alone could be a
forgery made with a future quantum computer. A classical officer (every officer
of a keyring written before hybrid officers) counts on Ed25519 alone.

The keyring's public keys carry them as ``officer:<key id>`` (Ed25519) and
``officer-mldsa65:<key id>`` (ML-DSA-65, by the key id of the officer's Ed25519
key), so every process that reads the public keys sees the same pins::

    officers = Officers.from_public_keys(keys.public_keys())
    statement = officers.verify(env, payload_type, threshold=2, obj="label")
    reader = DirectoryReader(store, lambda: officers.ed25519, 2, mldsa=lambda: officers.mldsa)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.crypto.ed25519 import checked
from strongroom.crypto.hybrid_sig import verify_pinned
from strongroom.errors import AccessDenied, IntegrityError

__all__ = ["OFFICER_MLDSA_PREFIX", "OFFICER_PREFIX", "Officers"]

#: Public-key name prefix of an officer's Ed25519 key (``officer:<key id>``).
OFFICER_PREFIX = "officer:"
#: Public-key name prefix of a hybrid officer's ML-DSA-65 key (``officer-mldsa65:<key id>``).
OFFICER_MLDSA_PREFIX = "officer-mldsa65:"


@dataclass(frozen=True)
class Officers:
    """Pinned officers: Ed25519 keys by key id, and the ML-DSA-65 keys of the hybrid ones."""

    ed25519: Mapping[str, Ed25519PublicKey]
    mldsa: Mapping[str, MLDSA65PublicKey] = field(default_factory=dict)

    @classmethod
    def from_public_keys(cls, raw: Mapping[str, bytes]) -> Officers:
        """The officers among a key service's raw public keys (``officer:``/``officer-mldsa65:``)."""
        try:
            ed = {
                k[len(OFFICER_PREFIX) :]: checked(Ed25519PublicKey.from_public_bytes(v))
                for k, v in raw.items()
                if k.startswith(OFFICER_PREFIX)
            }
            pq = {
                k[len(OFFICER_MLDSA_PREFIX) :]: MLDSA65PublicKey.from_public_bytes(v)
                for k, v in raw.items()
                if k.startswith(OFFICER_MLDSA_PREFIX)
            }
        except ValueError as exc:
            raise IntegrityError(
                f"the keyring reports a malformed officer key ({exc})",
                obj="officers",
                remedy="restore the keyring tables from a trusted backup",
            ) from exc
        return cls(ed, {kid: key for kid, key in pq.items() if kid in ed})

    def classical(self) -> list[str]:
        """Key ids of officers with no ML-DSA-65 key pinned (Ed25519 alone)."""
        return sorted(kid for kid in self.ed25519 if kid not in self.mldsa)

    def only(self, kid: str) -> Officers:
        """This one officer (to check that a caller signed what it offers)."""
        pq = {kid: self.mldsa[kid]} if kid in self.mldsa else {}
        return Officers({kid: self.ed25519[kid]} if kid in self.ed25519 else {}, pq)

    def mldsa_signer(self, kid: str, key: MLDSA65PrivateKey | None) -> MLDSA65PrivateKey | None:
        """The ML-DSA-65 key officer ``kid`` signs with beside Ed25519 (``key``: its identity's).

        Refused when the keyring pins this officer's ML-DSA-65 key and ``key`` is
        missing or another one: the signature would not count.
        """
        pinned = self.mldsa.get(kid)
        if pinned is None:
            return key
        if key is None:
            raise AccessDenied(
                f"the keyring pins an ML-DSA-65 key for officer {kid}, and this "
                "identity holds none",
                obj="STRONGROOM_IDENTITY",
                remedy="sign with the identity file `strongroom keys new-identity "
                "--pq` wrote (Ed25519 and ML-DSA-65)",
            )
        if key.public_key().public_bytes_raw() != pinned.public_bytes_raw():
            raise AccessDenied(
                f"this identity's ML-DSA-65 key is not the one the keyring pins for officer {kid}",
                obj="STRONGROOM_IDENTITY",
                remedy="sign with the identity file whose .pub was given to "
                "`strongroom init --officer`",
            )
        return key

    def verify(
        self,
        envelope: str | bytes,
        payload_type: str,
        *,
        threshold: int = 1,
        obj: str = "statement",
    ) -> dict[str, Any]:
        """The statement if ``threshold`` officers signed it, each with every pinned key."""
        return verify_pinned(
            envelope, payload_type, self.ed25519, pq=self.mldsa, threshold=threshold, obj=obj
        )

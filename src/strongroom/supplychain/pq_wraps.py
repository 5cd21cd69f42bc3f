"""Which wraps that leave the vault host are classical-only: the post-quantum check.

Ciphertext that crosses a boundary can be recorded today and opened once its
adversary has a quantum computer ("harvest now, decrypt later"). Two kinds of
wraps leave a strongroom vault host and live for years: custodians' share files
(dealt at ``init`` and ``rekey``) and the file keys of airgap transfer bundles
(wrapped to the destination enclave's transfer key). Each is wrapped either to a
hybrid ML-KEM-768 + X25519 recipient (``age1pq1…``, post-quantum) or to a
classical X25519 one (``age1…``). This module finds the classical ones:

    wraps = deployment_wraps(store)        # published custodians, audited transfer exports
    for f in pq_findings(wraps): print(f.message, f.remedy)

It reads only what the deployment records: the custodians the keyring publishes
(the ceremony configuration, authenticated at unseal) and the recipients that
the audit log's ``transfer.export`` entries name. ``strongroom doctor`` and the
posture report (control K-PQ) call it; it changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from strongroom.audit.entry import AuditEvent
from strongroom.crypto.age_pq import RECIPIENT_PREFIX
from strongroom.errors import StrongroomError
from strongroom.keys.officers import Officers
from strongroom.store.db import Store
from strongroom.store.tables.audit import AuditEntry

__all__ = ["Wraps", "deployment_wraps", "is_hybrid", "pq_summary"]

_BATCH = 2000


def is_hybrid(recipient: str) -> bool:
    """True for a hybrid post-quantum recipient (``age1pq1…``)."""
    return recipient.strip().startswith(RECIPIENT_PREFIX)


@dataclass
class Wraps:
    """The recipients a deployment wraps to across its boundary, by kind of use."""

    custodians: list[str] = field(default_factory=list)
    #: (bundle id, destination enclave, recipient) of every allowed transfer export.
    transfers: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def classical_custodians(self) -> list[str]:
        """Custodians whose shares are wrapped to X25519 only."""
        return [c for c in self.custodians if not is_hybrid(c)]

    @property
    def classical_transfers(self) -> list[tuple[str, str, str]]:
        """Transfer exports whose file keys were wrapped to X25519 only."""
        return [t for t in self.transfers if not is_hybrid(t[2])]


def _transfer_exports(events: Iterable[AuditEvent]) -> list[tuple[str, str, str]]:
    return [(ev.object, str(ev.details.get("enclave", "")), str(ev.details["recipient"]))
            for ev in events
            if ev.action == "transfer.export" and ev.decision == "allow"
            and isinstance(ev.details.get("recipient"), str)]


def deployment_wraps(store: Store) -> Wraps:
    """The published custodians and the audited transfer exports of the deployment in ``store``."""
    from strongroom.keys.ceremony import published_in_store

    wraps = Wraps()
    with contextlib.suppress(StrongroomError):  # not initialised: no custodians to judge
        wraps.custodians = list(published_in_store(store).custodians)
    last = -1
    while True:
        with store.session(readonly=True) as s:
            bodies = s.execute(select(AuditEntry.idx, AuditEntry.body).where(AuditEntry.idx > last)
                               .order_by(AuditEntry.idx).limit(_BATCH)).all()
        if not bodies:
            return wraps
        last = bodies[-1][0]
        # Most entries are not exports: parse only those that mention one.
        wraps.transfers += _transfer_exports(
            AuditEvent.from_body(body) for _, body in bodies if b'"transfer.export"' in body)


def pq_summary(wraps: Wraps, officers: Officers | None = None) -> tuple[str, str]:
    """``(message, remedy)`` naming the classical wraps and officers, or ``("", "")``.

    ``officers``: the officers pinned in the barrier (None: not known, sealed);
    one without an ML-DSA-65 key signs with Ed25519 alone.
    """
    parts: list[str] = []
    remedies: list[str] = []
    cust = wraps.classical_custodians
    if cust:
        parts.append(f"{len(cust)} of {len(wraps.custodians)} custodians' shares are wrapped to "
                     "classical X25519 keys")
        remedies.append("give those custodians hybrid keys (`strongroom keygen --pq`) and re-deal "
                        "the shares with `strongroom rekey`")
    transfers = wraps.classical_transfers
    if transfers:
        enclaves = sorted({t[1] for t in transfers})
        parts.append(f"{len(transfers)} transfer bundle(s) wrapped to classical X25519 transfer "
                     f"keys (enclaves {', '.join(enclaves)})")
        remedies.append("give each destination enclave a hybrid transfer key "
                        "(`strongroom transfer keygen`) for the next export")
    classical = officers.classical() if officers is not None else []
    if officers is not None and classical:
        parts.append(f"{len(classical)} of {len(officers.ed25519)} security officers sign with "
                     f"Ed25519 alone (key ids {', '.join(classical)}): a forger with a quantum "
                     "computer could sign enrollments and labels as them")
        remedies.append("officers' keys are pinned at `strongroom init`: give each officer a "
                        "hybrid identity (`strongroom keys new-identity --pq`) and pin its .pub "
                        "with `init --officer` (docs/key-ceremony.md)")
    if not parts:
        return "", ""
    return ("; ".join(parts) + ": recorded today, they open to a future quantum computer",
            "; ".join(remedies))

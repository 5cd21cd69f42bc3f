"""The protocols the release gate composes: evidence rule, egress meter, sizes, canaries, guard.

:class:`~strongroom.release.gate.ReleaseGate` holds no policy of its own; a
deployment hands it one object for each port below (the runtime builds them at
unseal, :mod:`strongroom.runtime.wiring`):

* :class:`EvidenceVerifier` — decides from signatures alone whether a request
  is allowed (the deployment's rule: :class:`strongroom.access.evidence.GrantEvidence`);
  :class:`LedgerBudgetedEvidence` when its byte budgets are charged by the ledger;
* :class:`EgressPort` — charges released bytes against budgets
  (:class:`strongroom.monitor.egress.EgressMeter`); :class:`AuditedEgressPort`
  when it charges inside the audit append's own transaction;
* :class:`ShardSizes` — the size a file key opens, from signed manifests;
  :class:`ShardLocator` — the shard and its artifact as the signed manifest
  states them (:class:`LocatedShard`), which the evidence rule reads too. One
  :class:`strongroom.vault.shards.SignedShards` serves both, so each manifest is
  located and verified once;
* :class:`CanaryCheck` — alerts on decoys (:class:`strongroom.monitor.canaries.CanaryRegistry`);
* :class:`StateGuard` — restrictive rows agree with the verified audit log
  (:class:`strongroom.runtime.state_guard.StateGuard`);
* :class:`ReleaseObserver` — counts decisions for the deployment's metrics
  (:class:`strongroom.runtime.metrics.ReleaseMetrics`); optional.

A new rule implements the protocol; it never bypasses the gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from strongroom.release.request import ReleaseRequest, Shard

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.errors import StrongroomError

__all__ = [
    "AuditedEgressPort",
    "CanaryCheck",
    "EgressPort",
    "EvidenceVerifier",
    "LedgerBudgetedEvidence",
    "LocatedShard",
    "ReleaseObserver",
    "ShardLocator",
    "ShardSizes",
    "StateGuard",
]


class EvidenceVerifier(Protocol):
    """Decides from signatures alone whether the evidence allows the request."""

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Return audit details of the accepted evidence; raise AccessDenied otherwise."""
        ...


@runtime_checkable
class LedgerBudgetedEvidence(EvidenceVerifier, Protocol):
    """An evidence rule with byte budgets that the egress ledger can charge (GrantEvidence).

    The details of every release it accepts name the budget: ``request_digest``
    (a Grant) or ``break_glass`` as the id, ``grant_bytes`` or
    ``break_glass_bytes`` as the lifetime cap; a release without them is
    refused (nothing would bound it).
    """

    def verify_unreserved(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Like ``verify``, but the byte budget is only pre-checked: the ledger charges it."""
        ...

    def charged(self, budget_id: str, nbytes: int) -> None:
        """The ledger charged ``nbytes`` to ``budget_id`` (warms the rule's pre-check)."""
        ...

    def observe(self, budget_id: str, used: int) -> None:
        """The ledger holds ``used`` bytes under ``budget_id`` (it refused a charge)."""
        ...


class EgressPort(Protocol):
    """Charges released bytes against a principal's budget."""

    def charge(
        self,
        principal: str,
        nbytes: int,
        now: float,
        *,
        artifact: str | None = None,
        charge_id: str | None = None,
    ) -> None:
        """Record the bytes or raise BudgetExceeded (then nothing is recorded)."""
        ...

    def refund(
        self, principal: str, nbytes: int, now: float, *, charge_id: str | None = None
    ) -> None:
        """Undo a charge whose release was refused later (audit failure)."""
        ...


@runtime_checkable
class AuditedEgressPort(EgressPort, Protocol):
    """An egress meter that can charge inside the audit append's own transaction."""

    def joins(self, audit: object) -> bool:
        """Whether :meth:`charge_with_event` works with ``audit`` (same database)."""
        ...

    def charge_with_event(
        self,
        audit: AuditLog,
        principal: str,
        nbytes: int,
        now: float,
        *,
        artifact: str | None = None,
        charge_id: str | None = None,
        event: Mapping[str, Any],
        budget: tuple[str, int] | None = None,
    ) -> int:
        """Charge and append ``event`` atomically; its audit index.

        ``budget`` (id, lifetime cap in bytes) is a Grant's byte budget charged
        in the same transaction. Raises BudgetExceeded (nothing appended or
        charged), AccessDenied when ``charge_id`` was already charged or the
        budget is spent, AuditUnavailable when the append failed.
        """
        ...

    def charge_many_with_event(
        self, audit: AuditLog, charges: Sequence[Mapping[str, Any]]
    ) -> list[int | StrongroomError]:
        """Several :meth:`charge_with_event` (keyword mappings) in one audit batch, in order.

        Each result is the durable entry's index or that charge's refusal;
        raises AuditUnavailable when the batch failed (nothing charged).
        """
        ...


class ShardSizes(Protocol):
    """The size a shard's file key opens, from signed data (the artifact's signed manifest)."""

    def size(self, request: ReleaseRequest) -> int:
        """Plaintext bytes of the request's shard (its ``nbytes`` is only a hint); AccessDenied
        when the signed manifest does not list that blob as that shard of that artifact."""
        ...


@dataclass(frozen=True)
class LocatedShard:
    """A shard and its artifact as the artifact's verified signed manifest states them."""

    shard: Shard
    kind: str
    compartments: tuple[str, ...]
    metadata: Mapping[str, str]


class ShardLocator(ShardSizes, Protocol):
    """Finds a request's shard in its artifact's signed manifest (verified once, then cached)."""

    def locate(self, request: ReleaseRequest) -> LocatedShard:
        """The request's shard as signed; AccessDenied when the signed manifest does not list
        the request's blob as that shard of that artifact (or does not verify)."""
        ...


class StateGuard(Protocol):
    """Checks that the restrictive state the gate reads agrees with the verified audit log."""

    def check(self) -> None:
        """Reconcile when due; raise (AuditUnavailable, StorageError) to refuse releases."""
        ...


class CanaryCheck(Protocol):
    """Raises a critical alert (and may refuse) when a request touches a decoy."""

    def check(self, request: ReleaseRequest) -> bool:
        """True when the request was for a canary (the alert is already raised)."""
        ...


class ReleaseObserver(Protocol):
    """Counts the gate's decisions (``GET /metrics``); called after each, it must not raise.

    ``reason`` is one of the gate's fixed refusal classes
    (:data:`strongroom.release.gate.REFUSAL_CLASSES`), never a message or a name.
    """

    def allowed(self, nbytes: int, seconds: float) -> None:
        """A file key of ``nbytes`` plaintext bytes was released after ``seconds``."""
        ...

    def allowed_many(self, nbytes: int, seconds: Sequence[float]) -> None:
        """A batch released ``len(seconds)`` file keys of ``nbytes`` plaintext bytes in all,
        each after its own entry of ``seconds``."""
        ...

    def refused(self, reason: str, seconds: float) -> None:
        """A release was refused (class ``reason``) after ``seconds``."""
        ...

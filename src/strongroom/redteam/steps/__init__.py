"""The named steps scenarios call: preconditions, attacks and cleanups, in a registry.

Every step is ``fn(ctx: RunContext, **args) -> None`` registered under its
name in :data:`STEPS`. Attack steps *try* something and record what happened
(``ctx.saw``); they never decide the outcome — the grader reads the audit log,
the alert store and the target's state afterwards (:mod:`strongroom.redteam.grading`).
Principals a scenario creates carry its marker (``ctx.actor(role)``).

By target: :mod:`.access` (preconditions, Grants, approvals, break-glass,
egress), :mod:`.data` (stolen dumps, blobs and backups), :mod:`.keys`, :mod:`.audit`, :mod:`.supplychain`, :mod:`.gateway` and
:mod:`.server`, :mod:`.attest` (enclaves and attested releases); :mod:`.registry` holds :data:`STEPS`, :func:`step` and the
moves they share. Importing this package registers every step.
"""

from __future__ import annotations

from strongroom.redteam.steps import (
    access,
    attest,
    audit,
    data,
    gateway,
    keys,
    server,
    supplychain,
)
from strongroom.redteam.steps.registry import SHARD, STEPS, step

__all__ = ["SHARD", "STEPS", "access", "attest", "audit", "data", "gateway", "keys", "server", "step",
           "supplychain"]

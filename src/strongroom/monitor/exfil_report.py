"""Time to exfiltrate: how long stealing a whole artifact takes under the budgets in force.

The report behind ``strongroom monitor egress`` and the posture assessment::

    for est in time_to_exfiltrate(meter.budgets(), [("atlas-70b@3", 140 * GiB)]):
        print(est.artifact, est.binding, f"{est.days:.1f} days")

(:meth:`strongroom.monitor.egress.EgressMeter.time_to_exfiltrate` does the same
with the meter's budgets.) Each :class:`ExfiltrationEstimate` names the budget
that binds (the slowest sustained rate) and the shortest wall time a patient
thief needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from strongroom.errors import InvalidInput
from strongroom.monitor.budgets import DAY, Budget, applicable

__all__ = ["ExfiltrationEstimate", "time_to_exfiltrate"]


@dataclass(frozen=True)
class ExfiltrationEstimate:
    """How long stealing a whole artifact takes under today's budgets (one principal)."""

    artifact: str
    size: int
    compression: float
    binding: Budget | None
    rate_bytes_per_s: float
    seconds: float
    min_seconds: float

    @property
    def days(self) -> float:
        """``seconds`` in days."""
        return self.seconds / DAY

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        b = self.binding
        return {"artifact": self.artifact, "size": self.size, "compression": self.compression,
                "binding_budget": None if b is None else
                {"scope": b.scope, "subject": b.subject, "window_s": b.window_s,
                 "cap_bytes": b.cap_bytes},
                "rate_bytes_per_s": self.rate_bytes_per_s, "seconds": self.seconds,
                "min_seconds": self.min_seconds, "days": self.days}


def time_to_exfiltrate(budgets: Sequence[Budget], artifacts: Iterable[tuple[str, int]], *,
                       compression: float = 1.0,
                       principal: str = "*") -> list[ExfiltrationEstimate]:
    """For each (artifact, size): size ÷ compression ÷ the tightest applicable cap rate.

    ``compression`` is original ÷ compressed size of what must cross the
    budget (1.0: bf16 weights barely compress). ``min_seconds`` is the
    shortest wall time a patient thief needs: a full cap now, then one per
    window.
    """
    if compression <= 0:
        raise InvalidInput("the compression factor must be > 0", obj="exfiltration report")
    out = []
    for ref, size in artifacts:
        hits = applicable(budgets, principal, ref)
        moved = size / compression
        binding = min(hits, key=lambda b: b.rate, default=None)
        if binding is None or binding.cap_bytes == 0:
            rate = math.inf if binding is None else 0.0
            seconds = 0.0 if binding is None else math.inf
            min_seconds = seconds
        else:
            rate = binding.rate
            seconds = moved / rate
            min_seconds = max((math.ceil(moved / b.cap_bytes) - 1) * b.window_s
                                 for b in hits if b.cap_bytes)
        out.append(ExfiltrationEstimate(ref, size, compression, binding, rate, seconds,
                                        float(min_seconds)))
    return out

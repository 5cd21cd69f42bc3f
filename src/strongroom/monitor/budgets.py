"""Egress budgets as values: a cap over a sliding window, for one scope and subject.

A :class:`Budget` says how many bytes may be released in any ``window_s``
seconds, per principal, per artifact or lab-wide; :func:`applicable` picks the
budgets one charge counts against (a named subject's budget replaces ``*`` for
its window)::

    budgets = [Budget("principal", "*", DAY, 256 * GiB), Budget("principal", "alice", DAY, GiB)]
    applicable(budgets, "alice", "atlas-70b@3")   # -> [Budget("principal", "alice", ...)]

:class:`BudgetUsage` is one budget's use right now; :class:`GrantBudgetSpent`
is the refusal when a Grant's (or break-glass) lifetime byte budget would be
passed. The meter that charges them is :class:`strongroom.monitor.egress.EgressMeter`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from strongroom.artifacts import base_name
from strongroom.errors import GrantBudgetSpent, InvalidInput

__all__ = [
    "DAY",
    "DEFAULT_BUDGETS",
    "SCOPES",
    "UNKNOWN_ARTIFACT",
    "Budget",
    "BudgetUsage",
    "GiB",
    "GrantBudgetSpent",
    "Scope",
    "TiB",
    "applicable",
    "subject_key",
]

GiB = 1024**3
TiB = 1024**4
DAY = 24 * 3600
Scope = Literal["principal", "artifact", "lab"]
SCOPES: tuple[Scope, ...] = ("principal", "artifact", "lab")
#: The artifact of a charge that names none (no artifact budget applies to it).
UNKNOWN_ARTIFACT = "?"


def subject_key(scope: str, principal: str, artifact: str) -> str:
    """Whose charges a budget of ``scope`` sums: the principal, the artifact's name, or all."""
    if scope == "principal":
        return principal
    return base_name(artifact) if scope == "artifact" else "*"


@dataclass(frozen=True)
class Budget:
    """At most ``cap_bytes`` released in any ``window_s`` seconds, for one scope and subject."""

    scope: Scope
    subject: str
    window_s: int
    cap_bytes: int

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidInput(f"unknown budget scope {self.scope!r}", obj="egress budget",
                               remedy=f"use one of {', '.join(SCOPES)}")
        if self.window_s <= 0 or self.cap_bytes < 0 or not self.subject:
            raise InvalidInput("a budget needs a subject, a window > 0 s and a cap >= 0 bytes",
                               obj=f"{self.scope} budget {self.subject}")
        if self.scope == "lab" and self.subject != "*":
            raise InvalidInput("the lab-wide budget's subject must be '*'", obj="lab budget")

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the budget: scope, subject, window."""
        return (self.scope, self.subject, self.window_s)

    @property
    def rate(self) -> float:
        """Sustained bytes per second this budget allows."""
        return self.cap_bytes / self.window_s

    def applies(self, principal: str, artifact: str | None) -> bool:
        """Whether a charge by ``principal`` for ``artifact`` counts against this budget."""
        if self.scope == "lab":
            return True
        if self.scope == "principal":
            return self.subject in ("*", principal)
        if artifact is None or artifact == UNKNOWN_ARTIFACT:
            return False
        return self.subject == "*" or self.subject in (artifact, base_name(artifact))

    def describe(self, principal: str, artifact: str | None) -> str:
        """Human name, e.g. ``principal alice / 24 h``."""
        who = {"principal": principal, "artifact": base_name(artifact or "?"),
               "lab": "lab-wide"}[self.scope]
        label = who if self.scope == "lab" else f"{self.scope} {who}"
        return f"{label} / {_window(self.window_s)}"


#: Defaults when an operator set nothing: sized so a 140 GiB model takes days, not minutes.
DEFAULT_BUDGETS: tuple[Budget, ...] = (
    Budget("principal", "*", DAY, 256 * GiB),
    Budget("artifact", "*", DAY, 1 * TiB),
    Budget("lab", "*", DAY, 8 * TiB),
)


def applicable(budgets: Iterable[Budget], principal: str, artifact: str | None) -> list[Budget]:
    """The budgets a charge counts against: a named subject's budget replaces ``*`` for its window."""
    hits = [b for b in budgets if b.applies(principal, artifact)]
    named = {(b.scope, b.window_s) for b in hits if b.subject != "*"}
    return [b for b in hits if b.subject != "*" or (b.scope, b.window_s) not in named
            or b.scope == "lab"]


def _window(seconds: int) -> str:
    if seconds % DAY == 0:
        return f"{seconds // DAY * 24} h"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds} s"


@dataclass(frozen=True)
class BudgetUsage:
    """How much of one budget is used in the window ending now."""

    budget: Budget
    subject: str
    used: int

    @property
    def remaining(self) -> int:
        """Bytes still allowed in this window."""
        return max(0, self.budget.cap_bytes - self.used)

    @property
    def fraction(self) -> float:
        """Used / cap (1.0 when the cap is 0)."""
        return self.used / self.budget.cap_bytes if self.budget.cap_bytes else 1.0

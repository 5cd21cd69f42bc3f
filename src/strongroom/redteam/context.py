"""What a step or a check sees: the target, the run's marker, and state shared between steps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strongroom.keys.identity import Identity
    from strongroom.redteam.target import EmbeddedTarget

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """One scenario's run against one target.

    ``marker`` (run id + scenario sequence) is put in every actor name, path and
    reason the scenario creates, so that its audit entries and alerts are found
    afterwards — and only those. ``observed`` keeps what the steps saw (errors
    raised at them) for the report; the grader never counts it as evidence.
    """

    target: EmbeddedTarget
    run_id: str
    marker: str
    audit_start: int
    started: float = field(default_factory=time.time)
    vars: dict[str, Any] = field(default_factory=dict)
    observed: list[str] = field(default_factory=list)

    def actor(self, who: str) -> str:
        """The principal name playing role ``who`` in this run: a marked name in the embedded
        target (e.g. ``mallory.rt1a2b-07``), the red-team identity's name on a live one."""
        return self.target.plays(who, self.marker)

    def ours(self, *texts: str | None) -> bool:
        """Whether any of ``texts`` marks this scenario: it carries the marker, or it is the
        name of an actor the target's run plays as (read within the scenario's window)."""
        names = self.target.own_names
        return any(self.marker in (t or "") or (t or "") in names for t in texts)

    def person(self, who: str) -> Identity:
        """The enrolled identity of marked role ``who``."""
        return self.target.people[self.actor(who)]

    def saw(self, what: str, exc: BaseException | None = None) -> None:
        """Remember an observation (for the report only)."""
        if exc is not None:
            message = getattr(exc, "message", str(exc))
            what = f"{what}: {type(exc).__name__}: {message}"
        self.observed.append(what[:300])

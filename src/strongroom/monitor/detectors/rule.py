"""What a detector rule sees and returns: the event, the context, the finding, and the base class.

:class:`ActivityEvent` is one audit event as the rules read it, :class:`Context`
what they know besides events (peer groups, canaries, the per-person cap,
flags), :class:`Finding` one rule's observation about one person, and
:class:`Detector` the base every rule subclasses: implement ``observe`` and
return a finding (usually through ``_once_a_day``) or ``None``::

    class Late(Detector):
        id, title, techniques = "SR-LATE", "late release", ("T1078",)

        def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
            return self._once_a_day(ev, "late") if is_release(ev) else None

The rules themselves live in :mod:`.baselines` and :mod:`.tripwires`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from strongroom.monitor.alerts import Alert
from strongroom.monitor.peers import Flag, PeerGroups, Person, StaticPeers

if TYPE_CHECKING:
    from strongroom.audit.log import AuditEvent

DAY = 86400
HOUR = 3600
RELEASE = "key.release"
#: What taking break-glass is audited as (``strongroom.access.breakglass.ALERT_ACTION``).
BREAK_GLASS_ACTION = "access.break-glass"
FLAG = "person.flag"


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One audit event as detectors see it (``time`` in seconds since the epoch, UTC)."""

    time: float
    actor: str
    action: str
    object: str
    decision: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    shard: str | None = None
    nbytes: int | None = None
    index: int | None = None
    #: ``object`` up to its first ``/``, split once (every rule reads it).
    _artifact: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_artifact", self.object.split("/", 1)[0])

    @classmethod
    def from_audit(cls, ev: AuditEvent) -> ActivityEvent:
        """Convert an :class:`~strongroom.audit.log.AuditEvent`."""
        return cls(ev.at, ev.actor, ev.action, ev.object, ev.decision, ev.reason,
                   ev.details, ev.shard, ev.nbytes, ev.index)

    @property
    def artifact(self) -> str:
        """The artifact reference (``name@version``) the event's object is in."""
        return self._artifact

    @property
    def host(self) -> str | None:
        """The host the request came from, when the gate recorded it."""
        host = self.details.get("host")
        return host if isinstance(host, str) and host else None


#: The static peer-group provider under its historical name (tests, the synthetic lab).
Directory = StaticPeers


@dataclass(frozen=True)
class Finding:
    """One detector's observation about one person at one time."""

    rule: str
    severity: str
    person: str
    time: float
    obj: str
    message: str
    techniques: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    @property
    def dedup_key(self) -> str:
        """One finding per rule, person, object and day."""
        return f"{self.rule}:{self.person}:{self.obj}:{int(self.time // DAY)}"

    def to_alert(self) -> Alert:
        """The alert this finding raises on its own (``high``/``critical`` findings)."""
        return Alert(rule=self.rule, severity=self.severity, subject=self.person, obj=self.obj,
                     message=self.message, dedup_key=self.dedup_key,
                     details={**self.details, "time": int(self.time)},
                     techniques=self.techniques)


@dataclass
class Context:
    """What detectors know besides events: people, canaries, caps, flags."""

    directory: PeerGroups
    canaries: Callable[[], frozenset[str]]
    principal_cap: tuple[int, int] | None
    flags: dict[str, list[Flag]] = field(default_factory=dict)
    #: The person the current event's rules asked for (the engine clears it per event).
    _seen: tuple[str, Person] | None = field(default=None, repr=False, compare=False)

    def person(self, principal: str) -> Person:
        """``directory.person(principal)``, asked once per event however many rules ask."""
        seen = self._seen
        if seen is not None and seen[0] == principal:
            return seen[1]
        who = self.directory.person(principal)
        self._seen = (principal, who)
        return who

    def new_event(self) -> None:
        """Forget the person asked for: the next event asks the directory again."""
        self._seen = None

    def flag_of(self, principal: str, at: float) -> Flag | None:
        """The latest flag on ``principal`` at or before ``at``: audit ``person.flag`` or directory."""
        found = [f for f in self.flags.get(principal, ()) if f[0] <= at]
        listed = self.directory.flag(principal, at)
        if listed is not None:
            found.append(listed)
        return max(found) if found else None


class Detector:
    """Base of the rules: ``observe`` sees every event in time order and returns findings."""

    id: ClassVar[str]
    title: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]
    severity: ClassVar[str] = "low"
    #: Whether the rule compares people with learnt baselines (and so stays quiet while
    #: the engine is learning); rules that judge an event on its own say False.
    learns: ClassVar[bool] = True

    def __init__(self) -> None:
        self._flagged_day: dict[str, tuple[int, float]] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Update state with ``ev``; return a finding when the rule fires."""
        raise NotImplementedError

    def due(self, now: float) -> list[Alert]:
        """Alerts that time alone makes due at ``now`` (no new event needed); none by default."""
        return []

    def _flagged_since(self, person: str, day: int) -> bool:
        """Whether this rule flagged ``person`` on ``day`` or later (kept out of peer baselines)."""
        seen = self._flagged_day.get(person)
        return seen is not None and seen[0] >= day

    def _once_a_day(self, ev: ActivityEvent, message: str, obj: str | None = None,
                    weight: float = 1.0, **details: Any) -> Finding | None:
        """A finding unless this rule already flagged the person today with at least ``weight``."""
        day = int(ev.time // DAY)
        seen = self._flagged_day.get(ev.actor)
        if seen is not None and seen[0] == day and seen[1] >= weight:
            return None
        self._flagged_day[ev.actor] = (day, weight)
        return Finding(self.id, self.severity, ev.actor, ev.time, obj or ev.artifact, message,
                       self.techniques, details, weight)


def is_release(ev: ActivityEvent) -> bool:
    """Whether ``ev`` is a key release the gate allowed."""
    return ev.action == RELEASE and ev.decision == "allow"

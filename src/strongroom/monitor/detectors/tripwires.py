"""Detector rules that need no learnt baseline: a fixed threshold or a marked object.

Repeated refusals at the gate (:class:`Denials`) or at the server's edge
(:class:`EdgeProbing`), a release by a flagged person (:class:`AfterFlag`), a
touch of a canary (:class:`CanaryTouch`), any break-glass
(:class:`BreakGlassUse`) and a break-glass left unreviewed for a day
(:class:`UnreviewedBreakGlass`, due on the clock, not on an event), a break-glass
reviewed as not justified (:class:`UnjustifiedBreakGlass`). Canary and
break-glass findings are critical: each is an alert on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from strongroom.artifacts import base_name
from strongroom.monitor.alerts import Alert
from strongroom.monitor.detectors.rule import (
    BREAK_GLASS_ACTION,
    DAY,
    RELEASE,
    ActivityEvent,
    Context,
    Detector,
    Finding,
    is_release,
)


class Denials(Detector):
    """Many refused key requests within a day: probing for what is reachable."""

    id = "SR-DENIALS"
    title = "many denials"
    techniques = ("T1083", "AML.T0007")

    def __init__(self, threshold: int = 5, window_s: float = DAY) -> None:
        super().__init__()
        self.threshold = threshold
        self.window_s = window_s
        self._denials: dict[str, deque[float]] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag ``threshold`` or more denials in ``window_s``."""
        if ev.action != RELEASE or ev.decision != "deny":
            return None
        q = self._denials.setdefault(ev.actor, deque())
        q.append(ev.time)
        while q and q[0] <= ev.time - self.window_s:
            q.popleft()
        if len(q) >= self.threshold:
            return self._once_a_day(ev, f"{ev.actor} was refused {len(q)} key releases in 24 h",
                                    denials=len(q))
        return None


class AfterFlag(Detector):
    """Access soon after a vetting flag or a resignation notice; more so when it reaches out.

    Every release within ``within_s`` after the person's latest flag is a
    finding (weight 1). Opening an artifact the person never opened before,
    once they have ``settled_s`` of history, weighs double: people who leave
    with data take what they did not work on, while a benign leaver keeps to
    their own work.
    """

    id = "SR-FLAGGED"
    title = "access soon after a vetting flag or resignation notice"
    techniques = ("T1078", "AML.T0035")

    def __init__(self, within_s: float = 30 * DAY, settled_s: float = 14 * DAY,
                 reach_weight: float = 2.0) -> None:
        super().__init__()
        self.within_s = within_s
        self.settled_s = settled_s
        self.reach_weight = reach_weight
        self._seen: dict[str, set[str]] = {}
        self._first: dict[str, float] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag releases within ``within_s`` after the person's latest flag."""
        if not is_release(ev):
            return None
        first = self._first.setdefault(ev.actor, ev.time)
        seen = self._seen.setdefault(ev.actor, set())
        new = ev.artifact not in seen
        seen.add(ev.artifact)
        flag = ctx.flag_of(ev.actor, ev.time)
        if flag is None or not 0 <= ev.time - flag[0] <= self.within_s:
            return None
        days = (ev.time - flag[0]) / DAY
        if new and ev.time - first >= self.settled_s:
            return self._once_a_day(ev, f"{ev.actor} opened {ev.artifact}, new to them, "
                                    f"{days:.0f} days after a {flag[1]} flag",
                                    weight=self.reach_weight, flag=flag[1])
        return self._once_a_day(ev, f"{ev.actor} released a key {days:.0f} days after a "
                                f"{flag[1]} flag", flag=flag[1])


class CanaryTouch(Detector):
    """Any touch of a canary artifact (decoy): critical on its own."""

    id = "SR-CANARY"
    title = "touch of a canary"
    techniques = ("T1213", "AML.T0007")
    severity = "critical"

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag any event on a canary except its import."""
        if ev.action == "weights.import":
            return None
        name = base_name(ev.artifact)
        if name not in ctx.canaries():
            return None
        return Finding(self.id, self.severity, ev.actor, ev.time, ev.artifact,
                       f"{ev.actor} touched canary {ev.artifact} ({ev.action} {ev.decision})",
                       self.techniques, {"action": ev.action, "decision": ev.decision})


class BreakGlassUse(Detector):
    """Any break-glass: taken (``access.break-glass``) or used at the gate; critical at once.

    Break-glass is allowed by design for the people a label lists; the control
    is that every use is seen at once and reviewed by a quorum afterwards. A
    break-glass statement written straight into the store, never announced,
    is still caught by the gate's release entry carrying its id.
    """

    id = "SR-BREAKGLASS"
    title = "break-glass access taken or used"
    techniques = ("T1078", "T1548")
    severity = "critical"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag each break-glass once, when taken or at its first release."""
        if ev.decision != "allow":
            return None
        if ev.action == BREAK_GLASS_ACTION:
            bg, how = ev.details.get("break_glass"), "took break-glass access to"
        elif is_release(ev):
            bg, how = ev.details.get("break_glass"), "released a key under break-glass for"
        else:
            return None
        if not isinstance(bg, str) or not bg or bg in self._seen:
            return None
        self._seen.add(bg)
        reason = ev.details.get("reason_given") or ev.reason
        return Finding(self.id, self.severity, ev.actor, ev.time, ev.artifact,
                       f"{ev.actor} {how} {ev.artifact} (break-glass {bg[:16]}): "
                       f"{str(reason)[:120]}; a quorum review is due",
                       self.techniques, {"break_glass": bg, "action": ev.action}, weight=2.0)


#: Audit action of a signed review of a break-glass (API, CLI or console).
REVIEW_ACTION = "access.break-glass.review"


class UnjustifiedBreakGlass(Detector):
    """A break-glass a reviewer judged not justified: one ``high`` alert per such review.

    Driven from the review's audit entry (its reason is the verdict; API, CLI and
    console all record it so), so reviews made by any face count. The taker and
    artifact come from the break-glass entry when the log holds it. Like
    :class:`UnreviewedBreakGlass`, the alert is handed out by :meth:`due` (the
    monitor loop's next tick), not folded into the engine's one-case-per-person
    ``high`` findings: two unjustified reviews are two alerts (de-duplicated by
    break-glass and reviewer).
    """

    id = "SR-BREAKGLASS-UNJUSTIFIED"
    title = "break-glass reviewed as not justified"
    techniques = ("T1078", "T1548")
    severity = "high"
    learns = False

    def __init__(self) -> None:
        super().__init__()
        #: break-glass id -> (taker, artifact), from the entries that took it
        self._taken: dict[str, tuple[str, str]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._pending: list[Alert] = []

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Remember who took each break-glass; queue an alert for each unjustified review."""
        bg = ev.details.get("break_glass")
        if not isinstance(bg, str) or not bg or ev.decision != "allow":
            return None
        if ev.action == BREAK_GLASS_ACTION:
            self._taken.setdefault(bg, (ev.actor, ev.artifact))
        elif ev.action == REVIEW_ACTION and ev.reason == "unjustified" \
                and (bg, ev.actor) not in self._seen:
            self._seen.add((bg, ev.actor))
            taker, artifact = self._taken.get(bg, ("unknown", f"break-glass {bg[:16]}"))
            self._pending.append(Alert(
                rule=self.id, severity=self.severity, subject=taker, obj=artifact,
                message=f"{ev.actor} reviewed break-glass {bg[:16]} by {taker} on {artifact} "
                        "as not justified",
                dedup_key=f"{self.id}:{bg}:{ev.actor}",
                details={"break_glass": bg, "reviewer": ev.actor, "time": int(ev.time)},
                techniques=self.techniques))
        return None

    def due(self, now: float) -> list[Alert]:
        """The alerts for unjustified reviews seen since the last call, once each."""
        out, self._pending = self._pending, []
        return out


#: Whether a break-glass (by id) has its quorum of verified reviews, and who reviewed it.
ReviewState = Callable[[str], tuple[bool, Sequence[str]]]


class UnreviewedBreakGlass(Detector):
    """A break-glass still not reviewed by its quorum ``due_s`` (24 h) after it was first seen.

    Uses are read from the log (taken, or first used at the gate), so a statement row
    deleted from the store is still followed; whether the quorum has reviewed it is
    asked of ``review_state`` (the runtime verifies the stored reviews' signatures
    against the officer-signed directory). :meth:`due`, called by the monitor loop on
    every tick, raises one ``high`` alert per use (de-duplicated by its id) and then
    forgets it; a use reviewed in time is forgotten without one.
    """

    id = "SR-BREAKGLASS-REVIEW"
    title = "break-glass not reviewed by the quorum within 24 h"
    techniques = ("T1078", "T1548")
    severity = "high"
    learns = False

    def __init__(self, review_state: ReviewState | None = None, due_s: float = DAY) -> None:
        super().__init__()
        self.review_state = review_state
        self.due_s = due_s
        #: break-glass id -> (first seen, who, artifact), until reviewed or alerted
        self._open: dict[str, tuple[float, str, str]] = {}
        self._done: set[str] = set()

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Remember each break-glass when first seen (taken or used); never a finding itself."""
        if ev.decision != "allow" or not (ev.action == BREAK_GLASS_ACTION or is_release(ev)):
            return None
        bg = ev.details.get("break_glass")
        if isinstance(bg, str) and bg and bg not in self._done and bg not in self._open:
            self._open[bg] = (ev.time, ev.actor, ev.artifact)
        return None

    def due(self, now: float) -> list[Alert]:
        """One alert for each use past ``due_s`` whose quorum has not reviewed it."""
        if self.review_state is None:
            return []
        out = []
        for bg, (seen, who, artifact) in sorted(self._open.items(), key=lambda kv: kv[1][0]):
            if now - seen < self.due_s:
                continue
            reviewed, reviewers = self.review_state(bg)  # may raise: asked again next tick
            del self._open[bg]
            self._done.add(bg)
            if reviewed:
                continue
            by = ", ".join(reviewers) or "nobody"
            out.append(Alert(
                rule=self.id, severity=self.severity, subject=who, obj=artifact,
                message=f"break-glass {bg[:16]} by {who} on {artifact} is "
                        f"{(now - seen) / 3600:.0f} h old and not reviewed by 2 security "
                        f"officers (reviewed by: {by})",
                dedup_key=f"{self.id}:{bg}",
                details={"break_glass": bg, "taken": int(seen), "reviewed_by": list(reviewers)},
                techniques=self.techniques))
        return out


#: Refusals at the server's edge, audited by the API and the console.
EDGE_REFUSALS = frozenset({"api.request", "console.sign-in", "console.csrf"})


class EdgeProbing(Detector):
    """Many refused requests at the API or the console from one client address.

    Forged, replayed or stale signatures, CSRF attempts and failed security-key
    sign-ins are refused before they touch anything, and audited (rate-limited:
    an entry may carry a count of the refusals folded into it). Twenty in ten
    minutes from one address is someone trying credentials or captured
    requests, not a user with a skewed clock. The finding's subject is the
    address (``host:<ip>``), once a day; no baseline is involved.
    """

    id = "SR-PROBE"
    title = "refused API or console requests from one address"
    techniques = ("T1110", "T1550", "T1190")
    severity = "high"
    learns = False

    def __init__(self, threshold: int = 20, window_s: float = 600.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.window_s = window_s
        self._seen: dict[str, deque[tuple[float, int, str]]] = {}
        self._flagged: dict[str, int] = {}

    def observe(self, ev: ActivityEvent, ctx: Context) -> Finding | None:
        """Flag ``threshold`` edge refusals from one address within ``window_s``."""
        if ev.decision != "deny" or ev.action not in EDGE_REFUSALS:
            return None
        host = ev.host or "unknown"
        folded = ev.details.get("suppressed")
        count = 1 + (folded if isinstance(folded, int) and folded > 0 else 0)
        q = self._seen.setdefault(host, deque())
        q.append((ev.time, count, ev.action))
        while q and q[0][0] <= ev.time - self.window_s:
            q.popleft()
        total = sum(n for _, n, _ in q)
        day = int(ev.time // DAY)
        if total < self.threshold or self._flagged.get(host) == day:
            return None
        self._flagged[host] = day
        kinds = sorted({action for _, _, action in q})
        return Finding(self.id, self.severity, f"host:{host}", ev.time, ev.object,
                       f"{total} requests from {host} were refused at the edge in "
                       f"{self.window_s / 60:.0f} min (latest: {ev.action}, {ev.reason[:100]})",
                       self.techniques, {"host": host, "refusals": total, "kinds": kinds})

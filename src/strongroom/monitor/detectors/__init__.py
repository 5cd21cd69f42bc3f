"""Insider-risk detectors over audit events, and the per-person risk score that escalates.

Each detector is a small stateful rule with an id and the MITRE ATT&CK /
ATLAS techniques it covers (:data:`CATALOGUE`). A :class:`RiskEngine` feeds
events, in time order, to every detector, keeps each person's recent findings
and turns them into alerts:

* a ``critical`` finding (a canary touch) is an alert every time; a ``high``
  one (repeated windows near the cap) once per person and rule a week;
* ``low`` findings (off-hours, first access, daily and weekly volume,
  denials, breadth, a flagged person, a new host) carry a *weight* (1, or 2
  where the detector's own feature is strong: another person's host, a
  fortnight of breadth, a week of volume far over the person's norm, a flagged
  person opening something new). The engine sums, per person, each distinct
  rule's strongest weight, halved for every ``half_life_s`` (3 days) of age,
  over ``window_s`` (7 days); at ``escalate_at`` (2.5) from at least
  ``min_rules`` (2) distinct rules it raises one ``SR-RISK`` alert, as UEBA
  tools do: three weak signals close together, or one strong and one weak.
  The case then stays open for ``reopen_s`` (30 days): only a rule not yet in
  it raises a new ``SR-RISK``.

Use it over the audit log, peers from the officer-signed directory::

    engine = RiskEngine(directory=SignedDirectoryPeers(reader), canaries=registry.names(),
                        principal_cap=(256 * GiB, 86400))
    scanner = AuditScanner(log, engine, alerts)
    scanner.scan()                       # raises new alerts; call again for new events

or over any events of the same shape (:class:`ActivityEvent`, e.g. the
synthetic lab of :mod:`strongroom.monitor.evaluation`, with
:class:`~strongroom.monitor.peers.StaticPeers`) with :meth:`RiskEngine.process`.
Baselines are learnt online and rebuilt by replaying the log at start: for
the first ``learn_s`` seconds (14 days) only canaries alert. Peer baselines
leave the person themselves out (:class:`PeerPool`) and anyone the same rule
has flagged. Events the monitor wrote itself (``alert.*``, ``monitor.*``) are
ignored. Context it reads: ``person.flag`` events (object = the person,
``details.kind`` = ``resignation`` or ``vetting``), the peer provider's
flags (vetting and employment records), and a release's ``details.host``.

Do not feed events out of time order, and do not lower ``escalate_at`` or
``min_rules`` without re-running ``strongroom monitor eval`` over several
seeds: single weak signals are noisy by nature.

The package, by job: :mod:`.rule` (what a rule sees and returns, and the
:class:`Detector` base), :mod:`.baselines` (rules that learn what is normal),
:mod:`.tripwires` (rules on a fixed threshold or a marked object),
:mod:`.engine` (:class:`RiskEngine`, the catalogue, escalation) and
:mod:`.scanner` (:class:`AuditScanner` over the audit log). Import from here.
"""

from strongroom.monitor.detectors.baselines import (
    Breadth,
    FirstAccess,
    NewHost,
    OffHours,
    SustainedVolume,
    UnderCap,
    Volume,
)
from strongroom.monitor.detectors.engine import (
    CATALOGUE,
    SEVERITY_WEIGHT,
    RiskEngine,
    RiskScore,
    default_detectors,
)
from strongroom.monitor.detectors.rule import (
    BREAK_GLASS_ACTION,
    DAY,
    FLAG,
    HOUR,
    RELEASE,
    ActivityEvent,
    Context,
    Detector,
    Directory,
    Finding,
)
from strongroom.monitor.detectors.scanner import AuditScanner
from strongroom.monitor.detectors.tripwires import (
    EDGE_REFUSALS,
    AfterFlag,
    BreakGlassUse,
    CanaryTouch,
    Denials,
    EdgeProbing,
    ReviewState,
    UnjustifiedBreakGlass,
    UnreviewedBreakGlass,
)
from strongroom.monitor.peers import PeerGroups, Person, StaticPeers

__all__ = [
    "BREAK_GLASS_ACTION",
    "CATALOGUE",
    "DAY",
    "EDGE_REFUSALS",
    "FLAG",
    "HOUR",
    "RELEASE",
    "SEVERITY_WEIGHT",
    "ActivityEvent",
    "AfterFlag",
    "AuditScanner",
    "Breadth",
    "BreakGlassUse",
    "CanaryTouch",
    "Context",
    "Denials",
    "Detector",
    "Directory",
    "EdgeProbing",
    "Finding",
    "FirstAccess",
    "NewHost",
    "OffHours",
    "PeerGroups",
    "Person",
    "ReviewState",
    "RiskEngine",
    "RiskScore",
    "StaticPeers",
    "SustainedVolume",
    "UnderCap",
    "UnjustifiedBreakGlass",
    "UnreviewedBreakGlass",
    "Volume",
    "default_detectors",
]

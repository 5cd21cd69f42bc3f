"""Score facts and a declaration into levels per control family and overall.

A family reaches level L when every one of its controls required at L or
below is *met* (verified) or *declared*, and it has controls defined up to
L: strongroom never credits a level it has no control for. The deployment's
overall level is the lowest family level — one weak family is where a
capable attacker goes. *Unknown* never counts as met.

    facts = collect(home, store, keys)
    result = assess(facts, declaration)
    result.to_json()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.posture.controls import CONTROLS, DECLARED, FAMILIES, MET, Control
from strongroom.posture.declaration import Declaration
from strongroom.posture.facts import Facts

__all__ = ["LEVEL_NAMES", "Assessment", "ControlResult", "FamilyResult", "assess"]

LEVEL_NAMES = {
    0: "below SL1",
    1: "SL1 — amateur attempts",
    2: "SL2 — opportunistic professionals",
    3: "SL3 — cybercrime groups and insiders",
    4: "SL4 — standard state operations",
    5: "SL5 — top-priority state operations",
}


@dataclass(frozen=True)
class ControlResult:
    """A scored control."""

    id: str
    family: str
    level: int
    title: str
    source: str
    status: str
    evidence: str

    @property
    def satisfied(self) -> bool:
        """Met, or declared by a person."""
        return self.status in (MET, DECLARED)


@dataclass
class FamilyResult:
    """One family: its level, its controls, and what blocks the next level."""

    key: str
    title: str
    level: int
    controls: list[ControlResult]
    max_level: int
    blocking: list[ControlResult] = field(default_factory=list)

    @property
    def next_step(self) -> str:
        """What stands between this family and the next level, in words."""
        if self.level >= 5:
            return "at SL5"
        if self.level >= self.max_level:
            return (f"strongroom has no SL{self.level + 1} control for this family; "
                    "it cannot be assessed by software")
        return "; ".join(f"{c.id} {c.title} — {c.status}: {c.evidence}" for c in self.blocking)


@dataclass
class Assessment:
    """The whole report."""

    generated: str
    level: int
    families: list[FamilyResult]
    facts: Facts
    declaration: Declaration

    def to_json(self) -> dict[str, Any]:
        """The JSON twin of the HTML report."""
        return {
            "generated": self.generated,
            "overall": {"level": self.level, "name": LEVEL_NAMES[self.level],
                        "weakest_families": [f.key for f in self.families
                                             if f.level == self.level]},
            "families": [{
                "key": f.key, "title": f.title, "level": f.level, "max_assessable": f.max_level,
                "next_level": None if f.level >= 5 else f.level + 1,
                "to_reach_next": f.next_step,
                "controls": [{"id": c.id, "level": c.level, "title": c.title,
                              "source": c.source, "status": c.status, "evidence": c.evidence}
                             for c in f.controls]} for f in self.families],
            "evidence": {
                "keyring": self.facts.keyring, "officers": self.facts.officers,
                "holders_per_artifact": self.facts.holders, "caps": self.facts.caps,
                "witnesses": self.facts.witnesses, "witness_quorum": self.facts.witness_quorum,
                "audit": self.facts.audit, "principal_cap_bytes": self.facts.principal_cap_bytes,
                "time_to_exfiltrate": self.facts.exfiltration, "canaries": self.facts.canaries,
                "redteam": None if not self.facts.redteam else {
                    "run_id": self.facts.redteam.get("run_id"),
                    "started": self.facts.redteam.get("started"),
                    "missed": self.facts.redteam.get("missed"),
                    "source": self.facts.redteam.get("source"),
                    "verified": self.facts.redteam.get("verified"),
                    "trend": [{"run_id": r.get("run_id"), "started": r.get("started"),
                               "missed": r.get("missed"), "counts": r.get("counts"),
                               "verified": r.get("verified")}
                              for r in self.facts.redteam_runs],
                    "outcomes": {str(r.get("id")): r.get("outcome")
                                 for r in self.facts.redteam.get("results", [])}},
                "notes": self.facts.notes,
            },
            "declaration": {"source": self.declaration.source,
                            "assessor": self.declaration.assessor,
                            "claims": dict(self.declaration.values)},
        }


def _score(control: Control, facts: Facts, decl: Declaration) -> ControlResult:
    status, evidence = control.evaluate(facts, decl)
    return ControlResult(control.id, control.family, control.level, control.title,
                         control.source, status, evidence)


def assess(facts: Facts, declaration: Declaration | None = None) -> Assessment:
    """Score every control and derive the levels."""
    decl = declaration or Declaration({})
    families = []
    for key, title in FAMILIES.items():
        results = [_score(c, facts, decl) for c in CONTROLS if c.family == key]
        max_level = max((c.level for c in results), default=0)
        level = 0
        for lvl in range(1, max_level + 1):
            if all(c.satisfied for c in results if c.level <= lvl):
                level = lvl
            else:
                break
        blocking = [c for c in results if c.level <= level + 1 and not c.satisfied]
        families.append(FamilyResult(key, title, level, results, max_level, blocking))
    overall = min(f.level for f in families)
    return Assessment(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), overall, families,
                      facts, decl)

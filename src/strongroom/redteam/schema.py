"""Red-team scenario files: the YAML schema, its validator and the loader.

A scenario file (``scenarios/*.yaml``, shipped as package data) looks like::

    id: RT-ACC-001
    title: Stolen engineer credentials used to load the weights
    group: credentials            # one of RAND's nine attack-vector groups (GROUPS)
    control: grant-evidence       # the control it attacks (strongroom.redteam.controls)
    mitre:
      attack: [T1078]             # ATT&CK technique ids (current release)
      attack_pre_v19: []          # only where ids differ before ATT&CK v19 (optional)
      atlas: []                   # MITRE ATLAS ids (optional)
    adversary: OC2                # the lowest RAND operational capacity able to try it
    preconditions: [{step: enroll, args: {who: eve}}]
    steps: [{step: load_weights, args: {who: eve}}]
    cleanup: []
    expect:
      blocked: {action: key.release, reason: grant}   # a marked denial naming the control
      detected: SR-EGRESS-CAP            # an alert with this detector id for the run's actors
      checks: [{check: artifact_absent, args: {name: evil}}]
    needs: [insider]              # what the attacker must hold (NEEDS); at least one
    timeout_s: 20

Steps and checks are *names* looked up in registries of Python functions
(:mod:`strongroom.redteam.steps`, :mod:`strongroom.redteam.checks`); nothing
in a file is evaluated. :func:`load_scenario` refuses a bad file with an
:class:`~strongroom.errors.InvalidInput` naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from strongroom.errors import InvalidInput

__all__ = [
    "GROUPS",
    "NEEDS",
    "Expectation",
    "Scenario",
    "StepCall",
    "load_builtin",
    "load_scenario",
    "parse_scenario",
]

#: RAND's nine attack-vector groups ("Securing AI Model Weights", 2024), by key.
GROUPS: dict[str, str] = {
    "unauthorized-code": "Running unauthorized code",
    "credentials": "Compromising existing credentials",
    "access-control": "Undermining the access control system itself",
    "bypass": "Bypassing primary security systems altogether",
    "data-network-access": "Nontrivial access to data or networks",
    "physical": "Unauthorized physical access to systems",
    "supply-chain": "Supply chain attacks",
    "humint": "Human intelligence (insiders, bribery, coercion)",
    "ai-specific": "AI-specific attack vectors",
}
#: What a scenario may need, and who supplies it. A target runs a scenario only when it
#: supplies every need; the others are reported "not run: needs X", never passed.
NEEDS: dict[str, str] = {
    "network": "the deployment's API over the network (every target)",
    "insider": "an enrolled identity the operator issued to the red team (--identity); "
               "it plays every role the scenario names",
    "dba": "the deployment's database with a DBA's credentials (--database-url)",
    "officers": "the security officers' keys: enroll marked people, label artifacts, issue "
                "Grants with standing approvers (embedded target only)",
    "approvers": "approvers the operator lends the red team (--approver-identity, at least "
                 "as many as the model's load rule needs): they approve, issue and revoke "
                 "the run's Grants",
    "lent-officers": "security officers the operator lends the red team (--officer-identity): "
                     "they re-issue the red team's own enrollment and the model's label for one "
                     "scenario, put back as they were after it",
    "host-shell": "a shell on a serving host: its data directory, settings, database and "
                  "key agent (--host-home DIR)",
    "blob-bucket": "read access to the blob store (--blob-bucket)",
    "gateway": "a running inference gateway (--gateway URL) and enrolled callers the operator "
               "lends, each holding an infer Grant on its model (--gateway-caller, one per "
               "gateway scenario: a scenario spends its caller's daily budget or has it "
               "suspended)",
    "in-process": "the deployment's objects in the suite's own process: steps not spoken "
                  "over the API (embedded target only)",
    "own-target": "a fresh deployment the scenario may leave unusable (embedded target only)",
    "sqlite": "an SQLite store whose write lock the scenario holds",
    "softhsm": "SoftHSM2's tools (softhsm2-util, the PKCS#11 module)",
}
ADVERSARIES = ("OC1", "OC2", "OC3", "OC4", "OC5")
_ID = re.compile(r"^RT-[A-Z]{2,8}-\d{3}$")
_ATTACK = re.compile(r"^T\d{4}(\.\d{3})?$")
_ATLAS = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_DETECTOR = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{1,63}$")
_TOP = {"id", "title", "group", "control", "mitre", "adversary", "preconditions", "steps", "cleanup",
        "expect", "needs", "timeout_s", "notes"}
MAX_TIMEOUT_S = 600


@dataclass(frozen=True)
class StepCall:
    """One named step (or check) and its keyword arguments."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Expectation:
    """What must be found afterwards for the scenario to count as stopped."""

    #: Blocking is expected.
    blocked: bool = False
    #: When set, blocking needs audit denials by the run's actors for this action ("" = any)
    #: and no allow of it; ``None``: the checks alone find the blocking evidence.
    audit_action: str | None = None
    #: The detector id whose alert must be found for the run's actors.
    detected: str | None = None
    #: Grader-side checks; each must find its evidence.
    checks: tuple[StepCall, ...] = ()
    #: Text the denial's reason must contain (the control under test, not another one).
    reason: str = ""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario."""

    id: str
    title: str
    group: str
    control: str
    attack: tuple[str, ...]
    attack_pre_v19: tuple[str, ...]
    atlas: tuple[str, ...]
    adversary: str
    preconditions: tuple[StepCall, ...]
    steps: tuple[StepCall, ...]
    cleanup: tuple[StepCall, ...]
    expect: Expectation
    needs: tuple[str, ...]
    timeout_s: float
    notes: str = ""
    source: str = ""

    @property
    def group_title(self) -> str:
        """RAND's name of the group."""
        return GROUPS[self.group]


def _fail(source: str, where: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", obj=source,
                        remedy="see the schema in strongroom/redteam/schema.py "
                               "(docs/redteam.md)")


def _str(doc: Mapping[str, Any], key: str, source: str, *, pattern: re.Pattern[str] | None = None,
         required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, "must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(source, key, f"{value!r} does not match {pattern.pattern}")
    return value


def _ids(value: Any, source: str, where: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, where, "must be a list of strings")
    for v in value:
        if not pattern.fullmatch(v):
            raise _fail(source, where, f"{v!r} is not a valid id ({pattern.pattern})")
    return tuple(value)


def _calls(value: Any, source: str, where: str, registry: Mapping[str, Any]) -> tuple[StepCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, where, "must be a list of {step: NAME, args: {...}}")
    out = []
    key = "check" if where.endswith("checks") else "step"
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(item, Mapping) or set(item) - {key, "args"} or key not in item:
            raise _fail(source, here, f"must be a mapping with '{key}' and optional 'args'")
        name = item[key]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _fail(source, here, f"{key} name {name!r} is not a valid name")
        if name not in registry:
            raise _fail(source, here, f"unknown {key} {name!r}; known: "
                        + ", ".join(sorted(registry)))
        args = item.get("args") or {}
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise _fail(source, here, "args must be a mapping with string keys")
        out.append(StepCall(name, dict(args)))
    return tuple(out)


def parse_scenario(doc: Any, source: str = "<scenario>") -> Scenario:
    """Validate one parsed YAML document; raise InvalidInput naming the first problem."""
    from strongroom.redteam.checks import CHECKS
    from strongroom.redteam.controls import CONTROLS
    from strongroom.redteam.steps import STEPS

    if not isinstance(doc, Mapping):
        raise _fail(source, "document", "must be a mapping")
    extra = set(map(str, doc)) - _TOP
    if extra:
        raise _fail(source, "document", f"unknown field(s) {', '.join(sorted(extra))}")
    sid = _str(doc, "id", source, pattern=_ID)
    title = _str(doc, "title", source)
    group = _str(doc, "group", source)
    if group not in GROUPS:
        raise _fail(source, "group", f"{group!r} is not one of RAND's groups: "
                    + ", ".join(GROUPS))
    control = _str(doc, "control", source)
    if control not in CONTROLS:
        raise _fail(source, "control", f"{control!r} is not a known control; known: "
                    + ", ".join(sorted(CONTROLS)))
    mitre = doc.get("mitre")
    if not isinstance(mitre, Mapping) or set(mitre) - {"attack", "attack_pre_v19", "atlas"}:
        raise _fail(source, "mitre", "must be a mapping of attack, attack_pre_v19, atlas")
    attack = _ids(mitre.get("attack"), source, "mitre.attack", _ATTACK)
    pre = _ids(mitre.get("attack_pre_v19"), source, "mitre.attack_pre_v19", _ATTACK)
    atlas = _ids(mitre.get("atlas"), source, "mitre.atlas", _ATLAS)
    if not attack and not atlas:
        raise _fail(source, "mitre", "name at least one ATT&CK or ATLAS technique")
    adversary = _str(doc, "adversary", source)
    if adversary not in ADVERSARIES:
        raise _fail(source, "adversary", f"must be one of {', '.join(ADVERSARIES)}")
    steps = _calls(doc.get("steps"), source, "steps", STEPS)
    if not steps:
        raise _fail(source, "steps", "a scenario needs at least one step")
    expect = doc.get("expect")
    if not isinstance(expect, Mapping) or set(expect) - {"blocked", "detected", "checks"}:
        raise _fail(source, "expect", "must be a mapping of blocked, detected, checks")
    blocked = expect.get("blocked")
    if blocked is not None and blocked is not True and not (
            isinstance(blocked, Mapping) and set(blocked) <= {"action", "reason"}
            and all(isinstance(v, str) for v in blocked.values())):
        raise _fail(source, "expect.blocked",
                    "must be true or {action: AUDIT_ACTION, reason: TEXT IN THE DENIAL}")
    detected = expect.get("detected")
    if detected is not None and (not isinstance(detected, str)
                                 or not _DETECTOR.fullmatch(detected)):
        raise _fail(source, "expect.detected", "must be a detector id such as SR-CANARY")
    checks = _calls(expect.get("checks"), source, "expect.checks", CHECKS)
    if blocked is None and detected is None:
        raise _fail(source, "expect", "say whether it must be blocked, detected or both")
    if blocked is True and not checks:
        raise _fail(source, "expect.blocked", "'true' needs checks that find the evidence")
    timeout = doc.get("timeout_s", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= MAX_TIMEOUT_S:
        raise _fail(source, "timeout_s", f"must be a number in (0, {MAX_TIMEOUT_S}]")
    needs = doc.get("needs")
    if not isinstance(needs, list) or not needs or not all(isinstance(n, str) for n in needs):
        raise _fail(source, "needs", "must list what the attacker must hold, at least one of: "
                    + ", ".join(NEEDS))
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise _fail(source, "needs", f"unknown need(s) {', '.join(unknown)}; known: "
                    + ", ".join(NEEDS))
    notes = doc.get("notes") or ""
    if not isinstance(notes, str):
        raise _fail(source, "notes", "must be a string")
    return Scenario(
        id=sid, title=title, group=group, control=control, attack=attack, attack_pre_v19=pre, atlas=atlas,
        adversary=adversary,
        preconditions=_calls(doc.get("preconditions"), source, "preconditions", STEPS),
        steps=steps, cleanup=_calls(doc.get("cleanup"), source, "cleanup", STEPS),
        expect=Expectation(blocked is not None,
                           str(blocked.get("action", "")) if isinstance(blocked, Mapping)
                           else None, detected, checks,
                           str(blocked.get("reason", "")) if isinstance(blocked, Mapping)
                           else ""),
        needs=tuple(needs), timeout_s=float(timeout), notes=notes, source=source)


def load_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate YAML text (safe loader only)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(source, "yaml", f"does not parse ({str(exc).splitlines()[0]})") from None
    return parse_scenario(doc, source)


def load_builtin(only: Sequence[str] = ()) -> list[Scenario]:
    """The scenarios shipped with strongroom, sorted by id; ``only`` selects ids."""
    root = resources.files("strongroom.redteam") / "scenarios"
    out: list[Scenario] = []
    seen: set[str] = set()
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        sc = load_scenario(entry.read_text(encoding="utf-8"), f"scenarios/{entry.name}")
        if sc.id in seen:
            raise _fail(sc.source, "id", f"duplicate scenario id {sc.id}")
        seen.add(sc.id)
        out.append(sc)
    if only:
        missing = sorted(set(only) - seen)
        if missing:
            raise InvalidInput(f"no such scenario: {', '.join(missing)}", obj="--scenario",
                               remedy="`strongroom redteam run --list` shows the ids")
        out = [s for s in out if s.id in set(only)]
    return sorted(out, key=lambda s: s.id)


def load_file(path: Path) -> Scenario:
    """Load one scenario file from disk."""
    return load_scenario(path.read_text(encoding="utf-8"), str(path))

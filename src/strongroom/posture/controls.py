"""The controls scored per control family, each with the RAND security level that requires it.

A control is *verified* (scored from :class:`~strongroom.posture.facts.Facts`)
or *declared* (scored from the declaration, shown as a claim). Levels follow
RAND's "Securing AI Model Weights" (2024): SL1 stops amateurs, SL2
opportunistic professionals, SL3 cybercrime groups and insider threats, SL4
standard state operations, SL5 top-priority state operations. The mapping of
each strongroom control to a level is strongroom's reading of RAND's
benchmark systems (docs/posture.md), not RAND's own table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from strongroom.errors import InvalidInput
from strongroom.posture.declaration import Declaration
from strongroom.posture.facts import Facts
from strongroom.timefmt import parse_utc

__all__ = ["CONTROLS", "FAMILIES", "Control", "Finding"]

#: Control families, in report order: key -> title.
FAMILIES: dict[str, str] = {
    "weights": "Weight storage and encryption",
    "keys": "Key custody",
    "access": "Access control and compartments",
    "mpa": "Multi-party authorization",
    "monitoring": "Monitoring and insider risk",
    "audit": "Audit integrity",
    "supply": "Supply chain",
    "interfaces": "Interfaces and airgap",
    "vetting": "Personnel vetting",
    "redteam": "Red-teaming",
}

MET, NOT_MET, UNKNOWN, DECLARED = "met", "not met", "unknown", "declared"
Finding = tuple[str, str]
Rule = Callable[[Facts, Declaration], Finding]


@dataclass(frozen=True)
class Control:
    """One requirement: its family, the level that requires it, how it is scored."""

    id: str
    family: str
    level: int
    title: str
    source: str  # "verified" or "declared"
    rule: Rule

    def evaluate(self, facts: Facts, decl: Declaration) -> Finding:
        """``(status, evidence)``."""
        return self.rule(facts, decl)


def _declared(path: str, what: str) -> Rule:
    def rule(facts: Facts, decl: Declaration) -> Finding:
        value = decl.get(path)
        if value is True:
            who = f" by {decl.assessor}" if decl.assessor else ""
            return DECLARED, f"declared{who}: {what} ({path}: true); not verified by software"
        return NOT_MET, f"not declared ({path}: {value if value is not None else 'absent'})"
    return rule


def _unknown(what: str) -> Finding:
    return UNKNOWN, f"{what} could not be read (vault sealed or service unreachable)"


# -- weights ---------------------------------------------------------------------------


def _encrypted(f: Facts, d: Declaration) -> Finding:
    if f.keyring is None or not f.keyring.get("initialized"):
        return _unknown("the keyring")
    if not f.artifacts:
        return UNKNOWN, "no artifacts could be read" if f.keyring.get("sealed") else \
            "no artifacts stored yet"
    bad = [a["name"] for a in f.artifacts if not a.get("verified")]
    if bad:
        return NOT_MET, f"manifests fail verification: {', '.join(bad[:5])}"
    modes: dict[str, int] = {}
    for a in f.artifacts:
        for cipher in a.get("ciphers") or ["chacha20-poly1305"]:
            modes[cipher] = modes.get(cipher, 0) + 1
    where = "; payload modes: " + ", ".join(
        f"{n} with {c}{' (FIPS-approved)' if c == 'aes-256-gcm' else ' (age)'}"
        for c, n in sorted(modes.items()))
    return MET, (f"{len(f.artifacts)} artifacts, every one stored as age-format blobs with one "
                 "file key per file and a manifest signed by the barrier's key (all verified)"
                 + where)


def _gate_evidence(f: Facts, d: Declaration) -> Finding:
    rt = _redteam_ids(f)
    needed = {"RT-CRED-001", "RT-DBA-001", "RT-MPA-001"}
    if not rt:
        return UNKNOWN, "no red-team results to show the gate refuses releases without a Grant"
    ok = {i for i in needed if rt.get(i) in ("blocked", "detected")}
    if ok == needed:
        return MET, ("key release refused without a valid Grant: red-team "
                     + ", ".join(sorted(needed)) + " blocked")
    shown = ", ".join(f"{i}={rt.get(i, 'not run')}" for i in sorted(needed))
    return NOT_MET, f"red-team outcomes: {shown}"


def _enclaves(f: Facts, d: Declaration) -> Finding:
    if f.attest_test_roots:
        return NOT_MET, ("critical: the gate trusts test roots (STRONGROOM_ATTEST_TEST_ROOTS="
                         f"{f.attest_test_roots}); test only: unset it")
    if f.attested_releases is None:
        return _unknown("the audit log")
    weights = [a for a in f.artifacts if a.get("verified") and a.get("kind") != "document"]
    if not weights:
        return UNKNOWN, "no artifacts"
    r = f.attested_releases
    if r["unbound"]:
        return NOT_MET, (f"{r['unbound']} release(s) of artifacts labelled attested were not "
                         "bound to enclave evidence: " + "; ".join(r["unbound_examples"]))
    plain = [a["name"] for a in weights if not a.get("attested")]
    if plain:
        return NOT_MET, (f"{len(plain)} of {len(weights)} models are not labelled attested: "
                         f"<policy> (their keys may go to ordinary hosts): {', '.join(plain[:5])}")
    return MET, (f"all {len(weights)} models labelled attested; {r['bound']} release(s) since, "
                 "each bound to verified enclave evidence")


# -- keys --------------------------------------------------------------------------------


def _initialised(f: Facts, d: Declaration) -> Finding:
    if f.keyring is None:
        return _unknown("the keyring status")
    if not f.keyring.get("initialized"):
        return NOT_MET, "the keyring is not initialised"
    return MET, (f"sealed keyring ({f.keyring['backend']}); the root key exists only in memory "
                 f"after unseal; currently {'sealed' if f.keyring['sealed'] else 'unsealed'}")


def _quorum(f: Facts, d: Declaration) -> Finding:
    if f.keyring is None or not f.keyring.get("initialized"):
        return _unknown("the keyring status")
    if f.keyring["backend"] == "hsm":
        return MET, "root key held by an HSM (non-extractable)"
    k, n = int(f.keyring["threshold"]), int(f.keyring["shares"])
    if k >= 2:
        return MET, f"{k}-of-{n} custodian shares needed to unseal"
    return NOT_MET, f"threshold {k}-of-{n}: one person can unseal"


def _officers(f: Facts, d: Declaration) -> Finding:
    if f.officers is None or f.keyring is None:
        return _unknown("the pinned officers")
    t = int(f.keyring.get("officer_threshold") or 0)
    if f.officers >= 2 and t >= 2:
        return MET, f"{t} of {f.officers} security officers sign every enrollment and label"
    return NOT_MET, (f"{t} of {f.officers} officer(s): one person controls the directory "
                     "(the bootstrap officer of an evaluation install)")


def _post_quantum(f: Facts, d: Declaration) -> Finding:
    w = f.wraps
    if w is None:
        return _unknown("the custodians' and transfer keys' kinds")
    if f.classical_officers is None or f.officers is None:
        return _unknown("the pinned officers' signature keys")
    officers = (f"; {f.classical_officers} of {f.officers} officers sign with Ed25519 alone "
                "(a future quantum computer could forge their enrollments and labels)"
                if f.classical_officers else "")
    if f.keyring is not None and f.keyring.get("backend") == "hsm" and not w["transfers"]:
        if officers:
            return NOT_MET, "root key in an HSM and no transfer bundle exported" + officers
        return MET, ("root key in an HSM (no share files), no transfer bundle exported, and "
                     f"all {f.officers} officers sign with ML-DSA-65 beside Ed25519")
    bad = w["classical_custodians"] + w["classical_transfers"]
    if bad:
        return NOT_MET, (f"{w['classical_custodians']} of {w['custodians']} custodians and "
                         f"{w['classical_transfers']} of {w['transfers']} transfer exports are "
                         "wrapped to classical X25519 only (harvest now, decrypt later)"
                         + officers)
    if officers:
        return NOT_MET, ("shares and transfer exports are hybrid ML-KEM-768 + X25519"
                         + officers)
    return MET, (f"{w['custodians']} custodians' shares and {w['transfers']} transfer exports, "
                 "all wrapped to hybrid ML-KEM-768 + X25519 keys; all "
                 f"{f.officers} officers sign with ML-DSA-65 beside Ed25519")


def _hsm(f: Facts, d: Declaration) -> Finding:
    if f.keyring is None:
        return _unknown("the keyring backend")
    if f.keyring.get("backend") != "hsm":
        return NOT_MET, f"software keys ({f.keyring.get('backend')} backend); SL4 needs an HSM"
    cert = d.get("hsm.certified") or "none"
    if cert == "none":
        return NOT_MET, "HSM backend in use, but no certified HSM is declared (SoftHSM is software)"
    return DECLARED, f"HSM backend in use; declared {cert}"


# -- access --------------------------------------------------------------------------------


def _labelled(f: Facts, d: Declaration) -> Finding:
    if f.holders is None:
        return _unknown("the directory")
    weights = [a for a in f.artifacts if a.get("verified") and a.get("kind") != "document"]
    unlabelled = [a["name"] for a in weights if not a.get("labelled")]
    if not weights:
        return UNKNOWN, "no artifacts"
    if unlabelled:
        return NOT_MET, (f"{len(unlabelled)} of {len(weights)} models carry no officer-signed "
                         f"label (default classification only): {', '.join(unlabelled[:5])}")
    return MET, f"all {len(weights)} models labelled by the officers (classification, compartments)"


def _caps(f: Facts, d: Declaration) -> Finding:
    if f.holders is None:
        return _unknown("grant holders")
    over = []
    worst: dict[str, int] = {}
    for artifact, actions in f.holders.items():
        for action, n in actions.items():
            worst[action] = max(worst.get(action, 0), n)
            cap = f.caps.get(action)
            if cap and n > cap:
                over.append(f"{artifact} {action} {n}/{cap}")
    shown = ", ".join(f"{a} ≤ {worst.get(a, 0)}/{f.caps.get(a, 0)}"
                      for a in ("infer", "load", "export"))
    if over:
        return NOT_MET, "over the SL3 caps: " + ", ".join(over[:5])
    return MET, f"people per artifact within the SL3 caps ({shown})"


# -- multi-party authorization -------------------------------------------------------------------


def _two_person(f: Facts, d: Declaration) -> Finding:
    if f.holders is None:
        return _unknown("labels")
    weights = [a for a in f.artifacts if a.get("verified") and a.get("kind") != "document"]
    weak = [a["name"] for a in weights if (a.get("load_min") or 0) < 2]
    if not weights:
        return UNKNOWN, "no weight artifacts"
    if weak:
        return NOT_MET, (f"{len(weak)} of {len(weights)} models can be loaded with fewer than two "
                         f"approvals (or have no rule): {', '.join(weak[:5])}")
    return MET, "every model's load rule needs ≥ 2 approvals (requester never counts)"


def _cross_group(f: Facts, d: Declaration) -> Finding:
    if f.holders is None:
        return _unknown("labels")
    weights = [a for a in f.artifacts if a.get("verified") and a.get("kind") != "document"]
    weak = [a["name"] for a in weights if (a.get("export_groups") or 0) < 2]
    if not weights:
        return UNKNOWN, "no weight artifacts"
    if weak:
        return NOT_MET, (f"{len(weak)} of {len(weights)} models' export rule does not AND two "
                         f"groups: {', '.join(weak[:5])}")
    return MET, "every model's export needs approvers from two groups (AND)"


# -- monitoring ----------------------------------------------------------------------------------


def _tte(days_needed: float) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        if not f.exfiltration:
            return UNKNOWN, "no artifact sizes to estimate time-to-exfiltrate"
        fastest = min(f.exfiltration, key=lambda e: e["days"])
        cap = f.principal_cap_bytes or 0
        text = (f"fastest full theft by one principal: {fastest['artifact']} "
                f"({fastest['size'] / 2**30:.2f} GiB) in {fastest['days']:.2f} days at a "
                f"{cap / 2**30:.1f} GiB/24 h cap")
        return (MET if fastest["days"] >= days_needed else NOT_MET), \
            text + f" (needs ≥ {days_needed:g} days)"
    return rule


def _canaries(f: Facts, d: Declaration) -> Finding:
    if f.canaries is None:
        return _unknown("canaries")
    if f.canaries < 1:
        return NOT_MET, "no canary artifacts planted"
    return MET, f"{f.canaries} canary artifact(s) planted; any key request raises a critical alert"


# -- audit ----------------------------------------------------------------------------------------


#: The monitor loop counts as running when it caught up with the log's head this recently
#: (or within five of its intervals, when those are longer).
MONITOR_STALE_S = 10.0


def _monitor_loop(f: Facts, d: Declaration) -> Finding:
    """Detection runs in the deployment: a loop processed the audit log up to its head lately."""
    m = f.monitor
    if m is None:
        return _unknown("the monitor loop's lease")
    if m.get("leader") is None:
        return NOT_MET, ("CRITICAL: no monitor loop has ever run on this database: detectors "
                         "raise no alert (unseal a host: `strongroom serve` runs the loop)")
    stale = max(MONITOR_STALE_S, 5 * float(m.get("interval_s") or 0))
    age = float(m["caught_up_age_s"])
    where = (f"leader {m['leader']}, cursor {m['cursor']} of {m['head']} entries "
             f"({m['lag_entries']} behind)")
    if age > stale:
        return NOT_MET, (f"CRITICAL: the monitor loop is stopped: it last caught up with the "
                         f"audit log {age:,.0f} s ago (needs ≤ {stale:g} s; {where}); break-glass, "
                         "canary and risk alerts are not raised until a host runs it")
    return MET, (f"the monitor loop processed every audit entry older than {age:.1f} s "
                 f"({where})")


def _audit_verifies(f: Facts, d: Declaration) -> Finding:
    if f.audit is None:
        return _unknown("the audit log")
    if not f.audit.get("verify_ok"):
        return NOT_MET, f"audit verify FAILED: {f.audit.get('verify_message')}"
    return MET, f"audit verify: {f.audit.get('verify_message')}"


def _checkpoints(f: Facts, d: Declaration) -> Finding:
    if f.audit is None:
        return _unknown("the audit log")
    n = int(f.audit.get("checkpoints") or 0)
    return (MET if n else NOT_MET), f"{n} signed checkpoints (C2SP signed notes, Ed25519)"


def _witnessed(min_witnesses: int) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        text = f"{f.witnesses} witness(es) configured, quorum {f.witness_quorum}"
        if f.audit is not None:
            text += "; latest checkpoints cosigned" if f.audit.get("cosigned") else \
                "; no cosignature stored"
        ok = f.witnesses >= min_witnesses and f.witness_quorum >= min_witnesses
        return (MET if ok else NOT_MET), text + f" (needs ≥ {min_witnesses} and quorum ≥ " \
            f"{min_witnesses})"
    return rule


# -- supply chain ------------------------------------------------------------------------------------


def _lock(f: Facts, d: Declaration) -> Finding:
    if f.lock_ok is None:
        return _unknown("the dependency lock")
    return (MET if f.lock_ok else NOT_MET), f.lock_detail


def _redteam_ids(f: Facts) -> dict[str, str]:
    if not f.redteam:
        return {}
    return {str(r.get("id")): str(r.get("outcome")) for r in f.redteam.get("results", [])}


def _by_redteam(ids: tuple[str, ...], what: str) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        rt = _redteam_ids(f)
        if not rt:
            return UNKNOWN, f"no red-team results ({what})"
        outcomes = {i: rt.get(i, "not run") for i in ids}
        ok = all(o in ("blocked", "detected") for o in outcomes.values())
        return (MET if ok else NOT_MET), f"{what}: " + ", ".join(
            f"{i} {o}" for i, o in outcomes.items())
    return rule


# -- vetting ---------------------------------------------------------------------------------------


def _vetting_current(f: Facts, d: Declaration) -> Finding:
    if f.unvetted_holders is None:
        return _unknown("the directory")
    if f.unvetted_holders:
        return NOT_MET, f"{f.unvetted_holders} grant holder(s) have lapsed or flagged vetting"
    return MET, (f"{f.enrolled} enrolled principals; every holder of a valid grant has current "
                 "vetting (checked again at each release)")


def _vetting_depth(levels: tuple[str, ...]) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        depth = d.get("vetting.depth") or "none"
        if depth in levels:
            return DECLARED, f"declared vetting depth: {depth}; not verified by software"
        return NOT_MET, f"declared vetting depth {depth!r}; needs one of {', '.join(levels)}"
    return rule


# -- red-teaming -----------------------------------------------------------------------------------


def _redteam_age_days(run: Mapping[str, Any]) -> float | None:
    """Days since the stored red-team ``run`` started; None when it has no readable date."""
    try:
        started = parse_utc(str(run["started"]), obj="red-team run")
    except (KeyError, InvalidInput):
        return None
    return (time.time() - started) / 86400


def _from_log(run: Mapping[str, Any]) -> bool:
    """Whether the run was read from a ``redteam.result`` audit entry (not the local file)."""
    return "audit_index" in run


def _redteam_source(run: Mapping[str, Any]) -> str:
    """Where the run was read and whether its signature held (``""`` for a verified log entry)."""
    if not _from_log(run):
        return "; read from the unsigned local file (the audit log holds no signed run)"
    if not run.get("verified"):
        return f"; its signature did not verify: {run.get('verify_detail') or 'unknown'}"
    return f"; {run.get('source')}, signed by {run.get('signed_by')}"


def redteam_trend(f: Facts) -> str:
    """The signed runs in the log, newest first, as ``started: N missed of M``."""
    return "; ".join(f"{r.get('started')}: {r.get('missed')} missed of {len(r.get('results', []))}"
                     for r in f.redteam_runs)


def _redteam_recent(max_age_days: float) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        if not f.redteam:
            return NOT_MET, "no red-team run stored (`strongroom redteam run`)"
        age = _redteam_age_days(f.redteam)
        if age is None:
            return NOT_MET, "the stored red-team run has no valid date"
        n = len(f.redteam.get("results", []))
        trend = redteam_trend(f)
        return (MET if age <= max_age_days and n else NOT_MET), \
            (f"last run {age:.1f} days ago ({n} scenarios; needs ≤ {max_age_days:g} days)"
             + (f"; runs in the log, newest first: {trend}" if trend else ""))
    return rule


def _redteam_clean(max_age_days: float) -> Rule:
    def rule(f: Facts, d: Declaration) -> Finding:
        if not f.redteam:
            return NOT_MET, "no red-team run stored (`strongroom redteam run`)"
        age = _redteam_age_days(f.redteam)
        if age is None:
            return NOT_MET, "the stored red-team run has no valid date"
        results = f.redteam.get("results", [])
        missed = [r["id"] for r in results if r.get("outcome") == "missed"]
        trusted = not _from_log(f.redteam) or bool(f.redteam.get("verified"))
        text = (f"last run {age:.1f} days ago: {len(results)} scenarios, {len(missed)} missed"
                + (f" ({', '.join(missed[:5])})" if missed else "")
                + (f"; stale (needs ≤ {max_age_days:g} days)" if age > max_age_days else "")
                + _redteam_source(f.redteam))
        ok = not missed and age <= max_age_days and bool(results) and trusted
        return (MET if ok else NOT_MET), text
    return rule


def _redteam_groups(f: Facts, d: Declaration) -> Finding:
    if not f.redteam:
        return NOT_MET, "no red-team run stored"
    groups = {str(r.get("group")) for r in f.redteam.get("results", [])
              if r.get("outcome") in ("blocked", "detected")}
    # physical access is out of software's reach; the other eight groups are testable.
    return (MET if len(groups) >= 7 else NOT_MET), \
        f"{len(groups)} of RAND's 9 attack-vector groups exercised and stopped ({', '.join(sorted(groups))})"


def _third_party(f: Facts, d: Declaration) -> Finding:
    days = d.get("redteam.third_party_within_days")
    if isinstance(days, int) and days <= 365:
        return DECLARED, f"declared: external red team {days} days ago"
    return NOT_MET, "no external red team declared within the last 365 days"


CONTROLS: tuple[Control, ...] = (
    # weights
    Control("W-1", "weights", 1, "Weights encrypted at rest with per-file keys and signed manifests",
            "verified", _encrypted),
    Control("W-2", "weights", 2, "Every key release passes one gate that checks signed evidence",
            "verified", _gate_evidence),
    Control("W-3", "weights", 3, "Rooms holding weights have access control and logs",
            "declared", _declared("facility.physical_access_control", "physical access control")),
    Control("W-4", "weights", 4, "Weights decrypted only inside confidential-computing enclaves",
            "verified", _enclaves),
    Control("W-5", "weights", 5, "Guarded facility with side-channel (TEMPEST) protection",
            "declared", _declared("facility.side_channel_protection", "emanation protection")),
    # keys
    Control("K-1", "keys", 1, "Sealed keyring: the root key exists only in memory",
            "verified", _initialised),
    Control("K-2", "keys", 2, "Unsealing needs k ≥ 2 custodians (or an HSM)", "verified", _quorum),
    Control("K-3", "keys", 3, "The directory is signed by ≥ 2 of ≥ 2 pinned officers",
            "verified", _officers),
    Control("K-4", "keys", 4, "Root key in a certified hardware security module", "verified",
            _hsm),
    Control("K-5", "keys", 4, "Shares and transfer keys that leave the vault are post-quantum "
            "(hybrid ML-KEM-768 + X25519), and officers sign with ML-DSA-65 beside Ed25519",
            "verified", _post_quantum),
    # access
    Control("A-1", "access", 1, "Default-deny policy; releases need clearance and compartments",
            "verified", _by_redteam(("RT-CMP-001", "RT-CRED-001"), "red-team")),
    Control("A-2", "access", 2, "Every artifact labelled by the officers", "verified", _labelled),
    Control("A-3", "access", 3, "People per access tier within RAND's SL3 caps", "verified",
            _caps),
    Control("A-4", "access", 4, "Break-glass abuse raises a critical alert", "verified",
            lambda f, d: _all(_by_redteam(("RT-BG-001", "RT-BG-002"), "red-team")(f, d),
                              _monitor_loop(f, d))),
    # mpa
    Control("M-2", "mpa", 2, "Loading weights needs ≥ 2 approvals by other people", "verified",
            _two_person),
    Control("M-3", "mpa", 3, "Approvals are signatures a database administrator cannot forge",
            "verified", _by_redteam(("RT-DBA-001", "RT-DBA-002", "RT-MPA-002", "RT-MPA-003"),
                                    "red-team")),
    Control("M-4", "mpa", 4, "Exports need approvers from two groups (AND)", "verified",
            _cross_group),
    # monitoring
    Control("MO-0", "monitoring", 1, "Detectors run in the deployment, caught up with the log",
            "verified", _monitor_loop),
    Control("MO-1", "monitoring", 1, "Egress cap stops a bulk copy, with an alert", "verified",
            _by_redteam(("RT-EXF-001",), "red-team")),
    Control("MO-2", "monitoring", 2, "A full theft takes ≥ 1 day under the caps", "verified",
            _tte(1)),
    Control("MO-3", "monitoring", 3, "A full theft takes ≥ 7 days; canaries planted",
            "verified", lambda f, d: _all(_tte(7)(f, d), _canaries(f, d))),
    Control("MO-4", "monitoring", 4, "A security operations centre staffed 24×7", "declared",
            _declared("soc.staffed_24x7", "24×7 monitoring")),
    # audit
    Control("AU-1", "audit", 1, "The audit log verifies end to end", "verified", _audit_verifies),
    Control("AU-2", "audit", 2, "Signed checkpoints", "verified", _checkpoints),
    Control("AU-3", "audit", 3, "An independent witness cosigns (quorum ≥ 1)", "verified",
            _witnessed(1)),
    Control("AU-4", "audit", 4, "≥ 2 independent witnesses, quorum ≥ 2", "verified",
            _witnessed(2)),
    # supply chain
    Control("S-1", "supply", 1, "Imports scanned; malicious pickles refused", "verified",
            _by_redteam(("RT-SUP-001",), "red-team")),
    Control("S-2", "supply", 2, "Dependencies pinned with hashes and installed as pinned",
            "verified", _lock),
    Control("S-3", "supply", 3, "Gateway runs only code signed by k code owners", "verified",
            _by_redteam(("RT-GW-001",), "red-team")),
    # interfaces
    Control("I-2", "interfaces", 2, "Output-only gateway; extraction throttled and alerted",
            "verified", _by_redteam(("RT-GW-002",), "red-team")),
    Control("I-3", "interfaces", 3, "Airgap bundles verified byte for byte", "verified",
            _by_redteam(("RT-SUP-002",), "red-team")),
    Control("I-3n", "interfaces", 3, "Weight hosts in an isolated network enclave", "declared",
            _declared("network.isolated_enclave", "network isolation")),
    Control("I-4", "interfaces", 4, "Hardware-enforced bandwidth limits on weight hosts",
            "declared", _declared("network.hardware_bandwidth_limits", "hardware egress limits")),
    Control("I-5", "interfaces", 5, "Airgapped: no network path to the weights", "declared",
            _declared("network.airgapped", "airgap")),
    # vetting
    Control("V-2", "vetting", 2, "Every grant holder's vetting is current", "verified",
            _vetting_current),
    Control("V-3", "vetting", 3, "Enhanced background checks for weight access", "declared",
            _vetting_depth(("enhanced", "government-secret", "government-top-secret"))),
    Control("V-4", "vetting", 4, "Government-level clearance and continuous evaluation",
            "declared", lambda f, d: _all(
                _vetting_depth(("government-secret", "government-top-secret"))(f, d),
                _declared("vetting.continuous_evaluation", "continuous evaluation")(f, d))),
    Control("V-5", "vetting", 5, "Top-secret-equivalent vetting", "declared",
            _vetting_depth(("government-top-secret",))),
    # red-teaming
    Control("R-1", "redteam", 1, "The red-team suite ran within the last 30 days",
            "verified", _redteam_recent(30)),
    Control("R-2", "redteam", 2, "Nothing missed in the latest red-team run, at most 7 days old",
            "verified", _redteam_clean(7)),
    Control("R-3", "redteam", 3, "Scenarios cover RAND's software-testable attack groups",
            "verified", _redteam_groups),
    Control("R-4", "redteam", 4, "External red team within a year", "declared", _third_party),
    Control("R-5", "redteam", 5, "Red-team exercise at nation-state level (OC5)", "declared",
            _declared("redteam.nation_state_exercise", "an OC5-level exercise")),
)


def _all(*findings: Finding) -> Finding:
    statuses = [s for s, _ in findings]
    text = "; ".join(t for _, t in findings)
    if NOT_MET in statuses:
        return NOT_MET, text
    if UNKNOWN in statuses:
        return UNKNOWN, text
    if DECLARED in statuses:
        return DECLARED, text
    return MET, text

"""Facts about a deployment that the posture controls are scored on.

:class:`Facts` is plain data so that scoring can be tested without a
deployment; :func:`collect` reads it from a live one (the store, the key
service, the audit log, the settings, the stored red-team results). A fact
that could not be read stays ``None`` and every control that needs it scores
*unknown*, which never counts as met.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.artifacts import base_name
from strongroom.errors import StrongroomError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from strongroom.access.directory import Directory
    from strongroom.audit.entry import AuditEvent
    from strongroom.keys.protocol import KeyService
    from strongroom.store.db import Store

__all__ = ["Facts", "collect"]


@dataclass
class Facts:
    """What software could observe about one deployment."""

    home: str = ""
    #: initialized, sealed, backend, threshold, shares, officer_threshold
    keyring: dict[str, Any] | None = None
    #: Officers pinned in the barrier (None while sealed).
    officers: int | None = None
    #: Of them, those with no ML-DSA-65 key pinned: their signatures are Ed25519 alone
    #: (None while sealed).
    classical_officers: int | None = None
    #: One per artifact: name, kind, size, compartments, labelled, load_min, export_groups.
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    #: artifact -> action -> distinct holders of valid grants (None: not readable).
    holders: dict[str, dict[str, int]] | None = None
    caps: dict[str, int] = field(default_factory=dict)
    #: Holders of valid grants whose vetting is not current (None: not readable).
    unvetted_holders: int | None = None
    enrolled: int | None = None
    #: size, checkpoints, cosigned, verify_ok, verify_message
    audit: dict[str, Any] | None = None
    witnesses: int = 0
    witness_quorum: int = 0
    principal_cap_bytes: int | None = None
    #: One per artifact: artifact, size, days (time to exfiltrate a whole copy at the caps).
    exfiltration: list[dict[str, Any]] = field(default_factory=list)
    canaries: int | None = None
    lock_ok: bool | None = None
    lock_detail: str = ""
    #: The monitor loop's lease: leader, cursor, head, lag_entries, caught_up_age_s,
    #: heartbeat_age_s, interval_s (``{"leader": None}``: no loop ever ran; None: not readable).
    monitor: dict[str, Any] | None = None
    #: The latest red-team run: the newest signed ``redteam.result`` entry of the audit log,
    #: else (``source: file``) ``<home>/redteam/latest.json``; None when there is neither.
    redteam: dict[str, Any] | None = None
    #: The signed runs found in the audit log, newest first (the trend).
    redteam_runs: list[dict[str, Any]] = field(default_factory=list)
    #: Wraps that leave the vault host: custodians, classical_custodians, transfers,
    #: classical_transfers (counts; None: not readable). See supplychain.pq_wraps.
    wraps: dict[str, int] | None = None
    #: Allowed releases of artifacts labelled ``attested`` since their label said so:
    #: bound (count, each with verified enclave evidence), unbound (count) and
    #: unbound_examples (None: the log was not readable). See posture control W-4.
    attested_releases: dict[str, Any] | None = None
    #: STRONGROOM_ATTEST_TEST_ROOTS as this process sees it ("" unset): test only, critical.
    attest_test_roots: str = ""
    notes: list[str] = field(default_factory=list)


def _wraps(store: Store, facts: Facts) -> None:
    from strongroom.supplychain.pq_wraps import deployment_wraps

    w = deployment_wraps(store)
    facts.wraps = {"custodians": len(w.custodians),
                   "classical_custodians": len(w.classical_custodians),
                   "transfers": len(w.transfers), "classical_transfers": len(w.classical_transfers)}


def _keyring(keys: KeyService | None, facts: Facts) -> bool:
    """Fill keyring facts; True when unsealed."""
    from strongroom.keys.officers import Officers

    if keys is None:
        facts.notes.append("no key service reachable: keyring facts unknown")
        return False
    try:
        st = keys.status()
    except (StrongroomError, OSError) as exc:
        facts.notes.append(f"key service: {exc}")
        return False
    facts.keyring = {"initialized": st.initialized, "sealed": st.sealed, "backend": st.backend,
                     "threshold": st.threshold, "shares": st.shares,
                     "officer_threshold": st.officer_threshold}
    if st.sealed:
        facts.notes.append("the vault is sealed: facts that need the barrier are unknown")
        return False
    with contextlib.suppress(StrongroomError, OSError):
        pins = Officers.from_public_keys(keys.public_keys())
        facts.officers = len(pins.ed25519)
        facts.classical_officers = len(pins.classical())
    return True


def _access(store: Store, keys: KeyService, facts: Facts) -> Directory:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.access.caps import AccessCaps, holders
    from strongroom.access.directory import DirectoryReader
    from strongroom.access.evidence import describe_resource
    from strongroom.access.grants import valid_grants
    from strongroom.access.policy import PolicyEngine
    from strongroom.keys.officers import Officers
    from strongroom.vault.manifest import Manifest

    officers = Officers.from_public_keys(keys.public_keys())
    threshold = int((facts.keyring or {}).get("officer_threshold") or len(officers.ed25519) or 1)
    directory = DirectoryReader.for_officers(store, officers, threshold).view()
    engine = PolicyEngine()
    manifest_key = Ed25519PublicKey.from_public_bytes(keys.public_keys()["manifest"])
    from sqlalchemy import select

    from strongroom.store.tables.vault import Artifact

    with store.session() as s:
        rows = [(r.name, r.version, r.manifest_json) for r in s.scalars(select(Artifact))]
    latest: dict[str, tuple[int, str]] = {}
    for name, version, env in rows:
        if name not in latest or version > latest[name][0]:
            latest[name] = (version, env)
    resources = {}
    for name, (_, env) in sorted(latest.items()):
        try:
            m = Manifest.verify(env, manifest_key, obj=name)
        except StrongroomError:
            facts.artifacts.append({"name": name, "verified": False})
            continue
        label = directory.label(m.name)
        load_rule = label.rules.get("load") if label is not None else None
        export_rule = label.rules.get("export") if label is not None else None
        facts.artifacts.append({
            "name": name, "kind": m.kind, "size": m.total_size, "verified": True,
            "ciphers": sorted({f.cipher for f in m.files}),
            "compartments": list(m.compartments), "labelled": label is not None,
            "load_min": _rule_min(load_rule), "export_groups": _rule_groups(export_rule),
            "attested": label.attested if label is not None else "",
            "attested_since": label.issued if label is not None and label.attested else None})
        resources[name] = describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
            label)
    valid = valid_grants(store, directory, engine, lambda ref: resources[base_name(ref)],
                         now=time.time())
    counts = holders(valid)
    facts.holders = {}
    for (artifact, action), people in counts.items():
        facts.holders.setdefault(artifact, {})[action] = len(people)
    caps = AccessCaps()
    facts.caps = {a: int(caps.cap(a) or 0) for a in ("infer", "load", "read", "export")}
    now = time.time()
    holder_names = {p for people in counts.values() for p in people}
    principals = list(directory.principals.values())
    facts.enrolled = len(principals)
    facts.unvetted_holders = sum(1 for p in principals
                                 if p.name in holder_names and not p.vetting.current(now))
    return directory


def _rule_min(rule: Any) -> int | None:
    """Approvals a rule needs in all (None: no rule)."""
    return None if rule is None else int(rule.required)


def _rule_groups(rule: Any) -> int | None:
    return None if rule is None else len({t.group for t in rule.terms})


def _audit(store: Store, keys: KeyService, facts: Facts, directory: Directory | None) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.audit.config import AuditSettings
    from strongroom.posture.redteam_results import runs_from_log, trend_since

    settings = AuditSettings()
    with contextlib.suppress(StrongroomError):
        facts.witnesses = len(settings.witness_list())
    facts.witness_quorum = settings.witness_quorum
    public = Ed25519PublicKey.from_public_bytes(keys.public_keys()["checkpoint"])
    log = settings.open_log(store, (public, lambda m: keys.sign("checkpoint", m)))
    try:
        info: dict[str, Any] = {"size": log.size(), "checkpoints": len(log.checkpoints())}
        try:
            report = log.verify()
            info.update(verify_ok=True, verify_message=report.summary(),
                        cosigned=report.cosignatures > 0)
        except StrongroomError as exc:
            info.update(verify_ok=False, verify_message=exc.message, cosigned=False)
        facts.audit = info
        facts.redteam_runs = runs_from_log(log.recent(trend_since()),
                                           directory.principal if directory else None)
        _attested_releases(log.recent(0), facts)
    finally:
        log.close()


def _attested_releases(entries: Iterable[AuditEvent], facts: Facts) -> None:
    """Count allowed releases of attested-labelled artifacts since their label, bound or not."""
    from strongroom.release.gate import ACTION
    from strongroom.timefmt import parse_utc

    since = {a["name"]: float(a["attested_since"]) for a in facts.artifacts
             if a.get("attested") and a.get("attested_since") is not None}
    bound, unbound = 0, []
    for e in entries:
        if e.action != ACTION or e.decision != "allow":
            continue
        start = since.get(base_name(e.object.split("/", 1)[0]))
        if start is None or parse_utc(e.time) < start:
            continue
        if isinstance(e.details.get("attestation"), dict):
            bound += 1
        else:
            unbound.append(f"{e.object} to {e.actor} at {e.time}")
    facts.attested_releases = {"bound": bound, "unbound": len(unbound),
                               "unbound_examples": unbound[:5]}


def _egress(store: Store, facts: Facts) -> None:
    from strongroom.keys.config import KeysSettings
    from strongroom.monitor.canaries import CanaryRegistry
    from strongroom.monitor.egress import DEFAULT_BUDGETS, Budget, EgressMeter

    cap = KeysSettings().egress_cap_bytes
    facts.principal_cap_bytes = cap
    meter = EgressMeter(store, budgets=[Budget("principal", "*", 24 * 3600, cap),
                                        *DEFAULT_BUDGETS[1:]])
    sized = [(a["name"], int(a["size"])) for a in facts.artifacts
             if a.get("verified") and a.get("kind") != "document"]
    for est in meter.time_to_exfiltrate(sized):
        facts.exfiltration.append({"artifact": est.artifact, "size": est.size,
                                   "days": round(est.days, 3)})
    facts.canaries = len(CanaryRegistry(store).names())


def _monitor(store: Store, facts: Facts) -> None:
    """How far the deployment's monitor loop has processed the audit log, and how lately."""
    from sqlalchemy import select

    from strongroom.runtime.monitor_loop import read_lease
    from strongroom.store.tables.audit import AuditHead

    with store.session(readonly=True) as s:
        head = int(s.scalar(select(AuditHead.size).where(AuditHead.id == 1)) or 0)
    lease = read_lease(store)
    if lease is None:
        facts.monitor = {"leader": None, "head": head}
        return
    now = time.time()
    facts.monitor = {
        "leader": lease.owner, "cursor": lease.cursor, "head": head,
        "lag_entries": max(0, head - lease.cursor),
        "caught_up_age_s": round(now - lease.caught_up_at, 3),
        "heartbeat_age_s": round(now - lease.heartbeat_at, 3),
        "lease_expires_in_s": round(lease.expires_at - now, 3),
        "interval_s": lease.interval_s}


def _lock(facts: Facts) -> None:
    from strongroom.supplychain.doctor import DoctorReport, check_lock, parse_lock

    candidates = [Path.cwd() / "requirements.lock",
                  Path(__file__).resolve().parents[3] / "requirements.lock"]
    lock = next((p for p in candidates if p.is_file()), None)
    if lock is None:
        facts.lock_ok, facts.lock_detail = False, "no requirements.lock found"
        return
    report = DoctorReport()
    check_lock(parse_lock(lock.read_text(encoding="utf-8"), obj=str(lock)), report)
    bad = [f for f in report.findings if f.level == "error"]
    facts.lock_ok = not bad
    facts.lock_detail = (f"{lock.name}: installed packages match the hashed pins" if not bad
                         else f"{lock.name}: {bad[0].message}")


def collect_live(home: Path, database_url: str) -> Facts:
    """:func:`collect` for the deployment in ``home``: its database, and its key agent if one
    runs (none is started; a missing or unreachable agent leaves the keyring facts unknown)."""
    from strongroom.runtime.services import key_service
    from strongroom.store.db import Store

    store = Store.open(database_url, schema="current")
    try:
        keys: KeyService | None
        try:
            keys = key_service(home, start=False)
            keys.status()
        except (StrongroomError, OSError):
            keys = None
        return collect(home, store, keys)
    finally:
        store.close()


def collect(home: Path, store: Store, keys: KeyService | None) -> Facts:
    """Read every fact the controls need from a live deployment."""
    from strongroom.posture.redteam_results import load_results, results_path
    from strongroom.runtime.attestation import AttestSettings

    facts = Facts(home=str(home))
    facts.attest_test_roots = str(AttestSettings().test_roots or "")
    unsealed = _keyring(keys, facts)
    if unsealed and keys is not None:
        directory = None
        try:
            directory = _access(store, keys, facts)
        except StrongroomError as exc:
            facts.notes.append(f"access: {exc}")
        try:
            _audit(store, keys, facts, directory)
        except StrongroomError as exc:
            facts.notes.append(f"audit: {exc}")
    try:
        _egress(store, facts)
    except StrongroomError as exc:
        facts.notes.append(f"egress: {exc}")
    try:
        _monitor(store, facts)
    except StrongroomError as exc:
        facts.notes.append(f"monitor: {exc}")
    try:
        _wraps(store, facts)
    except StrongroomError as exc:
        facts.notes.append(f"post-quantum wraps: {exc}")
    try:
        _lock(facts)
    except StrongroomError as exc:
        facts.lock_ok, facts.lock_detail = False, exc.message
    if facts.redteam_runs:
        facts.redteam = facts.redteam_runs[0]
    else:  # no signed run in the log (or it could not be read): a local run's file, marked so
        facts.redteam = load_results(results_path(home))
        if facts.redteam is not None:
            facts.redteam.setdefault("source", "file")
    return facts

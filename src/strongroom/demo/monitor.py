"""The monitor's part of ``make demo``: a loop pulling a whole model is stopped at the cap.

Call :func:`demo_monitor` with an open, unsealed vault that holds an imported
model and a Rich console::

    demo_monitor(vault, console, artifact="minilm")

A model that ships as one file is first re-imported split into six shards.
It sets a per-principal budget of the usage so far plus 60 % of the model, then
asks for every shard's key in turn, as a thief's script would. The release
gate charges the egress meter before each key leaves; the request that would
cross the cap is refused with ``BudgetExceeded``, a ``high`` alert is raised
(stored, audited, written to ``<home>/alerts.jsonl``), and the time-to-exfiltrate
report shows what the budgets mean for the lab's models. Then the insider-risk
detectors replay the vault's real audit log (:class:`~strongroom.monitor.detectors.AuditScanner`),
with peer groups and vetting flags from the officer-signed directory
(:class:`~strongroom.monitor.peers.SignedDirectoryPeers`), and print who carries risk.

The gate charges the durable :class:`~strongroom.monitor.egress.EgressMeter`;
should it ever run without one, the loop performs the gate's egress step
itself, with the same meter and the same charge-before-release order; it
detects which case it is in from the ledger, so nothing is charged twice.
Uses public APIs only; do not run it against a production vault (it changes
the demo principal's budget).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.errors import BudgetExceeded, NotFound
from strongroom.monitor.alerts import AlertManager, JsonLinesSink
from strongroom.monitor.egress import DAY, Budget, EgressMeter

if TYPE_CHECKING:
    from rich.console import Console

    from strongroom.vault.manifest import Manifest
    from strongroom.vault.vault import Vault

__all__ = ["demo_monitor"]


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _sharded(vault: Vault, artifact: str, console: Console, shards: int = 6) -> str:
    """``artifact`` itself when it has several shards, else a copy split into ``shards`` files."""
    manifest = vault.manifest(artifact)
    if sum(f.kind == "safetensors" for f in manifest.files) >= 3:
        return artifact
    name = f"{artifact}-sharded"
    try:
        vault.manifest(name)
        return name
    except NotFound:
        pass
    from safetensors.numpy import save_file

    with vault.open_weights(artifact) as weights, tempfile.TemporaryDirectory() as tmp:
        names = sorted(weights)
        for i in range(shards):
            part = {n: weights[n] for n in names[i::shards]}
            save_file(part, str(Path(tmp) / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"))
        vault.import_weights(Path(tmp), name)
    console.print(f"re-imported {artifact} as {name} in {shards} shards, as large models ship")
    return name


def demo_monitor(vault: Vault, console: Console, artifact: str = "minilm", *,
                 grant: Callable[[str], object] | None = None) -> bool:
    """Pull ``artifact`` shard by shard until the egress cap stops it; True when it was stopped.

    ``grant(name)`` is called once the sharded copy exists, to give the vault's
    identity a load Grant on it (the gate needs one for every release).
    """
    manifest = vault.manifest(_sharded(vault, artifact, console))
    if grant is not None:
        grant(manifest.name)
    principal = vault.identity.public.principal
    alerts = AlertManager(vault.store, audit=vault.audit,
                          sinks=[JsonLinesSink(vault.settings.resolved_home / "alerts.jsonl")])
    meter = EgressMeter(vault.store, alerts=alerts)
    used = max((u.used for u in meter.usage(principal, manifest.ref)
                if u.budget.scope == "principal"), default=0)
    cap = used + manifest.total_size * 3 // 5
    before = [b for b in meter.budgets() if b.scope == "principal" and b.subject in (principal, "*")]
    restore = next((b for b in before if b.subject == principal), None) or next(
        (Budget("principal", principal, b.window_s, b.cap_bytes) for b in before), None
    )
    meter.set_budget(Budget("principal", principal, DAY, cap))
    try:
        stopped = _pull(vault, console, meter, alerts, manifest, principal, cap, used)
        _detect(vault, console, alerts, principal, cap)
        return stopped
    finally:
        if restore is not None:  # the demo's tight budget must not outlive the demo step
            meter.set_budget(restore)


def _pull(
    vault: Vault,
    console: Console,
    meter: EgressMeter,
    alerts: AlertManager,
    manifest: Manifest,
    principal: str,
    cap: int,
    used: int,
) -> bool:
    console.print(f"egress budget for {principal}: {_mib(cap)} per 24 h "
                  f"({_mib(used)} already used today; the model is {_mib(manifest.total_size)})")
    gate_charges: bool | None = None
    pulled = 0
    stopped = False
    first_alert = max((a.id for a in alerts.recent(limit=1)), default=0)
    for entry in manifest.files:
        try:
            if gate_charges is False:  # the gate's egress step, done here until it is wired
                meter.charge(principal, entry.size, time.time(), artifact=manifest.ref)
            before = _principal_used(meter, principal, manifest.ref)
            key = vault.release_file_key(manifest, entry, "load: demo exfiltration loop")
            key[:] = bytes(len(key))
            if gate_charges is None:
                gate_charges = _principal_used(meter, principal, manifest.ref) > before
                if not gate_charges:
                    meter.record_events(vault.audit.tail(1))
        except BudgetExceeded as exc:
            console.print(f"[yellow]stopped at {entry.path}[/]: {exc}")
            stopped = True
            break
        pulled += entry.size
        console.print(f"  key released for {entry.path} ({_mib(entry.size)}); "
                      f"{_mib(pulled)} of {_mib(manifest.total_size)} pulled")
    alerts.deliver_pending()
    for a in reversed(alerts.recent(limit=20)):
        if a.id > first_alert:
            console.print(f"[bold red]ALERT[/] #{a.id} {a.severity} {a.rule}: {a.message}")
    for est in meter.time_to_exfiltrate([(manifest.ref, manifest.total_size),
                                          ("a 70B bf16 model", 140 * 2**30),
                                          ("a 405B bf16 model", 810 * 2**30)],
                                         principal=principal):
        console.print(f"time for {principal} to exfiltrate {est.artifact} ({_mib(est.size)}) "
                      f"under today's budgets: {est.days:,.1f} days at the capped rate "
                      f"(at least {est.min_seconds / 3600:,.0f} h even bursting each window)")
    return stopped


def _principal_used(meter: EgressMeter, principal: str, ref: str) -> int:
    return sum(u.used for u in meter.usage(principal, ref) if u.budget.scope == "principal")


def _detect(vault: Vault, console: Console, alerts: AlertManager, principal: str,
            cap: int) -> None:
    """Replay the audit log through the detectors, peers and flags from the signed directory."""
    from strongroom.access.directory import DirectoryReader
    from strongroom.keys.officers import Officers
    from strongroom.monitor.canaries import CanaryRegistry
    from strongroom.monitor.detectors import AuditScanner, RiskEngine
    from strongroom.monitor.peers import SignedDirectoryPeers

    officers = Officers.from_public_keys(vault.keys.public_keys())
    threshold = int(getattr(vault.keys.status(), "officer_threshold", 0)
                    or len(officers.ed25519) or 1)
    peers = SignedDirectoryPeers(DirectoryReader.for_officers(vault.store, officers, threshold))
    engine = RiskEngine(directory=peers, canaries=CanaryRegistry(vault.store).names,
                        principal_cap=(cap, DAY))
    raised = AuditScanner(vault.audit, engine, alerts).scan()
    console.print(f"detectors replayed {vault.audit.size():,} audit events; {principal} is in "
                  f"peer group {peers.person(principal).peer_group} (from the signed directory); "
                  "baselines learn for 14 days, so only canaries alert on a fresh log")
    for a in raised:
        console.print(f"[bold red]ALERT[/] {a.severity} {a.rule}: {a.message}")
    for score in engine.scores(time.time())[:3]:
        console.print(f"  risk {score.person}: {score.score} ({', '.join(score.rules)})")

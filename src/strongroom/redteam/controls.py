"""The controls the red-team scenarios test: one name per control, and what enforces it.

Every scenario names the control it attacks (``control:`` in its YAML, checked
against :data:`CONTROLS` by the schema). The names exist so that the suite can
prove each scenario is able to fail: the test suite holds, for every control
here, a way to switch it off in a throw-away deployment
(``tests/redteam/control_switches.py``: a monkeypatch of the enforcing code, or a
weakened :class:`~strongroom.redteam.target.EmbeddedTarget`), and checks that
every scenario naming the control then grades *missed*. Nothing here switches
anything off: a deployment has no setting, flag or API call that reaches these
switches; they live only in the tests.

Read it like this::

    from strongroom.redteam.controls import CONTROLS
    CONTROLS["release-nonce"].enforced_by   # 'strongroom.release.request.UsedNonces'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTROLS", "Control"]


@dataclass(frozen=True)
class Control:
    """A control a scenario attacks: its name, what it does, and the code that enforces it."""

    name: str
    title: str
    #: Dotted name of the class or function that enforces it (what a switch replaces).
    enforced_by: str


def _controls(*items: tuple[str, str, str]) -> dict[str, Control]:
    return {name: Control(name, title, where) for name, title, where in items}


#: Every control a shipped scenario may name.
CONTROLS: dict[str, Control] = _controls(
    ("grant-evidence", "the gate releases a key only on a Grant (or break-glass) verified from "
     "signatures: the holder's key, k distinct approvers (never the requester), the officers' "
     "enrollments and labels, vetting, compartments, the Grant's byte budget",
     "strongroom.access.evidence.GrantEvidence"),
    ("policy", "Cedar policy, default deny: clearance at least the classification, the "
     "resource's compartments within the principal's, vetting active and unflagged",
     "strongroom.access.policy.PolicyEngine"),
    ("grant-revocation", "a revoked Grant releases nothing",
     "strongroom.access.evidence.GrantEvidence._revoked_among"),
    ("release-nonce", "each signed release request is used once",
     "strongroom.release.request.UsedNonces"),
    ("attest-fresh-evidence", "enclave evidence binds a single-use gate nonce and the enclave's "
     "ephemeral key: a report replayed, or presented with another key, admits nothing",
     "strongroom.attest.admission.AdmissionDesk.admit"),
    ("attest-no-debug", "a debug-enabled guest (host-readable memory) is never admitted",
     "strongroom.attest.sevsnp.SevSnp.verify"),
    ("attest-measurement", "only launch measurements on the officers' signed allowlist are "
     "admitted", "strongroom.attest.policy.AttestationPolicy.check"),
    ("signed-shard-size", "the gate charges the shard's size from its signed manifest, not the "
     "client's figure", "strongroom.release.gate.ReleaseGate._derive"),
    ("manifest-blob-binding", "a key is released only for a blob the artifact's signed manifest "
     "lists as that shard", "strongroom.vault.shards.SignedShards.locate"),
    ("state-guard", "restrictive state (revocations, denials, egress charges) re-derived from "
     "the verified audit log; deleted rows put back and alerted",
     "strongroom.runtime.state_guard.StateGuard"),
    ("checkpoint-publisher", "the deployment signs checkpoints on an interval and refuses "
     "releases once its log no longer extends what it signed",
     "strongroom.audit.publisher.CheckpointPublisher"),
    ("audit-lock-bound", "a release waits at most the lock bound for the audit log, then is "
     "refused (fail closed)", "strongroom.audit.config.AuditSettings.db_lock_timeout_s"),
    ("api-body-decoding", "signed API bodies that are not UTF-8 JSON are refused with 400 and "
     "audited", "strongroom.server.bodies.decode_json"),
    ("api-signature-nonce", "an RFC 9421 signed API request is accepted once",
     "strongroom.server.signatures.RequestVerifier"),
    ("console-csrf", "console POSTs need the console's origin and the session's CSRF token",
     "strongroom.server.console.core.Console.check_post"),
    ("console-signin-throttle", "failed console sign-ins are throttled per address (429)",
     "strongroom.server.console.core.SignInThrottle.check"),
    ("sealed-keyring", "a sealed keyring refuses every key operation",
     "strongroom.keys.keyring.Keyring.require_unsealed"),
    ("unseal-ceremony-nonce", "each unseal ceremony has its own nonce and ephemeral recipient, "
     "so a captured share submission is useless in the next",
     "strongroom.keys.keyring.Keyring.reset"),
    ("hsm-pin", "the HSM's user PIN (enforced by the token, in its own process)",
     "strongroom.keys.hsm"),
    ("audit-verify", "audit verify replays the Merkle log against checkpoints kept outside the "
     "database", "strongroom.audit.log.AuditLog.verify"),
    ("witness-consistency", "a witness cosigns only checkpoints consistent with the last one it "
     "saw", "strongroom.audit.witness.Witness"),
    ("egress-caps", "per-principal egress budgets: a warning near the cap, refusal at it",
     "strongroom.monitor.ledger.LedgerCache.applicable"),
    ("canary", "a decoy artifact touched raises a critical alert",
     "strongroom.monitor.canaries.CanaryRegistry.check"),
    ("break-glass-alert", "every break-glass use alerts at once",
     "strongroom.monitor.detectors.tripwires.BreakGlassUse"),
    ("import-scanner", "imports are scanned and dangerous pickles refused",
     "strongroom.scanning.scan.scan_import"),
    ("import-provenance", "an import given the publisher's key is refused unless the "
     "publisher's model-signing signature covers every file as imported",
     "strongroom.supplychain.imports.import_checked"),
    ("airgap-verification", "an airgap bundle is checked byte for byte against its signed "
     "manifest before anything is trusted", "strongroom.supplychain.airgap.receive_bundle"),
    ("gateway-codesign", "the inference gateway runs only code k code owners signed",
     "strongroom.gateway.codesign.verify_release"),
    ("code-integrity", "the gateway checks its installed modules against the release k code "
     "owners signed, at start and again while serving; a changed module is alerted and stops "
     "it", "strongroom.gateway.server.Gateway.check_code"),
    ("extraction-detector", "the gateway's extraction-pattern detectors",
     "strongroom.gateway.defence.ExtractionDetector.observe"),
    ("query-budget", "the gateway's per-caller query budget (texts per day), alerted when "
     "spent", "strongroom.gateway.defence.Limits.admit"),
    ("output-rounding", "gateway outputs are rounded to the configured precision",
     "strongroom.gateway.defence.OutputPolicy.shape"),
    ("key-barrier", "keys at rest are wrapped under the root key, which exists only in memory "
     "after a k-of-n unseal: nothing stored opens a blob",
     "strongroom.keys.barrier"),
)

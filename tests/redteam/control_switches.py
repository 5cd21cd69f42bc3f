"""Test-only switches that turn one control off in a throw-away red-team target.

Every control in :data:`strongroom.redteam.controls.CONTROLS` has an entry
here: a weakened :class:`~strongroom.redteam.target.EmbeddedTarget` (the
``weaken`` argument tests already use), or a monkeypatch of the code that
enforces the control, applied only while one scenario runs. Nothing in
``src/`` can reach these: a deployment has no setting or API call that turns a
control off. ``test_redteam_controls.py`` switches each scenario's control off
and checks the scenario then grades *missed*.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

Patch = Callable[[pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Switch:
    """How to turn one control off: a weakened target, a patch, or why neither exists."""

    weaken: Mapping[str, str] = field(default_factory=dict)
    patch: Patch | None = None
    #: Applied before the target is built (the control shapes what the build stores).
    at_build: Patch | None = None
    #: Why the control cannot be switched off from the tests (reported, never silently passed).
    impossible: str = ""


def _revocations_ignored(mp: pytest.MonkeyPatch) -> None:
    from strongroom.access.evidence import GrantEvidence

    mp.setattr(GrantEvidence, "_revoked_among", lambda self, snap, grants, directory: set())


def _policy_sees_no_restriction(mp: pytest.MonkeyPatch) -> None:
    """Cedar is asked about principals vetted for ever and resources with no compartments."""
    import strongroom.access.policy as policy

    principal, resource = policy._principal_entity, policy._resource_entity

    def vetted(p: Any) -> dict[str, Any]:
        e = principal(p)
        e["attrs"].update(vetting_status="active", vetting_expires=1 << 40, vetting_flags=[])
        return e

    def open_resource(r: Any) -> dict[str, Any]:
        e = resource(r)
        e["attrs"].update(compartments=[])
        return e

    mp.setattr(policy, "_principal_entity", vetted)
    mp.setattr(policy, "_resource_entity", open_resource)


def _nonces_forgotten(mp: pytest.MonkeyPatch) -> None:
    """Every layer that spends a release nonce: the evidence rule's nonce book and the egress
    ledger, which refuses a charge id (the nonce) it already holds."""
    from strongroom.monitor.egress import EgressMeter
    from strongroom.release.request import UsedNonces

    mp.setattr(UsedNonces, "check", lambda self, nonce, *, obj: None)
    mp.setattr(UsedNonces, "spend", lambda self, nonce, expires, now, *, obj: None)
    charge = EgressMeter.charge_with_event

    def without_id(self: Any, *args: Any, **kw: Any) -> Any:
        return charge(self, *args, **{**kw, "charge_id": None})

    mp.setattr(EgressMeter, "charge_with_event", without_id)
    charge_many = EgressMeter.charge_many_with_event

    def none_with_id(self: Any, audit: Any, charges: Any) -> Any:  # the agent's batches
        return charge_many(self, audit, [{**c, "charge_id": None} for c in charges])

    mp.setattr(EgressMeter, "charge_many_with_event", none_with_id)


def _client_size_trusted(mp: pytest.MonkeyPatch) -> None:
    from strongroom.release.gate import ReleaseGate

    mp.setattr(ReleaseGate, "_derive", lambda self, request: (request, {}))


def _any_blob_is_the_shard(mp: pytest.MonkeyPatch) -> None:
    from strongroom.vault.shards import SignedShards

    def locate(self: Any, request: Any) -> Any:
        files = self._load(request.artifact, self.manifest_key(), request.obj)
        return next(v for (shard, _), v in files.items() if shard == request.shard)

    mp.setattr(SignedShards, "locate", locate)


def _lenient_bodies(mp: pytest.MonkeyPatch) -> None:
    import strongroom.server.auth as auth

    mp.setattr(auth, "decode_json",
               lambda body: json.loads(body.decode("utf-8", "replace")) if body else None)


def _api_nonces_forgotten(mp: pytest.MonkeyPatch) -> None:
    from strongroom.server.signatures import MemoryNonceCache

    mp.setattr(MemoryNonceCache, "spend", lambda self, key, nonce, expires, now: True)


def _no_csrf_check(mp: pytest.MonkeyPatch) -> None:
    from strongroom.server.console.core import Console

    mp.setattr(Console, "check_post", lambda self, request, sess, token: None)


def _no_signin_throttle(mp: pytest.MonkeyPatch) -> None:
    from strongroom.server.console.core import SignInThrottle

    mp.setattr(SignInThrottle, "check", lambda self, host: None)


def _seal_not_enforced(mp: pytest.MonkeyPatch) -> None:
    from strongroom.keys.keyring import Keyring

    mp.setattr(Keyring, "require_unsealed", lambda self: None)


def _ceremony_never_renewed(mp: pytest.MonkeyPatch) -> None:
    from strongroom.keys.keyring import Keyring

    mp.setattr(Keyring, "reset", lambda self: self.status())


def _verifier_trusts_the_log(mp: pytest.MonkeyPatch) -> None:
    from strongroom.audit.log import AuditLog

    mp.setattr(AuditLog, "verify", lambda self, trusted=(): SimpleNamespace(
        summary=lambda: "verification switched off"))


def _witness_forgets_roots(mp: pytest.MonkeyPatch) -> None:
    """The witness keeps sizes but not the roots it cosigned, and checks no proof."""
    import strongroom.audit.witness as witness

    latest = witness.Witness.latest
    mp.setattr(witness.Witness, "latest", lambda self, origin: (latest(self, origin)[0], None))
    mp.setattr(witness, "verify_consistency", lambda *args, **kw: None)


def _no_egress_budgets(mp: pytest.MonkeyPatch) -> None:
    from strongroom.monitor.ledger import LedgerCache

    mp.setattr(LedgerCache, "applicable", lambda self, principal, artifact: [])


def _no_canaries(mp: pytest.MonkeyPatch) -> None:
    from strongroom.monitor.canaries import CanaryRegistry
    from strongroom.monitor.detectors.tripwires import CanaryTouch

    mp.setattr(CanaryRegistry, "check", lambda self, request: False)
    mp.setattr(CanaryTouch, "observe", lambda self, ev, ctx: None)


def _no_break_glass_alert(mp: pytest.MonkeyPatch) -> None:
    from strongroom.monitor.detectors.tripwires import BreakGlassUse

    mp.setattr(BreakGlassUse, "observe", lambda self, ev, ctx: None)


def _no_import_scan(mp: pytest.MonkeyPatch) -> None:
    """The scanner passes every file, and the pickle converter trusts what it is given (it
    writes a tensor without unpickling, so the payload never runs in the test)."""
    import strongroom.scanning.scan as scan
    import strongroom.supplychain.convert as convert
    import strongroom.supplychain.imports as imports

    def passed(path: Any) -> Any:
        files = tuple(scan.FileScan(str(p.relative_to(path)), "pickle", p.stat().st_size)
                      for p in sorted(path.rglob("*.bin")))
        return scan.ScanReport(str(path), files)

    def trusted(src: Any, dest: Any) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(dest))

    mp.setattr(scan, "scan_import", passed)
    mp.setattr(imports, "scan_import", passed)
    mp.setattr(convert, "convert_to_safetensors", trusted)


class _AnyDigest(str):
    """A digest that equals every other: the bundle's byte-for-byte check switched off."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


def _bundle_hashes_unchecked(mp: pytest.MonkeyPatch) -> None:
    import strongroom.supplychain.airgap as airgap

    real = airgap.sha256_file

    def hashed(path: Any) -> tuple[int, str]:
        size, digest = real(path)
        return size, _AnyDigest(digest)

    mp.setattr(airgap, "sha256_file", hashed)


def _unsigned_code_runs(mp: pytest.MonkeyPatch) -> None:
    import strongroom.gateway.codesign as codesign

    mp.setattr(codesign, "verify_release",
               lambda release, owners, threshold, root=None: SimpleNamespace(signers=(), files={}))


def _no_extraction_detector(mp: pytest.MonkeyPatch) -> None:
    from strongroom.gateway.defence import ExtractionDetector

    mp.setattr(ExtractionDetector, "observe", lambda self, principal, host, texts, now: [])


def _no_rounding(mp: pytest.MonkeyPatch) -> None:
    import numpy as np

    from strongroom.gateway.defence import OutputPolicy

    def shape(self: Any, vectors: Any, dimensions: int) -> Any:
        cut = np.asarray(vectors[:, :dimensions], dtype=np.float64)
        return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)

    mp.setattr(OutputPolicy, "shape", shape)


def _keys_stored_in_the_clear(mp: pytest.MonkeyPatch) -> None:
    """The KEK ring stores each file key readable next to its (fake) nonce and tag."""
    import os

    from strongroom.keys.kek import KekRing

    mp.setattr(KekRing, "_seal_file_key", staticmethod(
        lambda aead, vid, version, blob_id, file_key: os.urandom(12) + bytes(file_key)
        + bytes(16)))


def _no_query_budget(mp: pytest.MonkeyPatch) -> None:
    """The gateway's budgets charge nothing (the rate limits stay)."""
    from strongroom.gateway.defence import Limits

    mp.setattr(Limits, "admit", lambda self, principal, n_texts, now: None)


def _publisher_unchecked(mp: pytest.MonkeyPatch) -> None:
    """The publisher's signature is read but not checked: the files' own digests stand in."""
    import strongroom.supplychain.imports as imports
    from strongroom.supplychain.signing import hash_directory

    mp.setattr(imports, "verify_directory",
               lambda path, bundle, key, signature_path=None: hash_directory(path))


def _code_never_rechecked(mp: pytest.MonkeyPatch) -> None:
    """The gateway checks its code at start only."""
    from strongroom.gateway.server import Gateway

    mp.setattr(Gateway, "check_code", lambda self, who, host, now: None)


#: One switch per control of strongroom.redteam.controls.CONTROLS.
def _stale_evidence_accepted(mp: pytest.MonkeyPatch) -> None:
    """The desk forgets spent nonces and stops comparing the report data with its binding."""
    import strongroom.attest.admission as admission

    mp.setattr(admission.AdmissionDesk, "_spend", lambda self, nonce: None)
    mp.setattr(admission, "hmac", SimpleNamespace(compare_digest=lambda a, b: True))


def _debug_guests_admitted(mp: pytest.MonkeyPatch) -> None:
    from strongroom.attest.sevsnp import Report

    mp.setattr(Report, "debug", property(lambda self: False))


def _any_measurement(mp: pytest.MonkeyPatch) -> None:
    from strongroom.attest.policy import AttestationPolicy

    mp.setattr(AttestationPolicy, "check", lambda self, evidence: None)


SWITCHES: dict[str, Switch] = {
    "grant-evidence": Switch(weaken={"evidence": "noop"}),
    "policy": Switch(patch=_policy_sees_no_restriction),
    "grant-revocation": Switch(patch=_revocations_ignored),
    "release-nonce": Switch(patch=_nonces_forgotten),
    "attest-fresh-evidence": Switch(patch=_stale_evidence_accepted),
    "attest-no-debug": Switch(patch=_debug_guests_admitted),
    "attest-measurement": Switch(patch=_any_measurement),
    "signed-shard-size": Switch(patch=_client_size_trusted),
    "manifest-blob-binding": Switch(patch=_any_blob_is_the_shard),
    "state-guard": Switch(weaken={"guard": "off"}),
    "checkpoint-publisher": Switch(weaken={"publisher": "off"}),
    "audit-lock-bound": Switch(weaken={"lock_bound": "off"}),
    "api-body-decoding": Switch(patch=_lenient_bodies),
    "api-signature-nonce": Switch(patch=_api_nonces_forgotten),
    "console-csrf": Switch(patch=_no_csrf_check),
    "console-signin-throttle": Switch(patch=_no_signin_throttle),
    "sealed-keyring": Switch(patch=_seal_not_enforced),
    "unseal-ceremony-nonce": Switch(patch=_ceremony_never_renewed),
    "hsm-pin": Switch(impossible="the PIN is enforced by SoftHSM2 inside the probe's own "
                      "process; no switch reaches it (a token without a PIN cannot be made)"),
    "audit-verify": Switch(patch=_verifier_trusts_the_log),
    "witness-consistency": Switch(patch=_witness_forgets_roots),
    "egress-caps": Switch(patch=_no_egress_budgets),
    "canary": Switch(patch=_no_canaries),
    "break-glass-alert": Switch(patch=_no_break_glass_alert),
    "import-scanner": Switch(patch=_no_import_scan),
    "airgap-verification": Switch(patch=_bundle_hashes_unchecked),
    "import-provenance": Switch(patch=_publisher_unchecked),
    "gateway-codesign": Switch(patch=_unsigned_code_runs),
    "extraction-detector": Switch(patch=_no_extraction_detector),
    "output-rounding": Switch(patch=_no_rounding),
    "query-budget": Switch(patch=_no_query_budget),
    "code-integrity": Switch(patch=_code_never_rechecked),
    "key-barrier": Switch(at_build=_keys_stored_in_the_clear),
}

"""The attestation scenarios on a real target: each enclave attack is refused, named, audited.

The whole suite (``test_redteam_suite.py``) runs them too; this runs only the three
RT-TEE scenarios on the session's target so the attested path is proven in seconds,
and checks what the grader cannot see: the genuine enclave of RT-TEE-001 was
admitted (its key released into the enclave) before the replay was refused.
"""

from __future__ import annotations

import pytest

from strongroom.redteam.runner import run_scenario
from strongroom.redteam.schema import load_builtin
from strongroom.redteam.target import EmbeddedTarget

SCENARIOS = {sc.id: sc for sc in load_builtin() if sc.id.startswith("RT-TEE-")}


@pytest.mark.parametrize(("sid", "check"), [("RT-TEE-001", "nonce"), ("RT-TEE-002", "debug"),
                                            ("RT-TEE-003", "measurement")])
def test_enclave_attack_is_blocked_and_named(rt_target: EmbeddedTarget, sid: str,
                                             check: str) -> None:
    target = rt_target
    result = run_scenario(target, SCENARIOS[sid], "rttee", len(target.people))
    assert result.outcome == "blocked", result.evidence
    denials = [e for e in target.audit.recent(0)
               if e.action == "attest.admit" and e.decision == "deny"]
    assert any(e.reason == check for e in denials)
    if sid == "RT-TEE-001":
        allowed = [e for e in target.audit.recent(0)
                   if e.action == "key.release" and e.decision == "allow"
                   and "attestation" in e.details]
        assert allowed, "the genuine enclave was not admitted: the replay proves nothing"

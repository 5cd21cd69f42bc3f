"""Attestation policies: which evidence may receive keys, as a statement k security officers sign.

A policy names the platforms it accepts, the launch measurements allowed (the
VM images an operator built and measured), the minimum TCB component versions
per platform, and a serial that only grows (a gate refuses an older policy
than the one it pinned). Debug-enabled guests are never allowed: there is no
field to allow them. Use it like this::

    policy = AttestationPolicy(name="inference", serial=1, platforms=("sev-snp",),
                               measurements=frozenset({m_hex}),
                               min_tcb={"sev-snp": {"snp": 8, "microcode": 115}})
    env = sign_policy(policy, officer_a_key, officer_b_key)
    pinned = verify_policy(env, officers, threshold=2)      # raises unless k officers signed
    pinned.check(verified_evidence)                         # AttestationRefused naming the check

Test platforms (``*-test``) are refused in a policy unless the caller says
``allow_test=True``, which only tests and benchmarks do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.attest.evidence import TEST_SUFFIX, VerifiedEvidence, refuse
from strongroom.crypto.dsse import ExternalKey, sign_statement
from strongroom.crypto.hybrid_sig import add_mldsa_signature, verify_pinned
from strongroom.errors import IntegrityError, InvalidInput

__all__ = ["PAYLOAD_TYPE", "AttestationPolicy", "sign_policy", "verify_policy"]

#: The officer-statement kind ``attest-policy`` (strongroom.access.statements), so policies are
#: stored, cosigned (`strongroom people cosign`) and pinned like every officer statement.
PAYLOAD_TYPE = "application/vnd.strongroom.access.attest-policy.v1+json"
_TYPE = "strongroom.access.attest-policy/v1"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{32,128}$")


@dataclass(frozen=True)
class AttestationPolicy:
    """What evidence must show before a key is released into an enclave."""

    name: str
    serial: int
    platforms: tuple[str, ...]
    measurements: frozenset[str]
    min_tcb: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        obj = f"attestation policy {self.name!r}"
        if not _NAME.match(self.name):
            raise InvalidInput("a policy name is 1-64 of a-z 0-9 . _ -", obj=obj)
        if self.serial < 1:
            raise InvalidInput("serial must be 1 or more", obj=obj)
        if not self.platforms:
            raise InvalidInput("a policy must allow at least one platform", obj=obj)
        if not self.measurements:
            raise InvalidInput("a policy must allow at least one measurement", obj=obj,
                               remedy="measure the VM image (docs/attestation.md) and list it")
        bad = [m for m in self.measurements if not _HEX.match(m)]
        if bad:
            raise InvalidInput(f"measurement {bad[0][:20]!r} is not lower-case hex", obj=obj)
        for platform, mins in self.min_tcb.items():
            if platform not in self.platforms:
                raise InvalidInput(f"min_tcb names platform {platform!r} the policy does not "
                                   "allow", obj=obj)
            if not all(isinstance(v, int) and v >= 0 for v in mins.values()):
                raise InvalidInput("TCB minimums are whole numbers", obj=obj)

    def as_json(self) -> dict[str, Any]:
        """The statement officers sign (sorted lists, so signing is deterministic)."""
        return {"name": self.name, "serial": self.serial, "platforms": sorted(self.platforms),
                "measurements": sorted(self.measurements),
                "min_tcb": {p: dict(sorted(m.items())) for p, m in sorted(self.min_tcb.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, allow_test: bool = False) -> AttestationPolicy:
        """Read a policy statement; test platforms only with ``allow_test``."""
        obj = "attestation policy"
        try:
            policy = cls(name=str(data["name"]), serial=int(data["serial"]),
                         platforms=tuple(str(p) for p in data["platforms"]),
                         measurements=frozenset(str(m).lower() for m in data["measurements"]),
                         min_tcb={str(p): {str(k): int(v) for k, v in m.items()}
                                  for p, m in dict(data.get("min_tcb") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed policy ({type(exc).__name__}: {exc})", obj=obj,
                               remedy="give name, serial, platforms, measurements and "
                                      "optionally min_tcb") from exc
        test = [p for p in policy.platforms if p.endswith(TEST_SUFFIX)]
        if test and not allow_test:
            raise InvalidInput(f"platform {test[0]!r} is test-only", obj=obj,
                               remedy="list deployable platforms such as sev-snp")
        return policy

    def check(self, evidence: VerifiedEvidence) -> None:
        """Refuse ``evidence`` this policy does not allow, naming the check."""
        obj = f"attestation policy {self.name!r}"
        if evidence.platform not in self.platforms:
            raise refuse("platform", f"{evidence.platform} is not one of "
                                     f"{', '.join(self.platforms)}", obj=obj)
        if evidence.debug:
            raise refuse("debug", "a debug-enabled guest is never allowed", obj=obj)
        if evidence.measurement not in self.measurements:
            raise refuse("measurement", f"measurement {evidence.measurement[:16]}... is not "
                                        "on the allowlist", obj=obj)
        for component, minimum in self.min_tcb.get(evidence.platform, {}).items():
            have = evidence.tcb.get(component)
            if have is None or have < minimum:
                raise refuse("tcb", f"TCB {component} is {have}, the policy requires at "
                                    f"least {minimum}", obj=obj)


def sign_policy(policy: AttestationPolicy, *keys: Ed25519PrivateKey | ExternalKey,
                pq: MLDSA65PrivateKey | None = None) -> str:
    """The DSSE envelope of ``policy`` signed by each officer key (``pq``: a hybrid officer's
    ML-DSA-65 key, whose signature is added over the same bytes)."""
    env = sign_statement({**policy.as_json(), "_type": _TYPE}, PAYLOAD_TYPE, *keys)
    return add_mldsa_signature(env, PAYLOAD_TYPE, pq) if pq is not None else env


def verify_policy(envelope: str, officers: Mapping[str, Ed25519PublicKey], *, threshold: int,
                  allow_test: bool = False,
                  pq: Mapping[str, MLDSA65PublicKey] | None = None) -> AttestationPolicy:
    """The policy in ``envelope`` if ``threshold`` distinct officers signed it, else IntegrityError.

    ``pq``: hybrid officers' ML-DSA-65 keys; such an officer counts only with both signatures.
    """
    statement = verify_pinned(envelope, PAYLOAD_TYPE, officers, pq=pq, threshold=threshold,
                              obj="attestation policy")
    if statement.pop("_type", None) != _TYPE:
        raise IntegrityError("the statement is not an attestation policy",
                             obj="attestation policy")
    return AttestationPolicy.from_json(statement, allow_test=allow_test)

"""The gate's side of an attested release: its nonces, bound evidence, a per-key cache, wrapping.

A workload in an enclave proves itself in four steps; the gate never hands a
file key to anything but the enclave's ephemeral key::

    desk = AdmissionDesk({"sev-snp": SevSnp.with_amd_roots()})
    nonce = desk.challenge()                                  # 1. the gate issues a nonce
    # 2. the enclave makes an ephemeral key (hybrid ML-KEM-768 + X25519, or X25519) and
    #    asks its platform for evidence whose report data is binding(its_public_key, nonce)
    adm = desk.admit(policy, "sev-snp", report, collateral, recipient, nonce)   # 3. checked
    stanza = desk.wrap(file_key, adm)                         # 4. only that key can open it

:meth:`AdmissionDesk.admit` spends the nonce (single use, short-lived, MAC'd by the
gate: :mod:`strongroom.attest.nonces`; the runtime keeps them in the database so
evidence may come back to any gate of the deployment, after a restart too), verifies
the evidence on its platform, checks that the report data binds *this*
recipient and *this* nonce (so a report replayed with another ephemeral key,
or replayed at all, is refused) and that the policy allows it, then caches the
admission under the recipient for ``lifetime_s``: further releases to the
same ephemeral key skip the evidence verification (:meth:`admitted`).

The ephemeral key may be a hybrid post-quantum ``age1pq1…`` recipient (the
file key then travels in an ``mlkem768x25519`` stanza, so a recording of the
release stays closed to a future quantum computer) or a classical ``age1…``
X25519 one; the hybrid is what an enclave should use.

Each decision is passed to ``observer`` (the runtime appends it to the audit
log); a refusal is an :class:`~strongroom.errors.AttestationRefused` naming
the check (``nonce``, ``binding``, ``platform``, ``measurement``, ``tcb``,
``debug``, or one of the platform's own).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.attest.evidence import Collateral, Platform, VerifiedEvidence, refuse
from strongroom.attest.nonces import MemoryLedger, SignedNonces
from strongroom.attest.policy import AttestationPolicy
from strongroom.crypto.age import Stanza, X25519Recipient
from strongroom.crypto.age_pq import HybridRecipient
from strongroom.errors import AttestationRefused, InvalidInput

__all__ = ["NONCE_SIZE", "Admission", "AdmissionDesk", "AttestationService", "AttestedClaim",
           "EphemeralRecipient", "binding"]

NONCE_SIZE = 32
#: How long an issued nonce may wait for its evidence, seconds.
NONCE_TTL_S = 120.0
#: How long verified evidence stands for its ephemeral key, seconds.
LIFETIME_S = 900.0
#: Most nonces outstanding and admissions cached at once (oldest dropped first).
MAX_OUTSTANDING = 10_000

Observer = Callable[[dict[str, Any]], None]
#: The enclave's ephemeral key: hybrid ML-KEM-768 + X25519 (preferred) or classical X25519.
EphemeralRecipient = HybridRecipient | X25519Recipient


def binding(public_key: bytes, nonce: bytes) -> bytes:
    """The 64 bytes of report data that bind ``public_key`` and ``nonce``: SHA-256, then zeros."""
    return hashlib.sha256(public_key + nonce).digest() + bytes(32)


@dataclass(frozen=True)
class Admission:
    """Evidence the gate accepted for one ephemeral key under one policy, until ``expires``."""

    evidence: VerifiedEvidence
    recipient: EphemeralRecipient
    policy: str
    serial: int
    expires: float


class AdmissionDesk:
    """Issues nonces, admits bound evidence under a policy, and wraps file keys to admitted keys."""

    def __init__(self, platforms: Mapping[str, Platform], *, observer: Observer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] | None = None, nonce_ttl_s: float = NONCE_TTL_S,
                 lifetime_s: float = LIFETIME_S, nonces: SignedNonces | None = None) -> None:
        self._platforms = dict(platforms)
        self._observer = observer
        self._clock = clock
        self._wall = wall or (lambda: datetime.now(UTC))
        self._lifetime = lifetime_s
        #: Issues and spends the gate's nonces: this process only unless the runtime
        #: hands in the deployment's (MAC key in the barrier, ledger in the database).
        self.nonces = nonces or SignedNonces(os.urandom(32), MemoryLedger(MAX_OUTSTANDING),
                                             ttl_s=nonce_ttl_s, clock=clock)
        self._admitted: OrderedDict[tuple[str, bytes], Admission] = OrderedDict()
        self._lock = threading.Lock()

    def challenge(self) -> bytes:
        """A fresh nonce for one piece of evidence (single use, valid ``nonce_ttl_s``)."""
        return self.nonces.issue()

    def _spend(self, nonce: bytes) -> None:
        self.nonces.spend(nonce)

    def admit(self, policy: AttestationPolicy, platform: str, evidence: bytes,
              collateral: Collateral, recipient: EphemeralRecipient, nonce: bytes) -> Admission:
        """Check evidence bound to ``recipient`` and ``nonce`` against ``policy``; cache it."""
        facts: dict[str, Any] = {"policy": policy.name, "serial": policy.serial,
                                 "platform": platform, "recipient": str(recipient),
                                 "nonce": nonce.hex()}  # spent, allowed or not: in the log
        try:
            admission = self._admit(policy, platform, evidence, collateral, recipient, nonce,
                                    facts)
        except AttestationRefused as exc:
            self._observe({**facts, "decision": "deny", "check": exc.check,
                           "reason": exc.message[:300]})
            raise
        self._observe({**facts, "decision": "allow"})
        return admission

    def _admit(self, policy: AttestationPolicy, platform: str, evidence: bytes,
               collateral: Collateral, recipient: EphemeralRecipient, nonce: bytes,
               facts: dict[str, Any]) -> Admission:
        if platform not in policy.platforms:
            raise refuse("platform", f"policy {policy.name!r} does not allow {platform}",
                         obj="attested release")
        verifier = self._platforms.get(platform)
        if verifier is None:
            raise refuse("platform", f"this gate has no {platform} verifier",
                          obj="attested release")
        if len(nonce) != NONCE_SIZE:
            raise refuse("nonce", f"a nonce is {NONCE_SIZE} bytes", obj="attested release")
        self._spend(nonce)
        ev = verifier.verify(evidence, collateral, now=self._wall())
        facts.update(measurement=ev.measurement, chip_id=ev.chip_id, tcb=dict(ev.tcb))
        if not hmac.compare_digest(ev.report_data, binding(recipient.public_bytes, nonce)):
            raise refuse("binding", "the report data does not bind this ephemeral key and "
                                    "this nonce (replayed evidence, or made for another key)",
                         obj="attested release")
        policy.check(ev)
        admission = Admission(ev, recipient, policy.name, policy.serial,
                              self._clock() + self._lifetime)
        with self._lock:
            self._admitted[(policy.name, recipient.public_bytes)] = admission
            while len(self._admitted) > MAX_OUTSTANDING:
                self._admitted.popitem(last=False)
        return admission

    def extend(self, admission: Admission, policy: AttestationPolicy) -> Admission:
        """``admission``'s evidence checked against another ``policy`` too (no nonce spent).

        For a release two policies govern (a label's and a Grant's): the evidence
        was verified and bound once; this policy must allow it as well.
        """
        ev = admission.evidence
        facts: dict[str, Any] = {"policy": policy.name, "serial": policy.serial,
                                 "platform": ev.platform, "recipient": str(admission.recipient),
                                 "measurement": ev.measurement, "chip_id": ev.chip_id,
                                 "tcb": dict(ev.tcb), "also": admission.policy}
        try:
            if ev.platform not in policy.platforms:
                raise refuse("platform", f"policy {policy.name!r} does not allow {ev.platform}",
                             obj="attested release")
            policy.check(ev)
        except AttestationRefused as exc:
            self._observe({**facts, "decision": "deny", "check": exc.check,
                           "reason": exc.message[:300]})
            raise
        self._observe({**facts, "decision": "allow"})
        extended = Admission(ev, admission.recipient, policy.name, policy.serial,
                             admission.expires)
        with self._lock:
            self._admitted[(policy.name, admission.recipient.public_bytes)] = extended
        return extended

    def admitted(self, policy: AttestationPolicy, recipient: EphemeralRecipient) -> Admission | None:
        """The standing admission of ``recipient`` under ``policy`` (this serial), else None."""
        key = (policy.name, recipient.public_bytes)
        with self._lock:
            adm = self._admitted.get(key)
            if adm is None:
                return None
            if adm.serial != policy.serial or self._clock() > adm.expires:
                del self._admitted[key]
                return None
        return adm

    def wrap(self, file_key: bytes | bytearray, admission: Admission) -> Stanza:
        """``file_key`` as an age stanza only the admitted ephemeral key opens (its type's)."""
        if self._clock() > admission.expires:
            raise refuse("expired", "the admission of this ephemeral key has lapsed; attest "
                                    "again", obj="attested release")
        if len(file_key) != 16:
            raise InvalidInput("a file key is 16 bytes", obj="attested release")
        (stanza,) = admission.recipient.wrap(bytes(file_key))
        return stanza

    def _observe(self, event: dict[str, Any]) -> None:
        if self._observer is not None:
            self._observer(event)


@dataclass(frozen=True)
class AttestedClaim:
    """What a workload hands the gate with an attested release request.

    The first request of an ephemeral key carries the evidence, its collateral
    and the nonce the gate issued; later ones may carry only the recipient
    while its admission stands (:meth:`AdmissionDesk.admitted`).
    """

    recipient: EphemeralRecipient
    platform: str = ""
    evidence: bytes = b""
    collateral: Collateral = field(default_factory=Collateral)
    nonce: bytes = b""


class AttestationService:
    """What the release gate holds: the admission desk and the pinned policies by name."""

    def __init__(self, desk: AdmissionDesk,
                 policies: Callable[[str], AttestationPolicy | None]) -> None:
        self.desk = desk
        self._policies = policies

    def policy(self, name: str) -> AttestationPolicy:
        """The pinned, officer-signed policy called ``name``; refused when there is none."""
        policy = self._policies(name)
        if policy is None:
            raise refuse("policy", f"no attestation policy {name!r} is pinned",
                         obj="attested release")
        return policy

    def admit(self, policy_name: str, claim: AttestedClaim) -> Admission:
        """The claim's standing admission under the policy, else its evidence checked now."""
        policy = self.policy(policy_name)
        standing = self.desk.admitted(policy, claim.recipient)
        if standing is not None:
            return standing
        if not claim.evidence:
            raise refuse("evidence", f"policy {policy_name!r} needs evidence from the "
                                     "enclave (none given, and this ephemeral key is not "
                                     "admitted)", obj="attested release")
        return self.desk.admit(policy, claim.platform, claim.evidence, claim.collateral,
                               claim.recipient, claim.nonce)

    def admit_all(self, policy_names: Sequence[str], claim: AttestedClaim) -> Admission:
        """The claim admitted under every one of ``policy_names`` (the first's admission).

        The evidence (and its nonce) is checked once, under the first policy that
        has no standing admission for this key; every other policy must allow the
        same verified evidence: a release two policies govern needs both.
        """
        if not policy_names:
            raise refuse("policy", "no attestation policy is named", obj="attested release")
        admissions: dict[str, Admission] = {}
        for name in policy_names:  # standing admissions first: no evidence needed for those
            standing = self.desk.admitted(self.policy(name), claim.recipient)
            if standing is not None:
                admissions[name] = standing
        missing = [n for n in policy_names if n not in admissions]
        if missing:
            base = next(iter(admissions.values()), None) if not claim.evidence else None
            if base is None:
                base = self.admit(missing[0], claim)
                admissions[missing[0]] = base
            for name in missing:
                if name not in admissions:
                    admissions[name] = self.desk.extend(base, self.policy(name))
        return admissions[policy_names[0]]

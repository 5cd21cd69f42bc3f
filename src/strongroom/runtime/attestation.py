"""The deployment's attestation wiring: the release gate's AttestationService, built at unseal.

:func:`attestation_service` gives the gate of ``strongroom serve`` (and of the
local key agent) the deployable platforms (AMD SEV-SNP over AMD's shipped roots;
Intel TDX when dcap-qvl is installed), the officers' pinned attestation policies
and an observer that appends every admission decision, with the nonce it spent,
to the audit log (``attest.admit``), and nonces any gate on the database can
spend once (:func:`deployment_nonces`)::

    gate = ReleaseGate(..., attestation=attestation_service(keyring, store, audit))
    nonce = gate.attestation.desk.challenge()
    stanza = gate.release_attested(request, claim_from_json(body))

:func:`claim_to_json` / :func:`claim_from_json` carry an :class:`AttestedClaim`
over the agent's socket.

**Test roots.** ``STRONGROOM_ATTEST_TEST_ROOTS`` (TEST ONLY) names a PEM file
holding one self-signed ARK a test made (:mod:`strongroom.attest.forge`); the
gate then also verifies evidence on the platform ``sev-snp-test`` over those
roots, and pinned policies may list that platform. Evidence verified over test
roots is always reported as ``sev-snp-test``, never ``sev-snp``, so no policy
a deployment's officers signed for real hardware can admit it; the posture
report flags the setting as critical (docs/attestation.md explains the choice).
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.attest.admission import (
    NONCE_TTL_S,
    AdmissionDesk,
    AttestationService,
    AttestedClaim,
)
from strongroom.attest.evidence import PLATFORMS, TEST_SUFFIX, Collateral, Platform
from strongroom.attest.nonces import MAC_KEY_SIZE, SignedNonces
from strongroom.crypto.age import X25519Recipient, parse_recipient
from strongroom.crypto.age_pq import HybridRecipient
from strongroom.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from strongroom.audit.log import AuditLog
    from strongroom.keys.keyring import Keyring
    from strongroom.store.db import Store

__all__ = ["ADMIT_ACTION", "TEST_PLATFORM", "AttestSettings", "attestation_service",
           "claim_from_json", "claim_to_json", "deployable_platforms", "deployment_nonces",
           "nonce_mac_key"]

_log = logging.getLogger(__name__)

#: The audit action of each admission decision (allow or deny, with the nonce spent).
ADMIT_ACTION = "attest.admit"
#: The barrier entry (``ext/…``) holding the deployment's nonce MAC key.
NONCE_KEY_ENTRY = "attest-nonce-key"
#: The only platform test roots can make: never a deployable name.
TEST_PLATFORM = "sev-snp" + TEST_SUFFIX


class AttestSettings(BaseSettings):
    """Attestation settings read from the environment (``STRONGROOM_ATTEST_*``)."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_ATTEST_", extra="ignore")

    test_roots: Path | None = Field(
        default=None, description="TEST ONLY: PEM file of a test vendor's ARK (sev-snp-test)")


def deployable_platforms() -> dict[str, Platform]:
    """Every deployable platform this host can verify (TDX only with dcap-qvl installed)."""
    out: dict[str, Platform] = {}
    for name, factory in PLATFORMS.items():
        try:
            out[name] = factory()
        except ConfigError:
            continue  # an optional verifier not installed: its evidence is refused by name
    return out


def _test_platform(path: Path) -> Platform:
    from strongroom.attest.sevsnp import SevSnp, load_roots

    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the test roots ({exc.strerror})", obj=str(path),
                          remedy="unset STRONGROOM_ATTEST_TEST_ROOTS (test only)") from exc
    return SevSnp(load_roots([blob]), name=TEST_PLATFORM)


def attestation_service(keyring: Keyring, store: Store, audit: AuditLog,
                        settings: AttestSettings | None = None) -> AttestationService:
    """The gate's admission desk over this host's platforms and the officers' pinned policies."""
    from strongroom.access.attest_policies import pinned_policy
    from strongroom.access.directory import DirectoryReader

    settings = settings or AttestSettings()
    platforms = deployable_platforms()
    if settings.test_roots is not None:
        platforms[TEST_PLATFORM] = _test_platform(settings.test_roots)
        _log.warning("STRONGROOM_ATTEST_TEST_ROOTS is set: this gate also trusts the test "
                     "roots in %s as %s (test only; never in a deployment)",
                     settings.test_roots, TEST_PLATFORM)
    allow_test = settings.test_roots is not None
    reader = DirectoryReader(store, keyring.officers, keyring.officer_threshold,
                             mldsa=keyring.officer_mldsa)

    def observe(event: dict[str, Any]) -> None:
        decision = str(event.pop("decision"))
        audit.append(actor=str(event.get("recipient", "")), action=ADMIT_ACTION,
                     obj=f"attestation policy {event.get('policy', '')}", decision=decision,
                     reason=str(event.get("check", "")), details=event)

    desk = AdmissionDesk(platforms, observer=observe, nonces=deployment_nonces(keyring, store))
    return AttestationService(
        desk, lambda name: pinned_policy(reader, name, allow_test=allow_test))


def nonce_mac_key(keyring: Keyring) -> bytes:
    """The deployment's nonce MAC key, sealed in the barrier (made by the first gate to need it).

    Every unsealed gate on the database reads the same entry; the database only
    ever sees it sealed, so a DBA cannot make a nonce a gate would accept.
    """
    stored = keyring.sealed_entry(NONCE_KEY_ENTRY)
    if not isinstance(stored, str):
        keyring.seal_entry(NONCE_KEY_ENTRY, os.urandom(MAC_KEY_SIZE).hex())
        stored = keyring.sealed_entry(NONCE_KEY_ENTRY)  # the newest, if another gate raced
    if not isinstance(stored, str):  # pragma: no cover - seal_entry just wrote it
        raise ConfigError("the attestation nonce key is missing from the barrier",
                          obj="keyring", remedy="unseal again")
    return bytes.fromhex(stored)


def deployment_nonces(keyring: Keyring, store: Store) -> SignedNonces:
    """Nonces every gate on ``store`` can spend once: MAC'd under the barrier's key, rows in
    ``attest_nonces`` (so evidence may return to another host, or after a restart)."""
    from strongroom.store.nonces import StoreAttestNonces

    return SignedNonces(lambda: nonce_mac_key(keyring), StoreAttestNonces(store),
                        ttl_s=NONCE_TTL_S)


def claim_to_json(claim: AttestedClaim) -> dict[str, Any]:
    """The claim as JSON (base64 bytes; collateral as its certificates' DER and documents)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    coll = claim.collateral
    blobs = [c.public_bytes(Encoding.PEM) for c in coll.certificates]
    blobs += [c.public_bytes(Encoding.PEM) for c in coll.crls]
    blobs += list(coll.documents)
    return {"recipient": str(claim.recipient), "platform": claim.platform,
            "evidence": base64.b64encode(claim.evidence).decode(),
            "collateral": [base64.b64encode(b).decode() for b in blobs],
            "nonce": base64.b64encode(claim.nonce).decode()}


def claim_from_json(data: dict[str, Any]) -> AttestedClaim:
    """The claim :func:`claim_to_json` wrote (or an HTTP body with the same fields)."""
    obj = "attested release"
    try:
        recipient = parse_recipient(str(data["recipient"]))
        if not isinstance(recipient, HybridRecipient | X25519Recipient):  # pragma: no cover
            raise InvalidInput("the ephemeral key must be an age1pq1… or age1… recipient",
                               obj=obj)
        blobs = [base64.b64decode(str(b), validate=True) for b in data.get("collateral") or ()]
        return AttestedClaim(recipient=recipient, platform=str(data.get("platform") or ""),
                             evidence=base64.b64decode(str(data.get("evidence") or ""),
                                                       validate=True),
                             collateral=Collateral.from_pem(*blobs, obj=obj),
                             nonce=base64.b64decode(str(data.get("nonce") or ""), validate=True))
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"malformed attested claim ({type(exc).__name__})", obj=obj,
                           remedy="give recipient (age1pq1... or age1...), platform, and base64 evidence, "
                                  "collateral and nonce") from exc


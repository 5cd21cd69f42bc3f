"""Attested release: a signed policy, the gate's nonces, evidence bound to an ephemeral key, wrapping.

The enclave side is played by a forged chip: it makes an ephemeral X25519 key,
asks for a nonce, and signs a report whose data binds both; the gate side is
an AdmissionDesk over the forged vendor's platform.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.attest.admission import AdmissionDesk, binding
from strongroom.attest.forge import ForgedChip, ForgedVendor
from strongroom.attest.policy import AttestationPolicy, sign_policy, verify_policy
from strongroom.attest.sevsnp import POLICY_DEBUG
from strongroom.crypto.age import X25519Identity, new_file_key
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.crypto.dsse import key_id
from strongroom.errors import AttestationRefused, IntegrityError, InvalidInput

GOOD = b"\x5a" * 48
PLATFORM = "sev-snp-test"


@pytest.fixture(scope="module")
def vendor() -> ForgedVendor:
    return ForgedVendor.create("Milan")


@pytest.fixture(scope="module")
def chip(vendor: ForgedVendor) -> ForgedChip:
    return vendor.chip()


def _policy(**over: Any) -> AttestationPolicy:
    fields: dict[str, Any] = {"name": "inference", "serial": 1, "platforms": (PLATFORM,),
                              "measurements": frozenset({GOOD.hex()}),
                              "min_tcb": {PLATFORM: {"snp": 8, "microcode": 115}}}
    return AttestationPolicy(**{**fields, **over})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def world(vendor: ForgedVendor) -> tuple[AdmissionDesk, list[dict[str, Any]], Clock]:
    events: list[dict[str, Any]] = []
    clock = Clock()
    desk = AdmissionDesk({PLATFORM: vendor.platform()}, observer=events.append, clock=clock)
    return desk, events, clock


def _enclave(desk: AdmissionDesk, chip: ForgedChip, **report: Any) -> tuple[
        X25519Identity, bytes, bytes]:
    identity = X25519Identity.generate()
    nonce = desk.challenge()
    data = binding(identity.recipient.public_bytes, nonce)
    return identity, nonce, chip.report(report_data=data, **{"measurement": GOOD, **report})


def test_policy_needs_k_officers_and_refuses_test_platforms_by_default() -> None:
    officers = [Ed25519PrivateKey.generate() for _ in range(3)]
    trusted = {key_id(k.public_key()): k.public_key() for k in officers}
    policy = _policy(platforms=("sev-snp",), min_tcb={"sev-snp": {"snp": 8}})
    env = sign_policy(policy, officers[0], officers[1])
    assert verify_policy(env, trusted, threshold=2) == policy
    with pytest.raises(IntegrityError, match=r"1 trusted key\(s\), 2 required"):
        verify_policy(sign_policy(policy, officers[0]), trusted, threshold=2)
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(IntegrityError):
        verify_policy(sign_policy(policy, officers[0], stranger), trusted, threshold=2)
    test_env = sign_policy(_policy(), officers[0], officers[1])
    with pytest.raises(InvalidInput, match="test-only"):
        verify_policy(test_env, trusted, threshold=2)
    assert verify_policy(test_env, trusted, threshold=2, allow_test=True).platforms == (PLATFORM,)
    with pytest.raises(InvalidInput, match="at least one measurement"):
        _policy(measurements=frozenset())
    with pytest.raises(InvalidInput, match="not lower-case hex"):
        _policy(measurements=frozenset({"XYZ"}))


def test_attested_release_wraps_the_key_to_the_enclave_only(
        world: tuple[AdmissionDesk, list[dict[str, Any]], Clock], chip: ForgedChip) -> None:
    desk, events, _ = world
    identity, nonce, report = _enclave(desk, chip)
    adm = desk.admit(_policy(), PLATFORM, report, chip.collateral(), identity.recipient, nonce)
    assert adm.evidence.measurement == GOOD.hex()
    file_key = new_file_key()
    stanza = desk.wrap(file_key, adm)
    assert stanza.type == "X25519"
    assert identity.unwrap([stanza]) == file_key
    assert X25519Identity.generate().unwrap([stanza]) is None
    assert events[-1]["decision"] == "allow" and events[-1]["measurement"] == GOOD.hex()
    # Cached for the ephemeral key's lifetime: no second evidence needed.
    assert desk.admitted(_policy(), identity.recipient) == adm
    assert desk.admitted(_policy(serial=2), identity.recipient) is None


def test_a_hybrid_ephemeral_key_gets_a_post_quantum_stanza(
        world: tuple[AdmissionDesk, list[dict[str, Any]], Clock], chip: ForgedChip) -> None:
    """An enclave's age1pq1 key: the file key travels in an mlkem768x25519 stanza only it opens,
    and evidence bound to it does not admit its X25519 half on its own."""
    desk, _, _ = world
    enclave = HybridIdentity.generate()
    nonce = desk.challenge()
    report = chip.report(report_data=binding(enclave.recipient.public_bytes, nonce),
                         measurement=GOOD)
    adm = desk.admit(_policy(), PLATFORM, report, chip.collateral(), enclave.recipient, nonce)
    file_key = new_file_key()
    stanza = desk.wrap(file_key, adm)
    assert stanza.type == "mlkem768x25519"
    assert enclave.unwrap([stanza]) == file_key
    assert HybridIdentity.generate().unwrap([stanza]) is None
    classical = X25519Identity.generate()
    nonce2 = desk.challenge()
    with pytest.raises(AttestationRefused, match="does not bind this ephemeral key"):
        desk.admit(_policy(), PLATFORM, chip.report(
            report_data=binding(enclave.recipient.public_bytes, nonce2), measurement=GOOD),
            chip.collateral(), classical.recipient, nonce2)


def test_cache_lapses_with_the_ephemeral_keys_lifetime(
        world: tuple[AdmissionDesk, list[dict[str, Any]], Clock], chip: ForgedChip) -> None:
    desk, _, clock = world
    identity, nonce, report = _enclave(desk, chip)
    adm = desk.admit(_policy(), PLATFORM, report, chip.collateral(), identity.recipient, nonce)
    clock.t += 901
    assert desk.admitted(_policy(), identity.recipient) is None
    with pytest.raises(AttestationRefused) as info:
        desk.wrap(new_file_key(), adm)
    assert info.value.check == "expired"


def _refused(desk: AdmissionDesk, events: list[dict[str, Any]], *args: Any) -> str:
    with pytest.raises(AttestationRefused) as info:
        desk.admit(*args)
    assert events[-1]["decision"] == "deny" and events[-1]["check"] == info.value.check
    return info.value.check


def test_replayed_report_with_another_ephemeral_key(
        world: tuple[AdmissionDesk, list[dict[str, Any]], Clock], chip: ForgedChip) -> None:
    desk, events, _ = world
    identity, nonce, report = _enclave(desk, chip)
    thief = X25519Identity.generate().recipient
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(), thief,
                    nonce) == "binding"
    # The same report again, even with its own key: the nonce is spent.
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, nonce) == "nonce"
    # With a fresh nonce the old report binds the old one: refused.
    fresh = desk.challenge()
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, fresh) == "binding"


def test_stale_and_foreign_nonces(world: tuple[AdmissionDesk, list[dict[str, Any]], Clock],
                                  chip: ForgedChip) -> None:
    desk, events, clock = world
    identity, nonce, report = _enclave(desk, chip)
    clock.t += 121
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, nonce) == "nonce"
    made_up = b"\x01" * 32
    report = chip.report(report_data=binding(identity.recipient.public_bytes, made_up),
                         measurement=GOOD)
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, made_up) == "nonce"


def test_policy_checks_name_what_failed(
        world: tuple[AdmissionDesk, list[dict[str, Any]], Clock], vendor: ForgedVendor,
        chip: ForgedChip) -> None:
    desk, events, _ = world
    identity, nonce, report = _enclave(desk, chip, measurement=b"\x66" * 48)
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, nonce) == "measurement"
    old = vendor.chip(tcb={"bootloader": 3, "tee": 0, "snp": 7, "microcode": 115})
    identity, nonce, report = _enclave(desk, old)
    assert _refused(desk, events, _policy(), PLATFORM, report, old.collateral(),
                    identity.recipient, nonce) == "tcb"
    identity, nonce, report = _enclave(desk, chip, policy=0x30000 | POLICY_DEBUG)
    assert _refused(desk, events, _policy(), PLATFORM, report, chip.collateral(),
                    identity.recipient, nonce) == "debug"
    identity, nonce, report = _enclave(desk, chip)
    other = _policy(platforms=("sev-snp",), min_tcb={})
    assert _refused(desk, events, other, PLATFORM, report, chip.collateral(),
                    identity.recipient, nonce) == "platform"
    tampered = bytearray(report)
    tampered[0x90] ^= 1
    assert _refused(desk, events, _policy(), PLATFORM, bytes(tampered), chip.collateral(),
                    identity.recipient, nonce) == "signature"

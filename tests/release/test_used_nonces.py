"""UsedNonces: release nonces spent once, remembered until their evidence expires."""

from __future__ import annotations

import pytest

from strongroom.errors import AccessDenied
from strongroom.release.request import UsedNonces


def test_a_spent_nonce_is_refused_until_it_expires() -> None:
    nonces = UsedNonces()
    nonces.spend("n1", 100.0, 10.0, obj="m")
    with pytest.raises(AccessDenied, match="replay"):
        nonces.spend("n1", 100.0, 50.0, obj="m")
    nonces.spend("n2", 200.0, 101.0, obj="m")  # prunes n1: it expired at 100
    nonces.spend("n1", 300.0, 101.0, obj="m")


def test_remembering_a_nonce_this_gate_spent_queues_it_once() -> None:
    # The state guard remembers every release nonce it reads from the log, this
    # gate's own included: the same nonce must not queue twice for expiry.
    nonces = UsedNonces()
    nonces.spend("n1", 100.0, 10.0, obj="m")
    for _ in range(3):
        nonces.remember("n1", 100.0)
    assert len(nonces._expiry) == 1
    with pytest.raises(AccessDenied):
        nonces.check("n1", obj="m")


def test_an_earlier_expiry_never_shortens_a_held_one() -> None:
    nonces = UsedNonces()
    nonces.remember("n1", 100.0)
    nonces.remember("n1", 300.0)
    nonces.remember("n1", 100.0)  # e.g. an older entry for it read from the log again
    nonces.spend("n2", 200.0, 150.0, obj="m")  # prunes what expired by 150
    with pytest.raises(AccessDenied, match="replay"):
        nonces.spend("n1", 400.0, 150.0, obj="m")


def test_a_later_expiry_extends_a_held_one() -> None:
    nonces = UsedNonces()
    nonces.remember("n1", 100.0)
    nonces.remember("n1", 300.0)
    nonces.spend("n2", 400.0, 150.0, obj="m")  # the first expiry has passed; the second holds
    with pytest.raises(AccessDenied, match="replay"):
        nonces.spend("n1", 400.0, 150.0, obj="m")
    nonces.spend("n3", 500.0, 301.0, obj="m")  # now both have passed
    nonces.spend("n1", 500.0, 301.0, obj="m")

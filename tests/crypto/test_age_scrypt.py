"""Passphrase (scrypt) recipients: round trips, the stanza-alone rule and the work-factor bound."""

from __future__ import annotations

import pytest

from strongroom.crypto import age, age_scrypt
from strongroom.errors import HeaderError, InvalidInput, NoIdentityMatched


def test_round_trip_with_a_lazy_passphrase() -> None:
    blob = age.encrypt(b"secret doc", [age_scrypt.ScryptRecipient("hunter2", work_factor=10)])
    asked: list[int] = []

    def ask() -> str:
        asked.append(1)
        return "hunter2"

    assert age.decrypt(blob, [age_scrypt.ScryptIdentity(ask)]) == b"secret doc"
    assert asked == [1]
    with pytest.raises(NoIdentityMatched):
        age.decrypt(blob, [age_scrypt.ScryptIdentity("hunter3")])


def test_lazy_passphrase_is_not_asked_for_a_key_file() -> None:
    identity = age.X25519Identity.generate()
    blob = age.encrypt(b"x", [identity.recipient])

    def never() -> str:
        raise AssertionError("asked for a passphrase")

    assert age.decrypt(blob, [age_scrypt.ScryptIdentity(never), identity]) == b"x"


def test_scrypt_must_be_the_only_recipient() -> None:
    with pytest.raises(InvalidInput, match="only recipient"):
        age.encrypt(b"x", [age_scrypt.ScryptRecipient("a", work_factor=10),
                           age.X25519Identity.generate().recipient])


def test_work_factor_above_the_bound_is_refused_before_any_work() -> None:
    blob = age.encrypt(b"x", [age_scrypt.ScryptRecipient("a", work_factor=10)])
    forged = blob.replace(b" 10\n", b" 21\n", 1)
    with pytest.raises(HeaderError, match="above the bound of 20"):
        age.decrypt(forged, [age_scrypt.ScryptIdentity("a")])
    with pytest.raises(HeaderError, match="above the bound of 12"):
        age.decrypt(blob.replace(b" 10\n", b" 13\n", 1),
                    [age_scrypt.ScryptIdentity("a", max_work_factor=12)])
    with pytest.raises(InvalidInput):
        age_scrypt.ScryptRecipient("a", work_factor=age_scrypt.MAX_WORK_FACTOR + 1)
    with pytest.raises(InvalidInput, match="empty"):
        age_scrypt.ScryptRecipient("")

"""Whom ``people revoke WHO`` revokes: a listed name or a key id, never a typo signed as a key."""

from __future__ import annotations

import pytest

from strongroom.access.directory import revocation_subject
from strongroom.errors import InvalidInput

PEOPLE = [("alice", "0123456789abcdef"), ("bob", "fedcba9876543210")]
REVOKED = [("mallory", "00000000deadbeef")]


def test_a_name_or_a_key_id_in_force_names_its_key() -> None:
    assert revocation_subject("alice", PEOPLE, REVOKED) == "0123456789abcdef"
    assert revocation_subject("fedcba9876543210", PEOPLE, REVOKED) == "fedcba9876543210"
    # A key nobody lists yet (an enrollment still collecting signatures, a leaked key).
    assert revocation_subject("1111222233334444", PEOPLE, REVOKED) == "1111222233334444"


@pytest.mark.parametrize("who", ["alcie", "ALICE", "0123456789ABCDEF", "0123456789abcde",
                                 "0123456789abcdef0", "../0123456789abcdef"])
def test_an_unknown_name_is_refused_not_signed_as_a_key_id(who: str) -> None:
    with pytest.raises(InvalidInput, match="not a key id") as info:
        revocation_subject(who, PEOPLE, REVOKED)
    assert info.value.obj == who and "people ls" in (info.value.remedy or "")


@pytest.mark.parametrize("who", ["mallory", "00000000deadbeef"])
def test_a_key_revoked_already_is_refused(who: str) -> None:
    with pytest.raises(InvalidInput, match="already revoked"):
        revocation_subject(who, PEOPLE, REVOKED)

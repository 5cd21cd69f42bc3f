"""The hybrid ML-KEM-768 + X25519 age recipient (``age1pq1…``), beyond the testkit vectors."""

from __future__ import annotations

import pytest

from strongroom.crypto import age, age_pq, bech32
from strongroom.errors import HeaderError, InvalidInput, NoIdentityMatched

from testsupport import CONFORMANCE

# The testkit's hybrid identity and the file it opens (vector "hybrid").
TESTKIT_IDENTITY = "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"


def test_round_trip_and_encodings() -> None:
    identity = age_pq.HybridIdentity.generate()
    recipient = identity.recipient
    text = str(recipient)
    assert text.startswith("age1pq1") and text == text.lower()
    assert len(recipient.public_bytes) == age_pq.PUBLIC_KEY_SIZE == 1216
    assert age.parse_recipient(text) == recipient
    assert str(identity).startswith("AGE-SECRET-KEY-PQ-1")
    again = age.parse_identities(f"# a comment\n{identity}\n")
    assert len(again) == 1 and str(again[0]) == str(identity)
    blob = age.encrypt(b"weights" * 1000, [recipient])
    header = age.parse_header(blob)
    assert header is not None
    (stanza,) = header.stanzas
    assert stanza.type == "mlkem768x25519" and len(stanza.body) == 32
    assert age.decrypt(blob, [identity]) == b"weights" * 1000
    with pytest.raises(NoIdentityMatched):
        age.decrypt(blob, [age_pq.HybridIdentity.generate()])


def test_mixed_with_x25519_recipients() -> None:
    pq, classic = age_pq.HybridIdentity.generate(), age.X25519Identity.generate()
    blob = age.encrypt(b"x", [classic.recipient, pq.recipient])
    assert age.decrypt(blob, [pq]) == b"x"
    assert age.decrypt(blob, [classic]) == b"x"


def test_testkit_identity_derives_the_testkit_file_key() -> None:
    """The seed expands to the same keys the testkit used (decrypts its file)."""
    raw = (CONFORMANCE / "age" / "hybrid").read_bytes()
    data = raw.partition(b"\n\n")[2]
    identity = age.parse_identity(TESTKIT_IDENTITY)
    header = age.parse_header(data, complete=False)
    assert header is not None
    assert identity.unwrap(header.stanzas) == b"YELLOW SUBMARINE"


@pytest.mark.parametrize("size", [age_pq.ENC_SIZE - 1, age_pq.ENC_SIZE + 1])
def test_enc_of_the_wrong_length_is_a_header_error(size: int) -> None:
    identity = age_pq.HybridIdentity.generate()
    (stanza,) = identity.recipient.wrap(bytes(16))
    enc = age.b64decode_canonical(stanza.args[0].encode(), "enc")
    bad = (enc + bytes(1))[:size]
    forged = age.Stanza(stanza.type, (age.b64encode_unpadded(bad).decode(),), stanza.body)
    with pytest.raises(HeaderError, match="encapsulated key"):
        identity.unwrap([forged])


def test_low_order_x25519_half_is_a_header_error() -> None:
    identity = age_pq.HybridIdentity.generate()
    (stanza,) = identity.recipient.wrap(bytes(16))
    enc = age.b64decode_canonical(stanza.args[0].encode(), "enc")
    forged_enc = enc[:1088] + bytes(32)  # the identity point: an all-zero shared secret
    forged = age.Stanza(stanza.type, (age.b64encode_unpadded(forged_enc).decode(),), stanza.body)
    with pytest.raises(HeaderError, match="low-order"):
        identity.unwrap([forged])


def test_bad_recipient_strings_are_named_errors() -> None:
    good = str(age_pq.HybridIdentity.generate().recipient)
    with pytest.raises(InvalidInput, match="checksum"):
        age.parse_recipient(good[:-1] + ("q" if good[-1] != "q" else "p"))
    short = bech32.encode("age1pq", bytes(100))
    with pytest.raises(InvalidInput, match="wrong public key length"):
        age.parse_recipient(short)
    with pytest.raises(InvalidInput, match="not a valid public key"):
        age.parse_recipient(bech32.encode("age1pq", b"\xff" * 1216))
    with pytest.raises(InvalidInput) as info:
        age.parse_identities("AGE-SECRET-KEY-PQ-1QQQQ\n")
    assert "line 1" in str(info.value)

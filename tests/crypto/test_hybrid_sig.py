"""ML-DSA-65 beside Ed25519 in DSSE envelopes and as an extra signed-note signer line."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from strongroom.crypto import dsse, note
from strongroom.crypto.hybrid_sig import (
    MLDSANoteSigner,
    MLDSANoteVerifier,
    PinnedSigner,
    add_mldsa_signature,
    verify_hybrid_statement,
)
from strongroom.errors import IntegrityError, NoteError

TYPE = "application/vnd.strongroom.test+json"


@pytest.fixture(scope="module")
def keys() -> tuple[Ed25519PrivateKey, MLDSA65PrivateKey]:
    return Ed25519PrivateKey.generate(), MLDSA65PrivateKey.generate()


def test_both_signatures_required_when_both_are_pinned(
        keys: tuple[Ed25519PrivateKey, MLDSA65PrivateKey]) -> None:
    ed, pq = keys
    pinned = [PinnedSigner(ed.public_key(), pq.public_key())]
    classic = dsse.sign_statement({"grant": "g1"}, TYPE, ed)
    hybrid = add_mldsa_signature(classic, TYPE, pq)
    assert verify_hybrid_statement(hybrid, TYPE, pinned) == {"grant": "g1"}
    # An Ed25519-only verifier still accepts it (the ML-DSA entry is an unknown key id).
    assert dsse.verify_statement(hybrid, TYPE, {dsse.key_id(ed.public_key()): ed.public_key()})
    with pytest.raises(IntegrityError, match="0 pinned signer"):
        verify_hybrid_statement(classic, TYPE, pinned)  # Ed25519 alone is not enough
    # Pinned Ed25519 only: the classical envelope counts.
    assert verify_hybrid_statement(classic, TYPE, [PinnedSigner(ed.public_key())])


def test_a_forged_mldsa_signature_is_an_error(
        keys: tuple[Ed25519PrivateKey, MLDSA65PrivateKey]) -> None:
    ed, pq = keys
    env = json.loads(add_mldsa_signature(dsse.sign_statement({"a": 1}, TYPE, ed), TYPE, pq))
    sig = bytearray(base64.b64decode(env["signatures"][1]["sig"]))
    sig[10] ^= 1
    env["signatures"][1]["sig"] = base64.b64encode(sig).decode()
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_hybrid_statement(json.dumps(env), TYPE, [PinnedSigner(ed.public_key(), pq.public_key())])


def test_note_gets_an_mldsa_line_ordinary_verifiers_ignore(
        keys: tuple[Ed25519PrivateKey, MLDSA65PrivateKey]) -> None:
    _, pq = keys
    skey, vkey = note.generate_key("log.example/a")
    text = "log.example/a\n5\nq6yYbJk4PtZ4kUJCWUfb8ng/58gxAI9cjvlJHfKYyb8=\n"
    signed = note.sign(text, note.new_signer(skey), MLDSANoteSigner("log.example/a-pq", pq))
    plain = note.open_note(signed, [note.new_verifier(vkey)])
    assert plain.text == text and len(plain.unverified) == 1
    both = note.open_note(signed, [note.new_verifier(vkey),
                                   MLDSANoteVerifier("log.example/a-pq", pq.public_key())])
    assert both.signed_by("log.example/a") and both.signed_by("log.example/a-pq")
    forged = signed.replace(text, text.replace("5\n", "6\n"))
    with pytest.raises(NoteError):
        note.open_note(forged, [MLDSANoteVerifier("log.example/a-pq", pq.public_key())])

"""C2SP signed notes: Go sumdb/note vectors, real cosigned checkpoints, and misuse."""

from __future__ import annotations

import pytest

from strongroom.crypto.note import (
    SIG_COSIGNATURE_V1,
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    generate_key,
    new_signer,
    new_verifier,
    open_note,
    parse_note,
    sign,
)
from strongroom.errors import InvalidInput

# golang.org/x/mod/sumdb/note note_test.go
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = GO_TEXT + (
    "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
# transparency-dev/formats: a type 0x01 key whose base64 contains '+'.
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"

# A real checkpoint of a public CT log with witness cosignatures (tlog-cosignature/v1).
REAL_CHECKPOINT = """arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
"""
REAL_LOG_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def test_go_vector_verifies() -> None:
    note = open_note(GO_NOTE, [new_verifier(GO_VKEY)])
    assert note.text == GO_TEXT
    assert [s.name for s in note.sigs] == ["PeterNeumann"]


def test_go_vector_signs_identically() -> None:
    signer = new_signer(GO_SKEY)
    assert signer.vkey == GO_VKEY
    assert signer.skey == GO_SKEY
    assert sign(GO_TEXT, signer) == GO_NOTE  # Ed25519 is deterministic


def test_parse_keys_round_trip() -> None:
    for vkey in (GO_VKEY, ENOCH_VKEY, PLUS_VKEY, REMORA_VKEY):
        assert new_verifier(vkey).vkey == vkey
    assert isinstance(new_verifier(REMORA_VKEY), CosignatureVerifier)


def test_real_cosigned_checkpoint() -> None:
    note = open_note(REAL_CHECKPOINT, [new_verifier(REAL_LOG_VKEY), new_verifier(REMORA_VKEY)])
    assert {s.name for s in note.sigs} == {"arche2025h1.staging.ct.transparency.dev", "remora.n621.de"}
    # Unknown signers (the RFC 6962 signature, other witnesses) are ignored, not errors.
    assert len(note.unverified) == 4
    clobbered = REAL_CHECKPOINT.replace("1432088532", "1432088533")
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(clobbered, [new_verifier(REMORA_VKEY)])


def test_cosignature_round_trip() -> None:
    skey, vkey = generate_key("witness.example/w1", SIG_COSIGNATURE_V1)
    signer = new_signer(skey)
    assert isinstance(signer, CosignatureSigner)
    assert vkey.split("+")[2].startswith("B")  # base64 of 0x04
    text = "example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    note = open_note(sign(text, signer), [new_verifier(vkey)])
    assert CosignatureVerifier.timestamp(note.sigs[0].sig) > 1_700_000_000
    # A cosignature key cannot pose as a plain Ed25519 key of the same name.
    plain = new_verifier(vkey.split("+")[0] + "+" + vkey.split("+", 1)[1])
    assert plain.key_id != new_verifier(GO_VKEY).key_id


def test_rejections() -> None:
    skey, vkey = generate_key("example.com/a")
    other_skey, other_vkey = generate_key("example.com/b")
    signed = sign("hello\n", new_signer(skey))
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_note(signed, [new_verifier(other_vkey)])
    # Same name, different key: ignored as unknown (name and ID must both match).
    _, impostor = generate_key("example.com/a")
    with pytest.raises(NoteError):
        open_note(signed, [new_verifier(impostor)])
    for bad in (
        "hello\n— example.com/a AAAA\n",  # no blank line
        "hello\n\n— example.com/a AAAAAAA=",  # no final newline
        "hel\x01lo\n" + signed[6:],  # control character
        "hello\n\n- example.com/a QUFBQUFB\n",  # not an em dash
        "hello\n\n— example.com/a QUFB\n",  # signature too short
    ):
        with pytest.raises(NoteError):
            open_note(bad, [new_verifier(vkey)])
    tampered = signed.replace("hello", "jello")
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(tampered, [new_verifier(vkey)])
    assert open_note(signed + sign("hello\n", new_signer(other_skey)).split("\n\n")[1],
                     [new_verifier(vkey), new_verifier(other_vkey)]).sigs[1].name == "example.com/b"


def test_bad_keys() -> None:
    for bad in (
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong ID
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+!!!",
    ):
        with pytest.raises(InvalidInput):
            new_verifier(bad)
    with pytest.raises(InvalidInput):
        new_signer(GO_VKEY)
    with pytest.raises(InvalidInput):
        sign("no newline", new_signer(GO_SKEY))


def test_parse_note_keeps_all_lines() -> None:
    text, sigs = parse_note(REAL_CHECKPOINT)
    assert text.count("\n") == 3
    assert len(sigs) == 6

"""Ed25519 verification through libsodium (strongroom.crypto.ed25519).

* RFC 8032 section 7.1's test vectors verify, and refuse any changed byte;
* Wycheproof's 151 Ed25519 vectors (vendored, Apache-2.0, in
  ``vectors/ed25519/``) are accepted and refused exactly as expected, by
  libsodium and by the OpenSSL fallback alike;
* for random keys and messages libsodium agrees with ``cryptography`` on
  genuine signatures, and refuses every mutated signature or message;
* where the two differ, libsodium is the stricter one: a small-order or
  non-canonically encoded public key, whose "signatures" hold for every message
  under OpenSSL, is refused;
* the two call sites (the worker's RFC 9421 check, the agent's release
  evidence) verify through it, and refuse a forged request or evidence.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.access.evidence import GrantEvidence
from strongroom.crypto import ed25519
from strongroom.crypto.dsse import key_id
from strongroom.crypto.ed25519 import SodiumEd25519PublicKey, public_key
from strongroom.errors import AccessDenied, WeakPublicKey
from strongroom.release.request import (
    ReleaseRequest,
    UsedNonces,
    VerifiedEvidence,
    sign_release_evidence,
)
from strongroom.server.errors import Unauthenticated
from strongroom.server.signatures import Caller, MemoryNonceCache, RequestVerifier, sign_request

VECTORS = Path(__file__).parent / "vectors" / "ed25519" / "wycheproof_ed25519_test.json"

# RFC 8032, section 7.1: TEST 1, 2, 3 (secret key, public key, message, signature; hex).
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
     "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
     "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290"
     "ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]

_P = 2**255 - 19
_IDENTITY = (1).to_bytes(32, "little")


def _openssl(raw: bytes) -> SodiumEd25519PublicKey:
    """The same key on the fallback path (as without PyNaCl)."""
    return SodiumEd25519PublicKey(Ed25519PublicKey.from_public_bytes(raw), None)


def _verifies(key: Ed25519PublicKey, sig: bytes, msg: bytes) -> bool:
    try:
        key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


def test_pynacl_is_installed_and_verifies() -> None:
    """PyNaCl is a required dependency: a missing one would silently double the CPU."""
    assert ed25519.BACKEND == "libsodium"
    assert public_key(bytes.fromhex(RFC8032[0][1]))._sodium is not None


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032,
                         ids=["test1", "test2", "test3"])
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    raw, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert sk.public_key().public_bytes_raw() == raw and sk.sign(msg) == sig
    for key in (public_key(raw), _openssl(raw)):
        key.verify(sig, msg)
        for i in range(len(sig)):
            bad = bytearray(sig)
            bad[i] ^= 0x01
            assert not _verifies(key, bytes(bad), msg), i
        assert not _verifies(key, sig, msg + b"\x00")
        assert not _verifies(key, sig[:-1], msg) and not _verifies(key, sig + b"\x00", msg)


def _wycheproof() -> list[tuple[int, str, bytes, bytes, bytes, bool]]:
    data = json.loads(VECTORS.read_text())
    cases = [(t["tcId"], ",".join(t["flags"]), bytes.fromhex(g["pk"]), bytes.fromhex(t["msg"]),
              bytes.fromhex(t["sig"]), t["result"] == "valid")
             for g in data["testGroups"] for t in g["tests"]]
    assert len(cases) == data["numberOfTests"] == 151
    return cases


def test_wycheproof_vectors_libsodium_and_fallback() -> None:
    cases = _wycheproof()
    assert {valid for *_, valid in cases} == {True, False}
    wrong = []
    for tc, flags, pk, msg, sig, valid in cases:
        for name, key in (("libsodium", public_key(pk)), ("openssl", _openssl(pk))):
            if _verifies(key, sig, msg) is not valid:
                wrong.append((tc, flags, name, valid))
    assert wrong == []


def _sodium(raw: bytes) -> SodiumEd25519PublicKey:
    """The key verifying through libsodium, past :func:`public_key`'s own check of it."""
    return SodiumEd25519PublicKey(Ed25519PublicKey.from_public_bytes(raw), ed25519._SODIUM)


def test_libsodium_refuses_small_order_and_noncanonical_keys_openssl_accepts() -> None:
    """R = identity, S = 0 "verifies" every message under a small-order key in OpenSSL.

    :func:`public_key` refuses such keys before any verify (tests/crypto/test_ed25519_keys.py);
    libsodium's verify refuses them too, should one get past.
    """
    forged = _IDENTITY + bytes(32)
    order_two = (_P - 1).to_bytes(32, "little")  # (0, -1)
    noncanonical = (_P + 1).to_bytes(32, "little")  # the identity, y encoded as p + 1
    for raw in (_IDENTITY, order_two, noncanonical):
        with pytest.raises(WeakPublicKey):
            public_key(raw)
        assert not _verifies(_sodium(raw), forged, b"release everything"), raw.hex()
        assert not _verifies(_sodium(raw), forged, b""), raw.hex()
    # The looser answer libsodium does not give (documents why stricter is right here).
    assert _verifies(_openssl(_IDENTITY), forged, b"release everything")
    assert _verifies(_openssl(noncanonical), forged, b"release everything")


@settings(max_examples=150, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=600),
       where=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255),
       extra=st.binary(min_size=1, max_size=8))
def test_agrees_with_cryptography_and_refuses_mutations(seed: bytes, msg: bytes, where: int,
                                                         flip: int, extra: bytes) -> None:
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    openssl = sk.public_key()
    key = public_key(openssl.public_bytes_raw())
    sig = sk.sign(msg)
    assert _verifies(key, sig, msg) and _verifies(openssl, sig, msg)
    bad_sig = bytearray(sig)
    bad_sig[where % len(sig)] ^= flip
    assert not _verifies(key, bytes(bad_sig), msg)
    assert _verifies(openssl, bytes(bad_sig), msg) is False
    if msg:
        bad_msg = bytearray(msg)
        bad_msg[where % len(msg)] ^= flip
        assert not _verifies(key, sig, bytes(bad_msg))
    assert not _verifies(key, sig, msg + extra)
    assert not _verifies(key, sig + extra, msg) and not _verifies(key, sig[:-1], msg)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert not _verifies(public_key(other), sig, msg)


def test_buffers_and_the_key_interface() -> None:
    sk = Ed25519PrivateKey.generate()
    openssl = sk.public_key()
    raw = openssl.public_bytes_raw()
    key = public_key(raw)
    sig = sk.sign(b"message")
    key.verify(bytearray(sig), memoryview(b"message"))
    key.verify(signature=sig, data=b"message")  # http-message-signatures passes keywords
    assert isinstance(key, Ed25519PublicKey)
    assert key.public_bytes_raw() == raw
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_bytes(*der) == openssl.public_bytes(*der)
    assert key == openssl and openssl == key and key == public_key(raw)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert hash(key) == hash(public_key(raw)) and key != public_key(other)
    assert raw.hex() in repr(key)


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33)])
def test_malformed_key_is_a_value_error_as_before(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Ed25519PublicKey.from_public_bytes(raw)
    with pytest.raises(ValueError):
        public_key(raw)


def test_fallback_without_pynacl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PyNaCl the loader answers None and keys verify through OpenSSL (same answers)."""
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)
    assert ed25519._load_libsodium() is None
    monkeypatch.setattr(ed25519, "_SODIUM", None)
    sk = Ed25519PrivateKey.generate()
    key = public_key(sk.public_key().public_bytes_raw())
    assert key._sodium is None
    key.verify(sk.sign(b"m"), b"m")
    assert not _verifies(key, sk.sign(b"m"), b"n")
    assert not _verifies(key, sk.sign(b"m")[:-1], b"m")


# -- the two call sites ------------------------------------------------------------------

def test_the_worker_request_check_verifies_through_libsodium() -> None:
    sk = Ed25519PrivateKey.generate()
    kid = key_id(sk.public_key())
    caller = Caller(kid, "alice", sk.public_key())
    assert isinstance(caller.verifier, SodiumEd25519PublicKey) and caller.verifier is caller.verifier
    for fast in (True, False):
        verifier = RequestVerifier(lambda _k: caller, MemoryNonceCache(), fast_path=fast)
        headers = sign_request(sk, "POST", "/v1/release", b"{}")
        assert verifier.verify("POST", "/v1/release", list(headers.items()), b"{}") is caller
        forged = dict(sign_request(sk, "POST", "/v1/release", b"{}"))
        label, _, value = forged["Signature"].partition("=:")
        flipped = bytearray(base64.b64decode(value.rstrip(":")))
        flipped[3] ^= 0x01
        forged["Signature"] = label + "=:" + base64.b64encode(flipped).decode() + ":"
        with pytest.raises(Unauthenticated):
            verifier.verify("POST", "/v1/release", list(forged.items()), b"{}")


def test_the_agent_release_evidence_verifies_through_libsodium() -> None:
    sk = Ed25519PrivateKey.generate()
    raw = sk.public_key().public_bytes_raw()
    now = time.time()
    gate: Any = GrantEvidence.__new__(GrantEvidence)  # only the evidence signature step
    gate._keys, gate.nonces, gate._verified = {}, UsedNonces(), VerifiedEvidence()
    env = sign_release_evidence(sk, artifact="a", shard="s", blob_id="b" * 64,
                                purpose="inference", now=now)
    request = ReleaseRequest("alice", raw, "a", "s", "b" * 64, 1, "inference", env)
    public, kid = gate._principal_key(raw, request.obj)
    assert isinstance(public, SodiumEd25519PublicKey) and gate._principal_key(raw, "x")[0] is public
    nonce, _ = gate._check_release(env, public, kid, request, now)
    assert len(nonce) >= 16
    statement = json.loads(env)
    sig = bytearray(base64.b64decode(statement["signatures"][0]["sig"]))
    sig[5] ^= 0x01
    statement["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    with pytest.raises(AccessDenied, match="does not verify"):
        gate._check_release(json.dumps(statement), public, kid, request, now)

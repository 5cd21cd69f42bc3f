"""The canonical-shape fast path of RequestVerifier agrees with http-message-signatures.

The fast path builds the RFC 9421 signature base itself for requests in
sign_request's exact shape. These tests sign random requests, tamper with them
in the ways an attacker or another client might, and check that the fast path
and the package (``fast_path=False``) reach the same outcome: the same caller
and digest, or the same exception type and message. Where the fast path
applies, its signature base must equal the package's byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, algorithms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.crypto.dsse import key_id
from strongroom.errors import StrongroomError
from strongroom.server import signatures as sigmod
from strongroom.server.errors import Unauthenticated
from strongroom.server.signatures import (
    Caller,
    MemoryNonceCache,
    RequestVerifier,
    sign_request,
)

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY.public_key())
OTHER = Ed25519PrivateKey.generate()
OTHER_KID = key_id(OTHER.public_key())
CALLERS = {KID: Caller(KID, "alice", KEY.public_key()),
           OTHER_KID: Caller(OTHER_KID, "bob", OTHER.public_key())}
Fields = list[tuple[str, str]]


def _lookup(kid: str) -> Caller:
    if kid not in CALLERS:
        raise Unauthenticated(f"key {kid} is not enrolled", obj=kid)
    return CALLERS[kid]


def _outcome(fast: bool, method: str, target: str, fields: Fields, now: float) -> tuple[Any, ...]:
    verifier = RequestVerifier(_lookup, MemoryNonceCache(), clock=lambda: now, fast_path=fast)
    try:
        caller, digest = verifier.verify_headers(method, target, fields)
    except StrongroomError as exc:
        return ("refused", type(exc), str(exc))
    return ("ok", caller.key_id, digest)


def _library_base(method: str, target: str, fields: Fields) -> bytes:
    """The signature base the package builds for the (single) Signature-Input member."""
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=None)
    value = next(v for k, v in fields if k.lower() == "signature-input")
    member = verifier._parse_signature_dictionary(value)["sr"]
    base, _, _ = verifier._build_signature_base(
        sigmod._Message(method, target, fields), covered_component_ids=list(member),
        signature_params=member.params)
    return str(base).encode()


def _assert_agree(method: str, target: str, fields: Fields, now: float) -> tuple[Any, ...]:
    canonical = sigmod._canonical_request(method, target, fields)
    if canonical is not None:
        assert canonical.base == _library_base(method, target, fields)
    fast = _outcome(True, method, target, fields, now)
    slow = _outcome(False, method, target, fields, now)
    assert fast == slow
    return fast


# -- tampering ---------------------------------------------------------------------------


def _set(fields: Fields, name: str, fn: Callable[[str], str]) -> Fields:
    return [(k, fn(v) if k.lower() == name else v) for k, v in fields]


def _flip_signature(value: str) -> str:
    raw = bytearray(base64.b64decode(value[4:-1]))
    raw[len(raw) // 2] ^= 0x01
    return "sr=:" + base64.b64encode(bytes(raw)).decode() + ":"


def _noncanonical_b64(value: str) -> str:
    # 64 bytes -> 86 chars + "==": the last data char carries 4 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    b64 = value[4:-1]
    return "sr=:" + b64[:85] + alphabet[alphabet.index(b64[85]) | 1] + "==:"


def _swap_params(value: str) -> str:
    head, *params = value.split(";")
    return ";".join([head, *params[1:], params[0]])


def _other_digest(value: str) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(b"other").digest()).decode() + ":"


TAMPERS: dict[str, Callable[[str, str, Fields], tuple[str, str, Fields]]] = {
    "none": lambda m, t, f: (m, t, f),
    "flip-signature": lambda m, t, f: (m, t, _set(f, "signature", _flip_signature)),
    "noncanonical-b64": lambda m, t, f: (m, t, _set(f, "signature", _noncanonical_b64)),
    "short-signature": lambda m, t, f: (m, t, _set(f, "signature", lambda v: v[:-6] + "==:")),
    "other-digest": lambda m, t, f: (m, t, _set(f, "content-digest", _other_digest)),
    "digest-sha512-too": lambda m, t, f: (m, t, _set(f, "content-digest",
                                                    lambda v: "sha-512=:AAAA:, " + v)),
    "method": lambda m, t, f: ("PUT" if m.upper() != "PUT" else "GET", t, f),
    "method-lower": lambda m, t, f: (m.lower(), t, f),
    "path": lambda m, t, f: (m, "/v2" + t, f),
    "path-escape-case": lambda m, t, f: (m, t.replace("%2F", "%2f") if "%2F" in t
                                         else t.replace("%2f", "%2F") if "%2f" in t
                                         else t + "%41", f),
    "query-added": lambda m, t, f: (m, t + ("&x=1" if "?" in t else "?x=1"), f),
    "query-dropped": lambda m, t, f: (m, t.partition("?")[0], f),
    "query-emptied": lambda m, t, f: (m, t.partition("?")[0] + "?", f),
    "fragment": lambda m, t, f: (m, t + "#frag", f),
    "bad-target": lambda m, t, f: (m, t + "/ü sp", f),
    "no-slash": lambda m, t, f: (m, t.lstrip("/"), f),
    "swap-params": lambda m, t, f: (m, t, _set(f, "signature-input", _swap_params)),
    "ws-after-semicolon": lambda m, t, f: (m, t, _set(f, "signature-input",
                                                      lambda v: v.replace(";", "; "))),
    "ws-in-list": lambda m, t, f: (m, t, _set(f, "signature-input",
                                              lambda v: v.replace("(", "( ").replace(" ", "  "))),
    "ws-around-value": lambda m, t, f: (m, t, _set(f, "signature", lambda v: " " + v + "\t")),
    "ws-around-digest": lambda m, t, f: (m, t, _set(f, "content-digest", lambda v: v + " ")),
    "leading-zero-created": lambda m, t, f: (m, t, _set(f, "signature-input",
                                                        lambda v: v.replace("created=", "created=0"))),
    "label": lambda m, t, f: (m, t, _set(_set(f, "signature", lambda v: "sig1" + v[2:]),
                                       "signature-input", lambda v: "sig1" + v[2:])),
    "extra-signature": lambda m, t, f: (m, t, _set(_set(
        f, "signature", lambda v: v + ", x" + v), "signature-input", lambda v: v + ", x" + v)),
    "dup-signature-input": lambda m, t, f: (m, t, [*f, *[p for p in f
                                                         if p[0] == "Signature-Input"]]),
    "dup-signature": lambda m, t, f: (m, t, [*f, *[p for p in f if p[0] == "Signature"]]),
    "dup-digest": lambda m, t, f: (m, t, [*f, *[p for p in f if p[0] == "Content-Digest"]]),
    "names-upper": lambda m, t, f: (m, t, [(k.upper(), v) for k, v in f]),
    "unknown-key": lambda m, t, f: (m, t, _set(f, "signature-input",
                                               lambda v: v.replace(KID, "00112233aabbccdd"))),
    "other-key": lambda m, t, f: (m, t, _set(f, "signature-input",
                                             lambda v: v.replace(KID, OTHER_KID))),
    "alg": lambda m, t, f: (m, t, _set(f, "signature-input",
                                       lambda v: v.replace('"ed25519"', '"hmac-sha256"'))),
    "tag": lambda m, t, f: (m, t, _set(f, "signature-input",
                                       lambda v: v.replace('"strongroom"', '"other"'))),
    "expires": lambda m, t, f: (m, t, _set(f, "signature-input",
                                           lambda v: v + ";expires=99999999999")),
    "escaped-nonce": lambda m, t, f: (m, t, _set(f, "signature-input",
                                                 lambda v: v.replace('nonce="', 'nonce="\\"'))),
    "no-digest": lambda m, t, f: (m, t, [p for p in f if p[0] != "Content-Digest"]),
}

_UNRESERVED = "abcXYZ019-._~!$&'()*+,;=:@"
_segment = st.lists(st.one_of(st.sampled_from(list(_UNRESERVED)),
                              st.sampled_from(["%2F", "%2f", "%20", "%41", "%e2%82%ac", "/"])),
                    max_size=8).map("".join)
_query = st.one_of(st.none(), st.just(""),
                   st.lists(st.one_of(st.sampled_from(list(_UNRESERVED + "/?")),
                                      st.sampled_from(["%20", "%3D", "&", "="])),
                            min_size=1, max_size=10).map("".join))
_target = st.builds(lambda s, q: "/v1/" + s + ("" if q is None else "?" + q), _segment, _query)
_method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "post", "Patch"])
_nonce = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{10,140}", fullmatch=True),
                   st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                           min_size=16, max_size=40))
# Seconds from now; none within a second of the package's wall-clock limits (+5, -65).
_offset = st.sampled_from([-1000, -70, -66, -63, -61, -60, -59, -30, 0, 3, 4, 7, 100])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=_method, target=_target, body=st.binary(max_size=64), offset=_offset,
       nonce=_nonce, tamper=st.sampled_from(sorted(TAMPERS)))
def test_fast_path_agrees_with_the_package(method: str, target: str, body: bytes, offset: int,
                                           nonce: str | None, tamper: str) -> None:
    now = time.time()
    headers = sign_request(KEY, method, target, body, created=now + offset, nonce=nonce)
    m, t, f = TAMPERS[tamper](method, target, list(headers.items()))
    outcome = _assert_agree(m, t, f, now)
    if outcome[0] == "ok":
        assert outcome[2] == hashlib.sha256(body).digest()


@settings(max_examples=150, deadline=None)
@given(method=_method, target=_target, body=st.binary(max_size=32),
       nonce=st.from_regex(r"[A-Za-z0-9_-]{16,128}", fullmatch=True))
def test_canonical_requests_take_the_fast_path_and_pass(method: str, target: str, body: bytes,
                                                        nonce: str) -> None:
    now = time.time()
    fields = list(sign_request(KEY, method, target, body, created=now, nonce=nonce).items())
    assert sigmod._canonical_request(method, target, fields) is not None
    assert _assert_agree(method, target, fields, now) == (
        "ok", KID, hashlib.sha256(body).digest())


def _library_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("the package was called")

    monkeypatch.setattr(HTTPMessageVerifier, "verify", boom)


def test_canonical_request_never_calls_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _library_fails(monkeypatch)
    verifier = RequestVerifier(_lookup, MemoryNonceCache())
    for target in ("/v1/x", "/v1/x?", "/v1/a%2Fb?q=%20&r=1"):
        h = sign_request(KEY, "POST", target, b"{}")
        assert verifier.verify("POST", target, h.items(), b"{}").name == "alice"
        with pytest.raises(Unauthenticated, match="replayed nonce"):
            verifier.verify("POST", target, h.items(), b"{}")
    bad = sign_request(KEY, "POST", "/v1/x", b"{}")
    bad["Signature"] = _flip_signature(bad["Signature"])
    with pytest.raises(Unauthenticated, match=r"does not verify \(wrong key, or the request"):
        verifier.verify("POST", "/v1/x", bad.items(), b"{}")


def test_noncanonical_but_valid_requests_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another RFC 9421 client: its own label, parameter order and Content-Digest.
    message = sigmod._Message("POST", "/v1/x?a=1", {})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                               key_resolver=sigmod._StaticKey(KID, KEY))
    signer.sign(message, key_id=KID, nonce="n" * 20, label="client", tag="strongroom",
                covered_component_ids=["content-digest", "@query", "@path", "@method"],
                body=b"{}")
    spaced = sign_request(KEY, "POST", "/v1/x", b"{}")
    spaced["Signature-Input"] = spaced["Signature-Input"].replace(";", "; ")
    cases = [("/v1/x?a=1", message.headers.items()), ("/v1/x", list(spaced.items()))]
    for target, fields in cases:
        assert sigmod._canonical_request("POST", target, list(fields)) is None
        assert RequestVerifier(_lookup, MemoryNonceCache()).verify(
            "POST", target, fields, b"{}").name == "alice"
    _library_fails(monkeypatch)
    with pytest.raises(AssertionError, match="package was called"):
        RequestVerifier(_lookup, MemoryNonceCache()).verify("POST", "/v1/x", spaced.items(),
                                                             b"{}")


def test_unknown_key_raises_the_lookup_error_on_both_paths() -> None:
    h = sign_request(OTHER, "POST", "/v1/x", b"")
    for fast in (True, False):
        with pytest.raises(Unauthenticated, match="is not enrolled"):
            RequestVerifier(lambda k: _lookup("nobody"), MemoryNonceCache(),
                            fast_path=fast).verify("POST", "/v1/x", h.items(), b"")


def _raises_key_error(kid: str) -> Caller:
    raise KeyError(kid)


@pytest.mark.parametrize("lookup", [
    _raises_key_error,                                          # wrapped by the package
    lambda kid: None,                                           # no caller at all
    lambda kid: Caller(kid, "pem", KEY.public_key().public_bytes_raw()),  # type: ignore[arg-type]
    lambda kid: Caller(kid, "eve", OTHER.public_key()),         # the wrong key
])
def test_odd_key_lookups_give_the_same_outcome(lookup: Callable[[str], Caller]) -> None:
    now = time.time()
    h = sign_request(KEY, "POST", "/v1/x", b"", created=now)
    outcomes: list[tuple[Any, ...]] = []
    for fast in (True, False):
        verifier = RequestVerifier(lookup, MemoryNonceCache(), clock=lambda: now, fast_path=fast)
        try:
            verifier.verify_headers("POST", "/v1/x", list(h.items()))
            outcomes.append(("ok",))
        except StrongroomError as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is Unauthenticated


@pytest.mark.slow
def test_benchmark_fast_path_against_the_package() -> None:
    """Prints microseconds per RequestVerifier.verify call; asserts nothing about speed."""
    caller = CALLERS[KID]
    n = 5000
    signed = [sign_request(KEY, "POST", "/v1/access/requests?x=1", b"{}") for _ in range(n)]
    for fast in (True, False):
        verifier = RequestVerifier(lambda _k: caller, MemoryNonceCache(), fast_path=fast)
        start = time.perf_counter()
        for h in signed:
            verifier.verify("POST", "/v1/access/requests?x=1", list(h.items()), b"{}")
        per_call = (time.perf_counter() - start) / n * 1e6
        print(f"{'fast path' if fast else 'package  '}: {per_call:.1f} us per verify")


@pytest.mark.parametrize("target", ["@evil.example/v1/whoami", ":443/v1/whoami",
                                    "/v1/whoami#frag"])
def test_a_target_that_is_not_a_plain_path_is_refused(target: str) -> None:
    """The package parses the target as a URL; a signature for /v1/whoami must not carry over."""
    key = Ed25519PrivateKey.generate()
    headers = sign_request(key, "GET", "/v1/whoami")
    caller = Caller(key_id(key.public_key()), "alice", key.public_key())
    verifier = RequestVerifier(lambda kid: caller, MemoryNonceCache())
    with pytest.raises(Unauthenticated, match="must be a path starting with /"):
        verifier.verify("GET", target, list(headers.items()), b"")

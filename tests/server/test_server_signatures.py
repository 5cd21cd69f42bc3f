"""RFC 9421 signing and verification, and the nonce caches, without the app."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto.dsse import key_id
from strongroom.server.errors import DigestMismatch, Unauthenticated, status_for
from strongroom.server.nonce_table import SharedNonceTable
from strongroom.server.signatures import Caller, MemoryNonceCache, RequestVerifier, sign_request

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY.public_key())


def _lookup(kid: str) -> Caller:
    if kid != KID:
        raise Unauthenticated(f"key {kid} is not enrolled", obj=kid)
    return Caller(KID, "alice", KEY.public_key())


def _verifier(nonces: object | None = None, clock: float | None = None) -> RequestVerifier:
    return RequestVerifier(_lookup, nonces or MemoryNonceCache(),  # type: ignore[arg-type]
                           clock=(lambda: clock) if clock is not None else time.time)


def test_signature_covers_method_path_query_and_digest() -> None:
    h = sign_request(KEY, "POST", "/v1/x?a=1&b=2", b"{}")
    assert h["Content-Digest"].startswith("sha-256=:")
    inp = h["Signature-Input"]
    assert inp.startswith('sr=("@method" "@path" "@query" "content-digest")')
    for param in ("created=", f'keyid="{KID}"', 'alg="ed25519"', "nonce=", 'tag="strongroom"'):
        assert param in inp
    assert _verifier().verify("POST", "/v1/x?a=1&b=2", h.items(), b"{}").name == "alice"


@pytest.mark.parametrize(("method", "target", "body", "words"), [
    ("GET", "/v1/x?a=1", b"{}", "does not verify"),          # method changed
    ("POST", "/v1/y?a=1", b"{}", "does not verify"),         # path changed
    ("POST", "/v1/x?a=2", b"{}", "does not verify"),         # query changed
    ("POST", "/v1/x?a=1", b"{ }", "Content-Digest"),         # body changed
])
def test_any_change_is_refused(method: str, target: str, body: bytes, words: str) -> None:
    h = sign_request(KEY, "POST", "/v1/x?a=1", b"{}")
    with pytest.raises((Unauthenticated, DigestMismatch), match=words):
        _verifier().verify(method, target, h.items(), body)


def test_query_added_after_signing_is_refused() -> None:
    h = sign_request(KEY, "GET", "/v1/x")
    with pytest.raises(Unauthenticated, match="@query"):
        _verifier().verify("GET", "/v1/x?admin=1", h.items(), b"")


def test_digest_mismatch_maps_to_400_and_unsigned_to_401() -> None:
    h = sign_request(KEY, "POST", "/v1/x", b"a")
    with pytest.raises(DigestMismatch) as exc:
        _verifier().verify("POST", "/v1/x", h.items(), b"b")
    assert status_for(exc.value) == 400
    with pytest.raises(Unauthenticated, match="not signed") as exc2:
        _verifier().verify("POST", "/v1/x", [], b"b")
    assert status_for(exc2.value) == 401


def test_window_and_skew() -> None:
    now = time.time()
    old = sign_request(KEY, "GET", "/v1/x", created=now - 61)
    with pytest.raises(Unauthenticated, match="expired"):
        _verifier(clock=now).verify("GET", "/v1/x", old.items(), b"")
    ok = sign_request(KEY, "GET", "/v1/x", created=now - 50)
    _verifier(clock=now).verify("GET", "/v1/x", ok.items(), b"")
    future = sign_request(KEY, "GET", "/v1/x", created=now + 30)
    with pytest.raises(Unauthenticated, match="not yet valid"):
        _verifier(clock=now).verify("GET", "/v1/x", future.items(), b"")


def test_unknown_key_is_refused_with_the_lookup_message() -> None:
    other = Ed25519PrivateKey.generate()
    h = sign_request(other, "GET", "/v1/x")
    with pytest.raises(Unauthenticated, match="not enrolled"):
        _verifier().verify("GET", "/v1/x", h.items(), b"")


def test_short_nonce_is_refused() -> None:
    h = sign_request(KEY, "GET", "/v1/x", nonce="abc")
    with pytest.raises(Unauthenticated, match="nonce"):
        _verifier().verify("GET", "/v1/x", h.items(), b"")


def test_replay_refused_in_memory_and_across_processes(tmp_path: Path) -> None:
    h = sign_request(KEY, "GET", "/v1/x")
    mem = _verifier()
    mem.verify("GET", "/v1/x", h.items(), b"")
    with pytest.raises(Unauthenticated, match="replayed"):
        mem.verify("GET", "/v1/x", h.items(), b"")
    # two workers: two caches on one file
    worker1 = _verifier(SharedNonceTable(tmp_path / "n.map"))
    worker2 = _verifier(SharedNonceTable(tmp_path / "n.map"))
    h2 = sign_request(KEY, "GET", "/v1/x")
    worker1.verify("GET", "/v1/x", h2.items(), b"")
    with pytest.raises(Unauthenticated, match="replayed"):
        worker2.verify("GET", "/v1/x", h2.items(), b"")
    assert (tmp_path / "n.map").stat().st_mode & 0o077 == 0


def test_expired_nonces_are_forgotten(tmp_path: Path) -> None:
    cache = SharedNonceTable(tmp_path / "n.map")
    assert cache.spend("k", "n" * 20, expires=100.0, now=50.0)
    assert not cache.spend("k", "n" * 20, expires=100.0, now=60.0)
    assert cache.spend("k", "n" * 20, expires=300.0, now=200.0)
    mem = MemoryNonceCache()
    assert mem.spend("k", "x", 100.0, 50.0) and not mem.spend("k", "x", 100.0, 60.0)
    assert mem.spend("k", "x", 300.0, 200.0)

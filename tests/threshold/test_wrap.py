"""Threshold wrapping of file keys: k verified partials open a key; fewer, forged or replayed ones do not."""

from __future__ import annotations

import hashlib
import os

import pytest

from strongroom.errors import AccessDenied, IntegrityError, InvalidInput
from strongroom.threshold.dleq import Proof
from strongroom.threshold.group import ORDER, Element, base_mult, random_scalar
from strongroom.threshold.shares import KeyShare, combine, deal
from strongroom.threshold.wrap import (
    Combiner,
    Partial,
    Wrapped,
    binding,
    partial_decrypt,
    unwrap,
    wrap_file_key,
)

BOUND = binding("vault-1", "minilm@1", "model.safetensors", "blob-7")


def _servers(k: int = 2, n: int = 3) -> dict[int, KeyShare]:
    indices = list(range(1, n + 1))
    dealings = [deal(random_scalar(), threshold=k, indices=indices, dealer=d) for d in indices]
    return {i: combine([d.for_index(i) for d in dealings]) for i in indices}


def _digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _release(servers: dict[int, KeyShare], wrapped: Wrapped, answering: list[int], digest: bytes) -> bytearray:
    some = next(iter(servers.values()))
    combiner = Combiner(some.commitments, digest, [wrapped.u])
    for i in answering:
        combiner.add(partial_decrypt(servers[i], digest, [wrapped.u]))
    return unwrap(wrapped, combiner.shared_points()[0], some.public_key, BOUND, what="minilm@1/model.safetensors")


@pytest.mark.parametrize("key_len", [16, 32])
def test_any_two_of_three_release_the_file_key(key_len: int) -> None:
    servers = _servers()
    file_key = os.urandom(key_len)
    wrapped = wrap_file_key(servers[1].public_key, file_key, BOUND)
    assert Wrapped.decode(wrapped.encode()) == wrapped
    for pair in ([1, 2], [1, 3], [2, 3], [3, 1, 2]):
        assert bytes(_release(servers, wrapped, pair, _digest(f"req{pair}"))) == file_key


def test_k_minus_one_partials_are_refused() -> None:
    servers = _servers()
    wrapped = wrap_file_key(servers[1].public_key, os.urandom(32), BOUND)
    with pytest.raises(AccessDenied, match="1 of the 2 key servers"):
        _release(servers, wrapped, [2], _digest("r"))


def test_partial_from_the_wrong_server_is_refused_and_named() -> None:
    servers = _servers()
    wrapped = wrap_file_key(servers[1].public_key, os.urandom(32), BOUND)
    digest = _digest("r")
    honest = partial_decrypt(servers[2], digest, [wrapped.u])
    # server 2's answer presented as server 3's
    relabelled = Partial(3, honest.request_digest, honest.points, honest.proof)
    combiner = Combiner(servers[1].commitments, digest, [wrapped.u])
    with pytest.raises(IntegrityError, match="keyserver-c"):
        combiner.add(relabelled, server="keyserver-c")
    # a server outside the group (its own share, not of this key)
    stranger = KeyShare(2, random_scalar(), servers[2].commitments)
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(partial_decrypt(stranger, digest, [wrapped.u]))
    assert not combiner.ready


def test_forged_point_or_proof_is_refused() -> None:
    servers = _servers()
    wrapped = wrap_file_key(servers[1].public_key, os.urandom(32), BOUND)
    digest = _digest("r")
    good = partial_decrypt(servers[1], digest, [wrapped.u])
    combiner = Combiner(servers[1].commitments, digest, [wrapped.u])
    forged_point = Partial(1, digest, (good.points[0] + base_mult(1),), good.proof)
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(forged_point)
    forged_proof = Partial(1, digest, good.points, Proof(good.proof.c, (good.proof.s + 1) % ORDER))
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(forged_proof)
    combiner.add(good)
    with pytest.raises(IntegrityError, match="same key server"):
        combiner.add(good)


def test_partial_replayed_for_another_request_is_refused() -> None:
    servers = _servers()
    wrapped = wrap_file_key(servers[1].public_key, os.urandom(32), BOUND)
    old = partial_decrypt(servers[1], _digest("alice, yesterday"), [wrapped.u])
    new_digest = _digest("mallory, today")
    combiner = Combiner(servers[1].commitments, new_digest, [wrapped.u])
    with pytest.raises(IntegrityError, match="different release request"):
        combiner.add(old)
    # relabelling the digest does not help: the proof is bound to the request it was made for
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(Partial(old.index, new_digest, old.points, old.proof))


def test_binding_and_header_are_authenticated() -> None:
    servers = _servers()
    file_key = os.urandom(32)
    wrapped = wrap_file_key(servers[1].public_key, file_key, BOUND)
    digest = _digest("r")
    combiner = Combiner(servers[1].commitments, digest, [wrapped.u])
    for i in (1, 2):
        combiner.add(partial_decrypt(servers[i], digest, [wrapped.u]))
    shared = combiner.shared_points()[0]
    other = binding("vault-1", "minilm@1", "model.safetensors", "blob-8")
    with pytest.raises(IntegrityError, match="does not open"):
        unwrap(wrapped, shared, servers[1].public_key, other, what="blob-8")
    flipped = Wrapped(wrapped.u, bytes([wrapped.sealed[0] ^ 1]) + wrapped.sealed[1:])
    with pytest.raises(IntegrityError, match="does not open"):
        unwrap(flipped, shared, servers[1].public_key, BOUND, what="blob-7")
    assert bytes(unwrap(wrapped, shared, servers[1].public_key, BOUND, what="blob-7")) == file_key


def test_batched_partial_covers_many_blobs() -> None:
    servers = _servers(3, 5)
    keys = [os.urandom(32) for _ in range(5)]
    bounds = [binding("v", "a@1", f"s{i}", f"b{i}") for i in range(5)]
    wrapped = [wrap_file_key(servers[1].public_key, k, b) for k, b in zip(keys, bounds, strict=True)]
    us = [w.u for w in wrapped]
    digest = _digest("batch")
    combiner = Combiner(servers[1].commitments, digest, us)
    for i in (5, 2, 4):
        combiner.add(partial_decrypt(servers[i], digest, us))
    for w, s, b, k in zip(wrapped, combiner.shared_points(), bounds, keys, strict=True):
        assert bytes(unwrap(w, s, servers[1].public_key, b, what="b")) == k
    with pytest.raises(IntegrityError, match="covers 1 blobs"):
        Combiner(servers[1].commitments, digest, us).add(partial_decrypt(servers[1], digest, us[:1]))


def test_malformed_inputs_are_named() -> None:
    with pytest.raises(InvalidInput, match="malformed partial"):
        Partial.decode({"index": 0, "points": [], "request": "", "proof": ""}, what="keyserver-b")
    with pytest.raises(InvalidInput, match="malformed partial"):
        Partial.decode("nonsense", what="keyserver-b")
    with pytest.raises(InvalidInput, match="64 or 80 bytes"):
        Wrapped.decode(bytes(10))
    with pytest.raises(InvalidInput, match="file key is 16 or 32"):
        wrap_file_key(base_mult(5), bytes(20), BOUND)
    with pytest.raises(InvalidInput, match="single-line"):
        binding("v", "a\nb", "s", "b")
    good = partial_decrypt(_servers()[1], _digest("x"), [base_mult(3)])
    assert Partial.decode(good.encode()) == good
    assert isinstance(good.points[0], Element)

"""Threshold wrapping of file keys: k verified partials open a key; fewer, forged or replayed ones do not."""

from __future__ import annotations

import hashlib
import os

import pytest

from strongroom.errors import AccessDenied, IntegrityError, InvalidInput
from strongroom.threshold.dleq import (
    Proof,
    generate_proof,
    prove_single,
    verify_proof,
    verify_single,
)
from strongroom.threshold.group import GENERATOR, ORDER, Element, base_mult, random_scalar
from strongroom.threshold.shares import KeyShare, combine, deal
from strongroom.threshold.wrap import (
    Combiner,
    Partial,
    Wrapped,
    binding,
    partial_decrypt,
    proof_context,
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


def test_single_blob_proof_is_plain_chaum_pedersen_bound_to_request_and_server() -> None:
    share = _servers()[2]
    u = base_mult(random_scalar())
    d = u.mult(share.value)
    ctx = proof_context(_digest("req"), share.index)
    proof = prove_single(share.value, share.own_public_share, u, d, ctx)
    verify_single(share.own_public_share, u, d, proof, ctx)
    replayed = proof_context(_digest("other req"), share.index)
    other_slot = proof_context(_digest("req"), 3)
    bad = [
        (share.own_public_share, u, d, proof, replayed),  # the proof of another request
        (share.own_public_share, u, d, proof, other_slot),  # relabelled as another server's
        (base_mult(random_scalar()), u, d, proof, ctx),  # another server's public share
        (share.own_public_share, u, d + base_mult(1), proof, ctx),  # altered partial
        (share.own_public_share, u, u.mult(share.value + 1), proof, ctx),  # wrong share used
        (share.own_public_share, u, d, Proof(proof.c, (proof.s + 1) % ORDER), ctx),
    ]
    for args in bad:
        with pytest.raises(IntegrityError, match="does not verify"):
            verify_single(*args[:4], args[4])
    # a prover without the share cannot answer: a proof made with a wrong k for the true D fails
    forged = prove_single(share.value + 1, share.own_public_share, u, d, ctx)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_single(share.own_public_share, u, d, forged, ctx)


def test_proof_forms_are_domain_separated() -> None:
    """A batched RFC 9497 proof for one blob is refused where the single form is expected,
    and the other way round."""
    servers = _servers()
    share = servers[1]
    u = base_mult(random_scalar())
    d = u.mult(share.value)
    digest = _digest("req")
    ctx = proof_context(digest, share.index)
    batched = generate_proof(share.value, GENERATOR, share.own_public_share, [u], [d], ctx)
    verify_proof(GENERATOR, share.own_public_share, [u], [d], batched, ctx)  # valid in its own form
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_single(share.own_public_share, u, d, batched, ctx)
    single = prove_single(share.value, share.own_public_share, u, d, ctx)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_proof(GENERATOR, share.own_public_share, [u], [d], single, ctx)
    # the requester expects the single form for one blob: a batched proof is refused and named
    combiner = Combiner(share.commitments, digest, [u])
    with pytest.raises(IntegrityError, match="does not verify") as exc:
        combiner.add(Partial(share.index, digest, (d,), batched), server="keyserver-a")
    assert "keyserver-a" in str(exc.value)
    combiner.add(partial_decrypt(share, digest, [u]))
    assert combiner.count == 1

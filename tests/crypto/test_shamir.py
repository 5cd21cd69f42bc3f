"""Shamir secret sharing over GF(256): field arithmetic, split/combine, encoding, commitments."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.crypto import shamir
from strongroom.crypto.shamir import Share, combine, commit, gf_inv, gf_mul, split, verify_share
from strongroom.errors import InvalidInput


def _slow_mul(a: int, b: int) -> int:
    """Reference GF(256) multiply: shift-and-add with reduction by 0x11b."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return product


# --- field arithmetic -------------------------------------------------------


def test_gf_mul_known_answer() -> None:
    # FIPS-197 section 4.2: {57} • {83} = {c1}; {57} • {13} = {fe}
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE
    assert gf_mul(0x57, 0x02) == 0xAE
    assert gf_mul(0, 0x83) == 0 and gf_mul(0x83, 0) == 0
    assert gf_mul(1, 0xAB) == 0xAB


def test_mul_table_matches_reference_for_all_pairs() -> None:
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == _slow_mul(a, b), (a, b)


def test_inverse_correct_for_all_nonzero() -> None:
    inverses = [gf_inv(a) for a in range(1, 256)]
    for a, inv in zip(range(1, 256), inverses, strict=True):
        assert gf_mul(a, inv) == 1, a
    assert sorted(inverses) == list(range(1, 256))  # a permutation
    assert gf_inv(0x53) == 0xCA  # FIPS-197 section 4.4 example


def test_inverse_of_zero_refused() -> None:
    with pytest.raises(InvalidInput):
        gf_inv(0)


# --- split / combine --------------------------------------------------------


@st.composite
def _split_case(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    secret = draw(st.binary(min_size=1, max_size=96))
    n = draw(st.integers(min_value=2, max_value=12))
    k = draw(st.integers(min_value=2, max_value=n))
    subset = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=n, unique=True))
    return secret, k, n, subset


@settings(max_examples=300, deadline=None)
@given(_split_case())
def test_any_threshold_subset_reconstructs(case: tuple[bytes, int, int, list[int]]) -> None:
    secret, k, n, subset = case
    shares = split(secret, k, n)
    assert [s.x for s in shares] == list(range(1, n + 1))
    assert all(len(s.y) == len(secret) for s in shares)
    chosen = [shares[i] for i in subset]
    assert combine(chosen, threshold=k) == secret
    assert combine(chosen) == secret
    assert combine(list(reversed(chosen)), threshold=k) == secret


@settings(max_examples=200, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=64),
    n=st.integers(min_value=3, max_value=10),
    data=st.data(),
)
def test_fewer_than_threshold_does_not_reconstruct(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    k = data.draw(st.integers(min_value=3, max_value=n))
    shares = split(secret, k, n)
    subset = data.draw(
        st.lists(st.sampled_from(shares), min_size=k - 1, max_size=k - 1, unique=True)
    )
    # k-1 shares interpolate a polynomial of lower degree: its value at 0 is uniform,
    # so it equals a 16+ byte secret with probability 2**-128.
    assert combine(subset) != secret
    with pytest.raises(InvalidInput, match="need at least"):
        combine(subset, threshold=k)


def test_exhaustive_subsets_small_split() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, 6)
    for size in range(3, 7):
        for subset in itertools.combinations(shares, size):
            assert combine(subset, threshold=3) == secret
    for subset in itertools.combinations(shares, 2):
        assert combine(subset) != secret


def test_max_sizes() -> None:
    secret = os.urandom(shamir.MAX_SECRET_LEN)
    shares = split(secret, 255, 255)
    assert combine(shares, threshold=255) == secret
    shares = split(b"\x00", 2, 255)
    assert combine(random.sample(shares, 2)) == b"\x00"


def test_split_is_randomised() -> None:
    secret = bytes(32)
    first, second = split(secret, 2, 3), split(secret, 2, 3)
    assert first[0].y != second[0].y
    assert all(s.y != secret for s in first)  # zero secret still yields random-looking shares


def test_split_accepts_bytearray_and_memoryview() -> None:
    secret = bytearray(os.urandom(24))
    assert combine(split(secret, 2, 2)) == bytes(secret)
    assert combine(split(memoryview(secret), 2, 3)[1:]) == bytes(secret)


@pytest.mark.parametrize(
    ("secret", "k", "n"),
    [
        (b"", 2, 3),
        (bytes(shamir.MAX_SECRET_LEN + 1), 2, 3),
        (b"k", 1, 3),
        (b"k", 4, 3),
        (b"k", 2, 256),
        (b"k", True, 3),
        (b"k", 2.0, 3),
    ],
)
def test_split_rejects_bad_parameters(secret: bytes, k: int, n: int) -> None:
    with pytest.raises(InvalidInput):
        split(secret, k, n)


def test_combine_rejects_duplicate_x() -> None:
    shares = split(os.urandom(16), 2, 3)
    with pytest.raises(InvalidInput, match="x=2 given twice"):
        combine([shares[1], shares[0], shares[1]])
    # a forged share with the same x but different y is still a duplicate
    with pytest.raises(InvalidInput, match="x=1 given twice"):
        combine([shares[0], Share(1, os.urandom(16))])


def test_combine_rejects_mismatched_lengths() -> None:
    a = split(os.urandom(16), 2, 3)
    b = split(os.urandom(17), 2, 3)
    with pytest.raises(InvalidInput, match="same split"):
        combine([a[0], b[1]])


def test_combine_rejects_too_few_and_bad_threshold() -> None:
    shares = split(os.urandom(16), 2, 3)
    with pytest.raises(InvalidInput, match="need at least 2"):
        combine(shares[:1])
    with pytest.raises(InvalidInput):
        combine([])
    with pytest.raises(InvalidInput, match="need at least 3"):
        combine(shares[:2], threshold=3)
    with pytest.raises(InvalidInput, match="threshold"):
        combine(shares, threshold=1)


def test_x_zero_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"1\.\.255"):
        Share(0, b"abc")
    with pytest.raises(InvalidInput):
        Share(256, b"abc")
    with pytest.raises(InvalidInput):
        Share(True, b"abc")
    # even when smuggled past the constructor, combine refuses it
    shares = split(os.urandom(16), 2, 2)
    forged = Share(1, shares[0].y)
    object.__setattr__(forged, "x", 0)
    with pytest.raises(InvalidInput, match="x = 0"):
        combine([forged, shares[1]])


def test_share_y_validated() -> None:
    with pytest.raises(InvalidInput):
        Share(1, b"")
    with pytest.raises(InvalidInput):
        Share(1, bytearray(b"abc"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Share(1, bytes(shamir.MAX_SECRET_LEN + 1))


def test_share_repr_hides_y() -> None:
    share = Share(7, b"\xaa" * 16)
    assert "aa" not in repr(share).lower() and "7" in repr(share)


# --- encoding ---------------------------------------------------------------


@given(x=st.integers(1, 255), y=st.binary(min_size=1, max_size=shamir.MAX_SECRET_LEN))
def test_share_encoding_round_trip(x: int, y: bytes) -> None:
    share = Share(x, y)
    encoded = share.to_bytes()
    assert encoded[0] == 1 and encoded[1] == x and len(encoded) == 4 + len(y)
    assert Share.from_bytes(encoded) == share


def test_share_encoding_known_answer() -> None:
    assert Share(5, b"\x01\x02\x03").to_bytes() == bytes.fromhex("01050003010203")


@pytest.mark.parametrize(
    "encoded",
    [
        b"",
        bytes.fromhex("010500"),
        bytes.fromhex("0105000301"),  # truncated
        bytes.fromhex("010500030102030405"),  # trailing bytes
        bytes.fromhex("02050003010203"),  # unknown version
        bytes.fromhex("01000003010203"),  # x = 0
        bytes.fromhex("01050000"),  # empty y
    ],
)
def test_share_decoding_rejects_malformed(encoded: bytes) -> None:
    with pytest.raises(InvalidInput):
        Share.from_bytes(encoded)


def test_round_trip_through_encoding() -> None:
    secret = os.urandom(32)
    blobs = [s.to_bytes() for s in split(secret, 3, 5)]
    assert combine([Share.from_bytes(b) for b in blobs[1:4]], threshold=3) == secret


# --- commitments ------------------------------------------------------------


def test_commitments_verify_own_share_only() -> None:
    shares = split(os.urandom(32), 3, 5)
    commitments = commit(shares)
    assert len(commitments) == 5 and len(set(commitments)) == 5
    assert all(len(c) == 64 and int(c, 16) >= 0 for c in commitments)
    for i, share in enumerate(shares):
        for j, commitment in enumerate(commitments):
            assert verify_share(share, commitment) is (i == j)
    assert verify_share(shares[0], commitments[0].upper())


def test_commitment_binds_x_and_y() -> None:
    share = split(os.urandom(32), 2, 3)[0]
    commitment = commit([share])[0]
    flipped = bytearray(share.y)
    flipped[0] ^= 1
    assert not verify_share(Share(share.x, bytes(flipped)), commitment)
    assert not verify_share(Share(share.x + 1, share.y), commitment)


def test_commitment_known_answer() -> None:
    import hashlib

    share = Share(3, bytes(range(16)))
    expected = hashlib.sha256(
        b"strongroom/shamir/share-commitment/v1\x00" + b"\x03" + b"\x00\x10" + bytes(range(16))
    ).hexdigest()
    assert commit([share]) == [expected]


def test_verify_share_tolerates_garbage_commitments() -> None:
    share = split(os.urandom(32), 2, 2)[0]
    for bad in ["", "zz", "é" * 64, "0" * 64]:
        assert verify_share(share, bad) is False
    assert verify_share(share, None) is False  # type: ignore[arg-type]


def test_commit_refuses_short_shares() -> None:
    shares = split(os.urandom(15), 2, 3)
    with pytest.raises(InvalidInput, match="brute-forced"):
        commit(shares)

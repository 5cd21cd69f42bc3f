"""Feldman VSS, distributed key generation and re-sharing: properties over random parameters."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.threshold.group import ORDER, base_mult, random_scalar
from strongroom.threshold.shares import (
    DealtShare,
    KeyShare,
    combine,
    combine_reshare,
    deal,
    recover,
    reshare,
    verify_share,
)


@st.composite
def _k_of_n(draw: st.DrawFn) -> tuple[int, list[int]]:
    n = draw(st.integers(min_value=1, max_value=7))
    k = draw(st.integers(min_value=1, max_value=n))
    indices = draw(st.lists(st.integers(min_value=1, max_value=255), min_size=n, max_size=n, unique=True))
    return k, indices


@settings(max_examples=40, deadline=None)
@given(_k_of_n(), st.integers(min_value=0, max_value=ORDER - 1), st.randoms(use_true_random=False))
def test_any_k_shares_recover_and_fewer_do_not(
    kn: tuple[int, list[int]], secret: int, rnd: random.Random
) -> None:
    k, indices = kn
    dealing = deal(secret, threshold=k, indices=indices)
    subset = rnd.sample(indices, k)
    assert recover({i: dealing.values[i] for i in subset}) == secret
    for i in indices:
        verify_share(i, dealing.values[i], dealing.commitments)
    if k > 1:
        # k-1 shares interpolate a different constant (except with probability 1/ORDER)
        fewer = subset[: k - 1]
        assert recover({i: dealing.values[i] for i in fewer}) != secret


def test_distributed_key_generation_nobody_holds_the_key() -> None:
    indices = [1, 2, 3]
    secrets_ = [random_scalar() for _ in indices]
    dealings = [deal(s, threshold=2, indices=indices, dealer=d) for d, s in zip(indices, secrets_, strict=True)]
    held = {i: combine([d.for_index(i) for d in dealings]) for i in indices}
    group_secret = sum(secrets_) % ORDER
    for share in held.values():
        assert share.public_key == base_mult(group_secret)
        assert share.threshold == 2
        assert share.public_share(share.index) == base_mult(share.value)
    for a, b in itertools.combinations(indices, 2):
        assert recover({a: held[a].value, b: held[b].value}) == group_secret


def test_dkg_refuses_a_bad_piece_and_names_the_dealer() -> None:
    dealings = [deal(random_scalar(), threshold=2, indices=[1, 2, 3], dealer=d) for d in (1, 2, 3)]
    pieces = [d.for_index(2) for d in dealings]
    bad = DealtShare(3, 2, (pieces[2].value + 1) % ORDER, pieces[2].commitments)
    with pytest.raises(IntegrityError, match="dealing of 3"):
        combine([pieces[0], pieces[1], bad])


def _dkg(k: int, indices: list[int]) -> dict[int, KeyShare]:
    dealings = [deal(random_scalar(), threshold=k, indices=indices, dealer=d) for d in indices]
    return {i: combine([d.for_index(i) for d in dealings]) for i in indices}


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=5))
def test_resharing_keeps_the_group_key(old_k: int, new_k: int) -> None:
    old = _dkg(old_k, list(range(1, old_k + 2)))
    group_key = old[1].public_key
    secret = recover({i: old[i].value for i in list(old)[:old_k]})
    new_indices = list(range(1, new_k + 2))
    dealers = list(old.values())[-old_k:]
    dealings = [reshare(s, threshold=new_k, indices=new_indices) for s in dealers]
    new = {j: combine_reshare([d.for_index(j) for d in dealings], old[1].commitments) for j in new_indices}
    for share in new.values():
        assert share.public_key == group_key
        assert share.threshold == new_k
    assert recover({j: new[j].value for j in new_indices[:new_k]}) == secret
    if old_k > 1 or new_k > 1:
        # the new shares are not the old ones: a share stolen before the refresh is stale
        assert any(new[i].value != old[i].value for i in old if i in new)


def test_resharing_refuses_a_server_that_deals_something_else() -> None:
    old = _dkg(2, [1, 2, 3])
    liar = KeyShare(2, random_scalar(), old[2].commitments)
    dealings = [reshare(old[1], threshold=2, indices=[1, 2, 3, 4]), reshare(liar, threshold=2, indices=[1, 2, 3, 4])]
    with pytest.raises(IntegrityError, match="key server 2 re-shared"):
        combine_reshare([d.for_index(4) for d in dealings], old[1].commitments)
    with pytest.raises(InvalidInput, match="2 needed"):
        combine_reshare([dealings[0].for_index(4)], old[1].commitments)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(InvalidInput, match="threshold 4"):
        deal(1, threshold=4, indices=[1, 2, 3])
    with pytest.raises(InvalidInput, match="repeat"):
        deal(1, threshold=1, indices=[1, 1])
    with pytest.raises(InvalidInput, match="outside"):
        deal(1, threshold=1, indices=[0])
    share = _dkg(2, [1, 2])[1]
    assert str(share.value) not in repr(share)

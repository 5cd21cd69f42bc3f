"""RFC 9162 tree hashing and proofs: the transparency-dev vectors and a naive model."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    InvalidProof,
    NodeKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# Leaves of transparency-dev/merkle testonly/constants.go and their roots.
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243",
                                      "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _vectors(conformance_dir: Path, kind: str) -> list[Path]:
    files = sorted((conformance_dir / "merkle" / kind).rglob("*.json"))
    assert files, f"no {kind} vectors found"
    return files


def test_vector_count(conformance_dir: Path) -> None:
    total = len(_vectors(conformance_dir, "inclusion")) + len(_vectors(conformance_dir, "consistency"))
    assert total == 196


def test_inclusion_vectors(conformance_dir: Path) -> None:
    for path in _vectors(conformance_dir, "inclusion"):
        v = json.loads(path.read_text())
        proof = [_b64(h) for h in v["proof"] or []]
        try:
            verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"]))
            failed = False
        except InvalidProof:
            failed = True
        assert failed == v["wantErr"], f"{path}: {v['desc']}"


def test_consistency_vectors(conformance_dir: Path) -> None:
    for path in _vectors(conformance_dir, "consistency"):
        v = json.loads(path.read_text())
        proof = [_b64(h) for h in v["proof"] or []]
        try:
            verify_consistency(v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
            failed = False
        except InvalidProof:
            failed = True
        assert failed == v["wantErr"], f"{path}: {v['desc']}"


def test_known_roots() -> None:
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    hashes = [leaf_hash(x) for x in LEAVES]
    for n in range(1, 9):
        assert root_of(hashes[:n]).hex() == ROOTS[n - 1]


# --- a naive model: RFC 9162 section 2.1 written out recursively -------------


def naive_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(naive_mth(leaves[:k]), naive_mth(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


def _lookup_for(leaves: list[bytes]):  # type: ignore[no-untyped-def]
    def lookup(keys: list[NodeKey]) -> dict[NodeKey, bytes]:
        return {(lv, i): naive_mth(leaves[i << lv:(i + 1) << lv]) for lv, i in keys}
    return lookup


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_inclusion_matches_naive(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, _lookup_for(leaves))
    assert proof == naive_path(index, leaves)
    root = naive_mth(leaves)
    verify_inclusion(index, n, leaf_hash(leaves[index]), proof, root)
    with pytest.raises(InvalidProof):
        verify_inclusion(index, n, leaf_hash(leaves[index] + b"x"), proof, root)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_consistency_matches_naive(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    old = data.draw(st.integers(1, n))
    proof = consistency_proof(old, n, _lookup_for(leaves))
    assert proof == naive_subproof(old, leaves, True)
    verify_consistency(old, n, proof, naive_mth(leaves[:old]), naive_mth(leaves))
    if old < n:
        forked = [*leaves[: old - 1], leaves[old - 1] + b"fork"]
        with pytest.raises(InvalidProof):
            verify_consistency(old, n, proof, naive_mth(forked), naive_mth(leaves))


@settings(max_examples=100, deadline=None)
@given(leaves=st.lists(st.binary(max_size=4), max_size=70))
def test_frontier_matches_naive(leaves: list[bytes]) -> None:
    frontier = Frontier()
    nodes: dict[NodeKey, bytes] = {}
    for i, leaf in enumerate(leaves):
        nodes[(0, i)] = leaf_hash(leaf)
        for level, index, h in frontier.append(leaf_hash(leaf)):
            nodes[(level, index)] = h
    assert frontier.root() == naive_mth(leaves)
    # Every perfect subtree is produced, exactly as the naive hash says.
    for (level, index), h in nodes.items():
        assert h == naive_mth(leaves[index << level:(index + 1) << level])
    expected = sum(len(leaves) >> lv for lv in range(len(leaves).bit_length()))
    assert len(nodes) == expected
    again = Frontier.from_hashes(len(leaves), [nodes[k] for k in perfect_subtrees(0, len(leaves))])
    assert again.root() == frontier.root()


def test_consistency_from_zero_rejected() -> None:
    with pytest.raises(InvalidProof):
        verify_consistency(0, 1, [], EMPTY_ROOT, leaf_hash(b""))
    with pytest.raises(InvalidProof):
        inclusion_proof(3, 3, _lookup_for([b"a", b"b", b"c"]))

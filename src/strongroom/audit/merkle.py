"""RFC 9162 Merkle trees: hashing, inclusion and consistency proofs.

Hashes are SHA-256 with the RFC 9162 domain separation (``0x00`` before a
leaf, ``0x01`` before two child hashes), so a leaf can never pose as a node.

Verifying (what an outsider does, with nothing but a trusted root)::

    verify_inclusion(index, size, leaf_hash(entry), proof, root)    # raises InvalidProof
    verify_consistency(old_size, new_size, proof, old_root, new_root)

Generating proofs needs the stored tree. Every *perfect* subtree (``2**level``
leaves starting at ``index * 2**level``) is addressed as a :data:`NodeKey`
``(level, index)``; the proof functions take a ``lookup`` that returns the
hashes of a list of keys, so a store can answer all of them in one query::

    keys = inclusion_nodes(index, size)           # O(log n) keys
    proof = inclusion_proof(index, size, lookup)  # lookup(keys) -> {key: hash}

:class:`Frontier` is the compact range of a growing tree (one hash per set bit
of its size): appending a leaf returns the perfect nodes it completes, which
is what an append-only store writes.

The verification algorithms follow transparency-dev/merkle (the Go reference);
as there, a consistency proof from size 0 is rejected (it proves nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from strongroom.errors import InvalidProof

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "InvalidProof",
    "NodeKey",
    "consistency_nodes",
    "consistency_proof",
    "inclusion_nodes",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: A perfect subtree: ``(level, index)`` covers leaves ``[index << level, (index + 1) << level)``.
NodeKey = tuple[int, int]
Lookup = Callable[[Sequence[NodeKey]], dict[NodeKey, bytes]]

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree over ``leaf_hashes`` (in order), computed in O(n)."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


def perfect_subtrees(start: int, end: int) -> list[NodeKey]:
    """The perfect subtrees, left to right, that the range ``[start, end)`` splits into.

    ``start`` must be a multiple of the first subtree's width, which holds for
    every range the RFC 9162 recursion produces (``[0, n)`` and its right parts).
    """
    keys: list[NodeKey] = []
    while start < end:
        width = end - start
        level = width.bit_length() - 1
        # Shrink until the subtree is aligned at ``start``.
        while start & ((1 << level) - 1):
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


class Frontier:
    """The compact range ``[0, size)`` of a tree: one perfect-subtree hash per set bit.

    ``Frontier.from_hashes(size, hashes)`` rebuilds one from the hashes of
    ``perfect_subtrees(0, size)``.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        # Perfect subtree hashes from the left: strictly decreasing levels.
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """A frontier for a tree of ``size`` leaves from its perfect-subtree hashes."""
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of size {size} has {bin(size).count('1')} frontier hashes")
        f = cls()
        f.size = size
        f._hashes = list(hashes)
        return f

    def copy(self) -> Frontier:
        """An independent copy."""
        return Frontier.from_hashes(self.size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the interior nodes ``(level, index, hash)`` it completes."""
        index = self.size
        self.size += 1
        hashes = self._hashes
        h = leaf
        made: list[tuple[int, int, bytes]] = []
        level = 0
        # Each trailing one bit of the old size is a subtree that now has a sibling.
        while index & 1:
            h = _sha256(NODE_PREFIX + hashes.pop() + h).digest()
            level += 1
            index >>= 1
            made.append((level, index, h))
        hashes.append(h)
        return made

    def extend(self, bodies: Sequence[bytes]) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
        """Append the leaves of entry ``bodies``: their leaf hashes and the nodes they complete
        (:meth:`append` of each ``leaf_hash(body)``, in order)."""
        leaves = [_sha256(LEAF_PREFIX + body).digest() for body in bodies]
        made: list[tuple[int, int, bytes]] = []
        for h in leaves:
            made += self.append(h)
        return leaves, made

    def root(self) -> bytes:
        """The tree's root hash (``EMPTY_ROOT`` for an empty tree)."""
        if not self._hashes:
            return EMPTY_ROOT
        hashes = self._hashes
        h = hashes[-1]
        for i in range(len(hashes) - 2, -1, -1):
            h = _sha256(NODE_PREFIX + hashes[i] + h).digest()
        return h


# --- proof generation ---------------------------------------------------------


def _range_hash(start: int, end: int, nodes: dict[NodeKey, bytes]) -> bytes:
    keys = perfect_subtrees(start, end)
    h = nodes[keys[-1]]
    for key in reversed(keys[:-1]):
        h = node_hash(nodes[key], h)
    return h


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The sibling ranges of RFC 9162 PATH(index, D[0:size]), from the leaf upwards."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(old: int, size: int) -> list[tuple[int, int]]:
    """The ranges of RFC 9162 SUBPROOF(old, D[0:size], true), from the bottom upwards."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    complete = True
    m = old
    while True:
        n = end - start
        if m == n:
            if not complete:
                ranges.append((start, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    ranges.reverse()
    return ranges


def _check_sizes(index: int, size: int, what: str) -> None:
    if not 0 <= index < size:
        raise InvalidProof(f"{what} {index} is not inside a tree of size {size}")


def _keys_for(ranges: Iterable[tuple[int, int]]) -> list[NodeKey]:
    seen: dict[NodeKey, None] = {}
    for start, end in ranges:
        for key in perfect_subtrees(start, end):
            seen[key] = None
    return list(seen)


def inclusion_nodes(index: int, size: int) -> list[NodeKey]:
    """The perfect-subtree hashes an inclusion proof for ``index`` in ``size`` needs."""
    _check_sizes(index, size, "leaf index")
    return _keys_for(_inclusion_ranges(index, size))


def inclusion_proof(index: int, size: int, lookup: Lookup) -> list[bytes]:
    """RFC 9162 inclusion proof for leaf ``index`` in the tree of ``size`` leaves."""
    ranges = _inclusion_ranges(index, size) if 0 <= index < size else []
    _check_sizes(index, size, "leaf index")
    nodes = lookup(_keys_for(ranges))
    return [_range_hash(start, end, nodes) for start, end in ranges]


def consistency_nodes(old: int, size: int) -> list[NodeKey]:
    """The perfect-subtree hashes a consistency proof from ``old`` to ``size`` needs."""
    if not 0 < old <= size:
        raise InvalidProof(f"no consistency proof from size {old} to size {size}")
    return _keys_for(_consistency_ranges(old, size))


def consistency_proof(old: int, size: int, lookup: Lookup) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of ``old`` leaves to the one of ``size``."""
    keys = consistency_nodes(old, size)
    nodes = lookup(keys)
    return [_range_hash(start, end, nodes) for start, end in _consistency_ranges(old, size)]


# --- verification -------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidProof(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _decompose(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` in a tree of ``size``."""
    _check_sizes(index, size, "leaf index")
    _check_hash(leaf, "leaf hash")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise InvalidProof(f"inclusion proof has {len(proof)} hashes, expected {inner + border}")
    h = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(h, proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` with ``root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise InvalidProof(
            f"inclusion proof for leaf {index} does not lead to the root of tree size {size}"
        )


def root_from_consistency_proof(
    old: int, size: int, proof: Sequence[bytes], old_root: bytes
) -> bytes:
    """The root of the ``size`` tree that ``proof`` implies, after checking ``old_root``."""
    if size < old:
        raise InvalidProof(f"new size {size} is smaller than old size {old}")
    if old == 0:
        raise InvalidProof("a consistency proof from an empty tree proves nothing")
    if old == size:
        if proof:
            raise InvalidProof("consistency proof between equal sizes must be empty")
        return old_root
    if not proof:
        raise InvalidProof(f"empty consistency proof from size {old} to {size}")
    inner, border = _decompose(old - 1, size)
    shift = ((old & -old).bit_length()) - 1
    inner -= shift
    if old == 1 << shift:
        seed, rest = old_root, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        expected = inner + border + (0 if old == 1 << shift else 1)
        raise InvalidProof(f"consistency proof has {len(proof)} hashes, expected {expected}")
    mask = (old - 1) >> shift
    h1 = _chain_inner_right(seed, rest[:inner], mask)
    h1 = _chain_border_right(h1, rest[inner:])
    if h1 != old_root:
        raise InvalidProof(f"consistency proof does not lead to the old root of size {old}")
    h2 = _chain_inner(seed, rest[:inner], mask)
    return _chain_border_right(h2, rest[inner:])


def verify_consistency(
    old: int, size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree ``(size, new_root)`` extends the tree ``(old, old_root)``."""
    if root_from_consistency_proof(old, size, proof, old_root) != new_root:
        raise InvalidProof(
            f"tree of size {size} is not an extension of the tree of size {old}: roots diverge"
        )

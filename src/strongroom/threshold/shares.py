"""Verifiable k-of-n sharing of a ristretto255 scalar: Feldman VSS, Lagrange, DKG, re-sharing.

The group key of threshold release is a scalar ``s`` no single key server
holds. Each key server ``i`` (index 1..255) holds ``sᵢ = f(i)`` for a polynomial
``f`` of degree ``k-1`` with ``f(0) = s``; everyone holds the Feldman
commitments ``Cⱼ = aⱼ·G`` to its coefficients, from which the public share
``Xᵢ = sᵢ·G`` of every server and the group key ``Y = s·G`` follow. This is
RFC 9591's ``secret_share_shard`` / ``vss_commit`` / ``vss_verify`` /
``derive_interpolating_value``, checked against its ristretto255 vectors.

How the key comes to be shared (say which in the runbook, ``docs/threshold.md``):

* **distributed key generation** (:func:`deal` by every server, :func:`combine`
  of the dealings each receives): the key is the sum of the dealers' secrets,
  and no party ever holds it — the default;
* **re-sharing** (:func:`reshare` by any k current servers, :func:`combine_reshare`
  by each new server): moves the same key to a new set of servers or a new
  threshold, so file keys wrapped to ``Y`` stay valid; a share refresh is a
  re-sharing to the same set.

Use it like this::

    dealings = [deal(random_scalar(), k=2, indices=[1, 2, 3]) for _ in range(3)]
    mine = combine([d.for_index(2) for d in dealings])       # verifies each piece
    mine.public_key                                          # the group key Y
    recover({1: s1, 3: s3}) == s                             # only in tests and ceremonies

Shares never appear in errors, reprs or logs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.threshold.group import (
    IDENTITY,
    ORDER,
    Element,
    Scalar,
    base_mult,
    random_scalar,
)

__all__ = [
    "MAX_INDEX",
    "Dealing",
    "DealtShare",
    "KeyShare",
    "combine",
    "combine_reshare",
    "commit",
    "deal",
    "evaluate_polynomial",
    "lagrange_at_zero",
    "public_share",
    "recover",
    "reshare",
    "verify_share",
]

#: Highest server index: indices are small positive integers, named once per deployment.
MAX_INDEX = 255


def _check_indices(indices: Iterable[int], *, what: str) -> list[int]:
    out = list(indices)
    if len(set(out)) != len(out):
        raise InvalidInput("key server indices repeat", obj=what, remedy="give each key server its own index")
    for i in out:
        if not 1 <= i <= MAX_INDEX:
            raise InvalidInput(f"key server index {i} is outside 1..{MAX_INDEX}", obj=what,
                               remedy="number key servers from 1")
    return out


def evaluate_polynomial(x: int, coefficients: Sequence[Scalar]) -> Scalar:
    """``f(x)`` by Horner's rule (RFC 9591 ``polynomial_evaluate``); ``coefficients[0] = f(0)``."""
    value = 0
    for coeff in reversed(coefficients):
        value = (value * x + coeff) % ORDER
    return value


def lagrange_at_zero(indices: Sequence[int], i: int) -> Scalar:
    """The Lagrange coefficient of index ``i`` at 0 over ``indices`` (RFC 9591 ``derive_interpolating_value``)."""
    checked = _check_indices(indices, what="Lagrange interpolation")
    if i not in checked:
        raise InvalidInput(f"index {i} is not among the interpolation points", obj="Lagrange interpolation",
                           remedy="interpolate over the indices of the shares you hold")
    num, den = 1, 1
    for j in checked:
        if j != i:
            num = num * j % ORDER
            den = den * (j - i) % ORDER
    return num * pow(den, -1, ORDER) % ORDER


def recover(shares: Mapping[int, Scalar]) -> Scalar:
    """The secret ``f(0)`` from exactly the shares given (RFC 9591 ``secret_share_combine``).

    Only tests and re-sharing ceremonies combine scalars; a release combines
    partial decryptions instead (:mod:`strongroom.threshold.wrap`).
    """
    indices = list(shares)
    return sum(shares[i] * lagrange_at_zero(indices, i) for i in indices) % ORDER


def commit(coefficients: Sequence[Scalar]) -> tuple[Element, ...]:
    """Feldman commitments ``aⱼ·G`` to a polynomial's coefficients (RFC 9591 ``vss_commit``)."""
    return tuple(base_mult(a) for a in coefficients)


def public_share(index: int, commitments: Sequence[Element]) -> Element:
    """``Xᵢ = Σ iʲ·Cⱼ``: index ``i``'s public share, from the commitments alone."""
    _check_indices([index], what="public share")
    return _public_share(index, tuple(commitments))


@functools.lru_cache(maxsize=1024)
def _public_share(index: int, commitments: tuple[Element, ...]) -> Element:
    # public data only; every partial a requester verifies needs it, k scalar multiplications each
    total = IDENTITY
    power = 1
    for c in commitments:
        total = total + c.mult(power)
        power = power * index % ORDER
    return total


def verify_share(index: int, share: Scalar, commitments: Sequence[Element], *, what: str = "key share") -> None:
    """RFC 9591 ``vss_verify``: ``sᵢ·G == Xᵢ``; IntegrityError naming ``what`` otherwise."""
    if base_mult(share) != public_share(index, commitments):
        raise IntegrityError(
            f"share for index {index} does not match the dealer's commitments",
            obj=what,
            remedy="refuse this dealing and name its dealer at the ceremony; do not use the share",
        )


@dataclass(frozen=True)
class DealtShare:
    """One dealer's piece for one recipient: the recipient's index, the value, the dealer's commitments."""

    dealer: int
    index: int
    value: Scalar = field(repr=False)
    commitments: tuple[Element, ...]


@dataclass(frozen=True)
class Dealing:
    """A dealer's polynomial, shared: a value per recipient index and the public commitments."""

    dealer: int
    threshold: int
    values: Mapping[int, Scalar] = field(repr=False)
    commitments: tuple[Element, ...]

    def for_index(self, index: int) -> DealtShare:
        """The piece for recipient ``index`` (send it to that server only, encrypted)."""
        if index not in self.values:
            raise InvalidInput(f"no share was dealt to index {index}", obj=f"dealing of {self.dealer}",
                               remedy="deal to every key server of the new set")
        return DealtShare(self.dealer, index, self.values[index], self.commitments)


def deal(
    secret: Scalar,
    *,
    threshold: int,
    indices: Sequence[int],
    dealer: int = 0,
    coefficients: Sequence[Scalar] | None = None,
) -> Dealing:
    """Share ``secret`` k-of-n to ``indices`` with Feldman commitments (RFC 9591 ``secret_share_shard``).

    ``coefficients`` (``a₁..a_{k-1}``) are random unless given, which only the
    conformance tests do.
    """
    checked = _check_indices(indices, what="dealing")
    if not 1 <= threshold <= len(checked):
        raise InvalidInput(f"threshold {threshold} is not between 1 and {len(checked)} servers", obj="dealing",
                           remedy="choose k with 1 <= k <= n")
    rest = [random_scalar() for _ in range(threshold - 1)] if coefficients is None else list(coefficients)
    if len(rest) != threshold - 1:
        raise InvalidInput(f"{threshold - 1} coefficients needed, got {len(rest)}", obj="dealing",
                           remedy="give k-1 coefficients besides the secret")
    poly = [secret % ORDER, *rest]
    values = {i: evaluate_polynomial(i, poly) for i in checked}
    return Dealing(dealer, threshold, values, commit(poly))


@dataclass(frozen=True)
class KeyShare:
    """What one key server holds: its index and share, and the public commitments of the group key."""

    index: int
    value: Scalar = field(repr=False)
    commitments: tuple[Element, ...]

    @property
    def threshold(self) -> int:
        """k: the number of partials a release needs."""
        return len(self.commitments)

    @property
    def public_key(self) -> Element:
        """The group key ``Y = s·G`` (the constant commitment)."""
        return self.commitments[0]

    @functools.cached_property
    def own_public_share(self) -> Element:
        """``sᵢ·G``, this server's public share (computed once)."""
        return base_mult(self.value)

    def public_share(self, index: int) -> Element:
        """Any server's public share, from the commitments."""
        return public_share(index, self.commitments)


def _add_commitments(parts: Sequence[Sequence[Element]], weights: Sequence[Scalar]) -> tuple[Element, ...]:
    width = len(parts[0])
    if any(len(p) != width for p in parts):
        raise InvalidInput("dealings disagree on the threshold", obj="key generation",
                           remedy="every dealer must use the same k")
    out = []
    for j in range(width):
        total = IDENTITY
        for p, w in zip(parts, weights, strict=True):
            total = total + (p[j] if w == 1 else p[j].mult(w))
        out.append(total)
    return tuple(out)


def combine(pieces: Sequence[DealtShare]) -> KeyShare:
    """Distributed key generation, recipient side: verify every dealer's piece, sum them.

    The group key is the sum of the dealers' secrets; no party ever knew it.
    """
    if not pieces:
        raise InvalidInput("no dealings received", obj="key generation", remedy="wait for every dealer")
    index = pieces[0].index
    _check_indices([p.dealer for p in pieces], what="key generation dealers")
    for p in pieces:
        if p.index != index:
            raise InvalidInput("pieces addressed to different indices", obj="key generation",
                               remedy="combine only the pieces dealt to this server")
        verify_share(index, p.value, p.commitments, what=f"dealing of {p.dealer}")
    commitments = _add_commitments([p.commitments for p in pieces], [1] * len(pieces))
    return KeyShare(index, sum(p.value for p in pieces) % ORDER, commitments)


def reshare(share: KeyShare, *, threshold: int, indices: Sequence[int]) -> Dealing:
    """Re-sharing, old-server side: deal this server's own share to the new set.

    The dealing's constant commitment is the server's public share, so new
    servers can check it against the current commitments (:func:`combine_reshare`).
    """
    return deal(share.value, threshold=threshold, indices=indices, dealer=share.index)


def combine_reshare(
    pieces: Sequence[DealtShare], old_commitments: Sequence[Element]
) -> KeyShare:
    """Re-sharing, new-server side: the same group key under a new polynomial.

    Needs pieces from at least k old servers (k = the old threshold); each must
    deal exactly its current share (its constant commitment equals its public
    share under ``old_commitments``). New share ``s'ⱼ = Σ λᵢ·sᵢ→ⱼ``.
    """
    old_k = len(old_commitments)
    if len(pieces) < old_k:
        raise InvalidInput(f"{len(pieces)} re-sharing dealings, {old_k} needed", obj="re-sharing",
                           remedy=f"collect dealings from at least {old_k} current key servers")
    pieces = list(pieces)[:old_k]
    dealers = _check_indices([p.dealer for p in pieces], what="re-sharing dealers")
    index = pieces[0].index
    for p in pieces:
        if p.index != index:
            raise InvalidInput("pieces addressed to different indices", obj="re-sharing",
                               remedy="combine only the pieces dealt to this server")
        if p.commitments[0] != public_share(p.dealer, old_commitments):
            raise IntegrityError(
                f"key server {p.dealer} re-shared something other than its share",
                obj="re-sharing", remedy="refuse its dealing; ask another current key server",
            )
        verify_share(index, p.value, p.commitments, what=f"re-sharing dealing of {p.dealer}")
    weights = [lagrange_at_zero(dealers, d) for d in dealers]
    value = sum(w * p.value for w, p in zip(weights, pieces, strict=True)) % ORDER
    commitments = _add_commitments([p.commitments for p in pieces], weights)
    if commitments[0] != old_commitments[0]:  # cannot happen when every check above passed
        raise IntegrityError("re-sharing changed the group key", obj="re-sharing",
                             remedy="abort the re-sharing; keep the current shares")
    return KeyShare(index, value, commitments)

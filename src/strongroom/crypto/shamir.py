"""Shamir secret sharing over GF(256): split a secret into n shares, any k rebuild it.

How to use it::

    shares = split(root_key, threshold=3, shares=5)    # hand one Share to each custodian
    blobs = [s.to_bytes() for s in shares]             # what a custodian stores
    commitments = commit(shares)                       # publish these (e.g. in the audit log)
    assert verify_share(shares[0], commitments[0])     # a custodian checks their own share
    secret = combine([Share.from_bytes(b) for b in blobs[:3]], threshold=3)

Each byte of the secret is the constant term of its own random polynomial of
degree ``threshold - 1`` over GF(2^8) (AES polynomial x^8+x^4+x^3+x+1, 0x11b);
share ``x`` holds the polynomials' values at ``x`` (1..255). Any ``threshold``
shares determine the polynomials; fewer reveal nothing about the secret
(information-theoretic, provided the coefficients are uniformly random; they
come from ``os.urandom``).

What not to do:

- Do not combine shares from different splits, or let anyone but the custodian
  see more than one share: Shamir has no integrity of its own. ``combine`` of
  wrong, stale or forged shares returns *wrong bytes*, not an error. Check the
  result against something authenticated (an AEAD tag, a key fingerprint), and
  check each share against its published commitment with ``verify_share``.
- Do not treat ``commit``/``verify_share`` as verifiable secret sharing. A hash
  commitment proves a share is the very one the dealer committed to; it does
  not prove that the dealt shares lie on one polynomial, so a dishonest dealer
  goes undetected. That needs Feldman (or Pedersen) VSS, which this module does
  not implement. Commitments hide a share only as well as the share is hard to
  guess, so they are refused for secrets shorter than 16 bytes.
- Do not log a ``Share``: its ``repr`` omits ``y`` on purpose; keep it that way.
- The table lookups are not constant-time with respect to CPU caches. Split and
  combine on a machine where no untrusted code shares the CPU (the custodian's
  workstation, the unseal host).

Secret material this module allocates (coefficients, interpolation buffers) is
held in ``bytearray``/numpy buffers and zeroed before returning; the ``bytes``
it returns and the ``bytes`` it is given are immutable and are the caller's to
manage.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from strongroom.errors import InvalidInput

__all__ = [
    "MAX_SECRET_LEN",
    "MAX_SHARES",
    "MIN_COMMIT_LEN",
    "Share",
    "combine",
    "commit",
    "gf_inv",
    "gf_mul",
    "split",
    "verify_share",
]

#: Longest secret ``split`` accepts, in bytes.
MAX_SECRET_LEN = 1024
#: Most shares one split can produce (x runs over the nonzero field elements).
MAX_SHARES = 255
#: Shortest share ``commit`` accepts: below this a hash commitment can be brute-forced.
MIN_COMMIT_LEN = 16

_POLY = 0x11B
_GENERATOR = 0x03
_SHARE_VERSION = 1
_SHARE_HEADER_LEN = 4  # version, x, len(y) as big-endian u16
_COMMIT_DOMAIN = b"strongroom/shamir/share-commitment/v1\x00"

_U8 = npt.NDArray[np.uint8]


def _build_tables() -> tuple[list[int], list[int], _U8, _U8]:
    """Log/exp tables for generator 3, the full product table and the power table."""
    exp = [0] * 510
    log = [0] * 256
    value = 1
    for i in range(255):
        exp[i] = value
        log[value] = i
        # multiply by the generator 3 = x + 1: value*2 (reduced) xor value
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= _POLY
        value = doubled ^ value
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    exp_np = np.array(exp, dtype=np.uint8)
    log_np = np.array(log, dtype=np.intp)
    mul = exp_np[log_np[:, None] + log_np[None, :]]
    mul[0, :] = 0
    mul[:, 0] = 0
    # pow_table[x, k] = x**k in GF(256); k runs to 254, enough for any threshold
    k = np.arange(255, dtype=np.intp)
    pow_table = exp_np[(log_np[:, None] * k[None, :]) % 255]
    pow_table[0, :] = 0
    pow_table[0, 0] = 1
    for table in (mul, pow_table):
        table.setflags(write=False)
    return exp, log, mul, pow_table


_EXP, _LOG, _MUL, _POW = _build_tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two GF(256) elements (AES field)."""
    return int(_MUL[a, b])


def gf_inv(a: int) -> int:
    """Multiplicative inverse of a nonzero GF(256) element."""
    if not 1 <= a <= 255:
        raise InvalidInput(f"{a} has no inverse in GF(256)", remedy="pass a value in 1..255")
    return _EXP[255 - _LOG[a]]


@dataclass(frozen=True)
class Share:
    """One custodian's share: the x coordinate (1..255) and the polynomial values at x."""

    x: int
    y: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.x, bool) or not isinstance(self.x, int) or not 1 <= self.x <= 255:
            raise InvalidInput(
                f"share x must be an integer in 1..255, got {self.x!r}",
                remedy="x = 0 would be the secret itself; use the shares split() returned",
            )
        if not isinstance(self.y, bytes) or not 1 <= len(self.y) <= MAX_SECRET_LEN:
            raise InvalidInput(
                f"share {self.x}: y must be 1..{MAX_SECRET_LEN} bytes",
                remedy="use the shares split() returned",
            )

    def to_bytes(self) -> bytes:
        """Encode as version (1) ‖ x ‖ len(y) as u16 big-endian ‖ y."""
        return bytes((_SHARE_VERSION, self.x)) + len(self.y).to_bytes(2, "big") + self.y

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Decode what ``to_bytes`` produced; InvalidInput on anything else."""
        if len(data) < _SHARE_HEADER_LEN + 1:
            raise InvalidInput(f"encoded share is {len(data)} bytes, too short to be a share")
        if data[0] != _SHARE_VERSION:
            raise InvalidInput(
                f"encoded share has version {data[0]}, this strongroom reads {_SHARE_VERSION}",
                remedy="upgrade strongroom or re-export the share",
            )
        length = int.from_bytes(data[2:4], "big")
        if len(data) != _SHARE_HEADER_LEN + length:
            raise InvalidInput(
                f"encoded share {data[1]} declares {length} bytes of y "
                f"but carries {len(data) - _SHARE_HEADER_LEN}",
                remedy="the share is truncated or padded; re-export it",
            )
        return cls(x=data[1], y=bytes(data[_SHARE_HEADER_LEN:]))


def split(secret: bytes | bytearray | memoryview, threshold: int, shares: int) -> list[Share]:
    """Split ``secret`` into shares x = 1..``shares``; any ``threshold`` of them rebuild it."""
    for name, value in (("threshold", threshold), ("shares", shares)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be an integer, got {value!r}")
    if not 2 <= threshold <= shares <= MAX_SHARES:
        raise InvalidInput(
            f"cannot split {threshold}-of-{shares}",
            remedy=f"need 2 <= threshold <= shares <= {MAX_SHARES}",
        )
    secret_view = memoryview(secret).cast("B")
    length = len(secret_view)
    if not 1 <= length <= MAX_SECRET_LEN:
        raise InvalidInput(
            f"secret is {length} bytes; Shamir splitting takes 1..{MAX_SECRET_LEN}",
            remedy="split a key, not the data it protects",
        )

    # Row 0 is the secret (the constant terms), rows 1.. the random coefficients.
    buf = bytearray(threshold * length)
    buf[:length] = secret_view
    buf[length:] = os.urandom((threshold - 1) * length)
    coeffs = np.frombuffer(buf, dtype=np.uint8).reshape(threshold, length)
    powers = _POW[1 : shares + 1, :threshold]  # (shares, threshold): x**k
    terms = _MUL[powers[:, :, None], coeffs[None, :, :]]  # (shares, threshold, length)
    try:
        ys: _U8 = np.bitwise_xor.reduce(terms, axis=1)  # (shares, length)
        result = [Share(x=i + 1, y=ys[i].tobytes()) for i in range(shares)]
        ys.fill(0)
        return result
    finally:
        terms.fill(0)
        del coeffs
        buf[:] = bytes(len(buf))


@functools.lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> _U8:
    """Coefficients l_i with f(0) = xor_i l_i·f(x_i), for distinct nonzero xs."""
    basis = np.empty(len(xs), dtype=np.uint8)
    for i, xi in enumerate(xs):
        log_num = 0
        log_den = 0
        for xj in xs:
            if xj != xi:
                # l_i = prod_{j != i} x_j / (x_j - x_i); subtraction is xor
                log_num += _LOG[xj]
                log_den += _LOG[xj ^ xi]
        basis[i] = _EXP[(log_num - log_den) % 255]
    basis.setflags(write=False)
    return basis


def combine(shares: Sequence[Share], threshold: int | None = None) -> bytes:
    """Rebuild the secret from distinct shares (all of them are used).

    With ``threshold`` given, fewer shares than that is an error. Without it, any
    two or more shares interpolate *something*: with too few or wrong shares the
    result is wrong bytes, not an error (see the module docstring).
    """
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2
    ):
        raise InvalidInput(f"threshold must be an integer >= 2, got {threshold!r}")
    needed = threshold if threshold is not None else 2
    if len(shares) < needed:
        raise InvalidInput(
            f"got {len(shares)} share(s), need at least {needed}",
            remedy="collect more custodians' shares",
        )
    length = len(shares[0].y)
    seen: set[int] = set()
    for share in shares:
        if isinstance(share.x, bool) or not isinstance(share.x, int) or not 1 <= share.x <= 255:
            raise InvalidInput(
                f"share x must be in 1..255, got {share.x!r}",
                remedy="x = 0 is never a share; use the shares split() returned",
            )
        if share.x in seen:
            raise InvalidInput(
                f"share x={share.x} given twice",
                obj=f"share {share.x}",
                remedy="pass each custodian's share once",
            )
        seen.add(share.x)
        if len(share.y) != length:
            raise InvalidInput(
                f"share x={share.x} is {len(share.y)} bytes, share x={shares[0].x} is {length}",
                obj=f"share {share.x}",
                remedy="all shares must come from the same split",
            )

    basis = _lagrange_at_zero(tuple(share.x for share in shares))
    buf = bytearray(len(shares) * length)
    for i, share in enumerate(shares):
        buf[i * length : (i + 1) * length] = share.y
    ys = np.frombuffer(buf, dtype=np.uint8).reshape(len(shares), length)
    terms = _MUL[basis[:, None], ys]
    try:
        secret: _U8 = np.bitwise_xor.reduce(terms, axis=0)
        result = secret.tobytes()
        secret.fill(0)
        return result
    finally:
        terms.fill(0)
        del ys
        buf[:] = bytes(len(buf))


def _commitment(share: Share) -> str:
    if len(share.y) < MIN_COMMIT_LEN:
        raise InvalidInput(
            f"share {share.x} is {len(share.y)} bytes; a hash commitment to fewer than "
            f"{MIN_COMMIT_LEN} bytes can be brute-forced and would reveal the share",
            obj=f"share {share.x}",
            remedy=f"split a secret of at least {MIN_COMMIT_LEN} bytes (e.g. a 32-byte key)",
        )
    digest = hashlib.sha256(_COMMIT_DOMAIN)
    digest.update(bytes((share.x,)))
    digest.update(len(share.y).to_bytes(2, "big"))
    digest.update(share.y)
    return digest.hexdigest()


def commit(shares: Sequence[Share]) -> list[str]:
    """Per share, the hex SHA-256 of domain ‖ x ‖ len(y) ‖ y, for publication at dealing time.

    Proves to a custodian that their share is the one dealt; says nothing about
    whether the shares are consistent with each other (that needs Feldman VSS).
    """
    return [_commitment(share) for share in shares]


def verify_share(share: Share, commitment: str) -> bool:
    """Whether ``share`` is the share ``commitment`` was made to (constant-time compare)."""
    expected = _commitment(share)
    if not isinstance(commitment, str) or not commitment.isascii():
        return False
    return hmac.compare_digest(expected, commitment.strip().lower())

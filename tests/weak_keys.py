"""Ed25519 public keys no key generation makes: the 8 small-order points and other encodings.

Under any of them OpenSSL's verify accepts a forged signature (``R`` = identity,
``S`` = 0) for messages whose hash is a multiple of the point's order; strongroom
refuses them wherever a key enters (tests/crypto/test_ed25519_keys.py).
"""

from __future__ import annotations

#: The 8 small-order points (libsodium's ``ge25519_has_small_order`` blocklist,
#: Wycheproof's "small order public key" cases), canonically encoded.
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity (order 1)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1), order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]
#: Non-canonical encodings of small-order points: y + p, or x = 0 with the sign bit set.
NONCANONICAL_SMALL = [
    "0100000000000000000000000000000000000000000000000000000000000080",  # identity, sign set
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # (0, -1), sign set
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (0)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (1)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
]

"""Bech32 (BIP 173) encoding, as age uses it for its key strings.

``encode(hrp, data)`` and ``decode(s)`` convert between 8-bit data and a
Bech32 string. Like age, and unlike BIP 173, there is no 90-character limit
(age identities of other kinds are longer). Mixed-case strings are refused;
an all-uppercase string decodes to a lowercase human-readable part.
Errors are ``ValueError`` with a message that never repeats the input, because
the input may be a secret key; callers turn them into strongroom errors.
"""

from __future__ import annotations

__all__ = ["decode", "encode"]

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_CONSTANT = 1  # Bech32, not Bech32m
_CHECKSUM_LEN = 6


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise ValueError("invalid padding in Bech32 data")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under the human-readable part ``hrp`` (returned lowercase)."""
    hrp = hrp.lower()
    if not hrp or any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise ValueError("invalid Bech32 human-readable part")
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ _CHECKSUM_CONSTANT
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def decode(s: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into its lowercase human-readable part and data."""
    if s.lower() != s and s.upper() != s:
        raise ValueError("mixed case in Bech32 string")
    if any(ord(c) < 33 or ord(c) > 126 for c in s):
        raise ValueError("invalid character in Bech32 string")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + _CHECKSUM_LEN + 1 > len(s):
        raise ValueError("separator misplaced in Bech32 string")
    hrp = s[:pos]
    try:
        values = [_CHARSET_INDEX[c] for c in s[pos + 1 :]]
    except KeyError:
        raise ValueError("invalid character in Bech32 data") from None
    if _polymod(_hrp_expand(hrp) + values) != _CHECKSUM_CONSTANT:
        raise ValueError("invalid Bech32 checksum")
    data = _convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False)
    return hrp, bytes(data)

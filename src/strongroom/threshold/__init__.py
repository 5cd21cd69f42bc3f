"""Threshold key release: file keys that only k of n independent key servers can release together.

The pieces, bottom up: :mod:`~strongroom.threshold.group` (ristretto255 through
libsodium), :mod:`~strongroom.threshold.dleq` (RFC 9497 Chaum–Pedersen proofs),
:mod:`~strongroom.threshold.shares` (Feldman VSS, Lagrange, distributed key
generation, re-sharing) and :mod:`~strongroom.threshold.wrap` (file keys wrapped
to the group key; partial decryptions and their combination). The operator's
guide is ``docs/threshold.md``.
"""

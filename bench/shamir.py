"""Benchmark: Shamir split+combine per second, 32-byte secret, 3-of-5, one core.

Run: ``.venv/bin/python bench/shamir.py [seconds]``. Target: 10,000 split+combine/s.
"""

from __future__ import annotations

import os
import sys
import time

from strongroom.crypto.shamir import combine, split

TARGET_PER_S = 10_000


def _rate(seconds: float, secret: bytes, rotate_subsets: bool) -> float:
    subsets = [(0, 1, 2), (1, 3, 4), (0, 2, 4), (2, 3, 4)] if rotate_subsets else [(0, 1, 2)]
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(500):
            shares = split(secret, 3, 5)
            chosen = subsets[done % len(subsets)]
            if combine([shares[i] for i in chosen], threshold=3) != secret:
                raise SystemExit("split+combine returned the wrong secret")
            done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    secret = os.urandom(32)
    _rate(0.2, secret, rotate_subsets=True)  # warm the tables and caches
    for label, rotate in (("same subset", False), ("rotating subsets", True)):
        rate = _rate(seconds, secret, rotate)
        print(
            f"shamir 3-of-5, 32-byte secret, {label}: {rate:,.0f} split+combine/s "
            f"({rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target)"
        )


if __name__ == "__main__":
    main()

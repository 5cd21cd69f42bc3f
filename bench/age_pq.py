"""Benchmark: hybrid ML-KEM-768 + X25519 age wraps and unwraps per second, beside X25519.

Run: ``.venv/bin/python bench/age_pq.py [rounds] [seconds-per-subject]``
(``bench/weights.py --only wraps`` runs the same section beside the weight figures).

A wrap seals one 16-byte file key to a recipient (what ``age.encrypt`` does per
recipient: a custodian's share, a transfer bundle's file key); an unwrap opens
that stanza with the identity. The hybrid type (``age1pq1…``) and classical
X25519 (``age1…``) run interleaved round by round (bench/machine.py), one
thread, and the medians are judged. File keys at rest are wrapped under the
symmetric KEK, not to either recipient, so weight import and load do not pass
through this code (bench/weights.py measures them).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

from machine import describe, interleave, loadavg, summary
from strongroom.crypto import age
from strongroom.crypto.age_pq import HybridIdentity


def _rate(op: Callable[[], object], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            op()
        done += 20
    return done / (time.perf_counter() - start)


def wrap_rates(rounds: int, seconds: float) -> dict[str, list[float]]:
    """Wraps and unwraps per second, hybrid and X25519, ``rounds`` interleaved rounds."""
    file_key = os.urandom(age.FILE_KEY_SIZE)
    keys: dict[str, age.X25519Identity | HybridIdentity] = {
        "x25519": age.X25519Identity.generate(), "hybrid": HybridIdentity.generate()}
    stanzas = {name: ident.recipient.wrap(file_key) for name, ident in keys.items()}
    for name, ident in keys.items():  # the right key comes back before anything is timed
        assert ident.unwrap(stanzas[name]) == file_key, name
    subjects: dict[str, Callable[[int], float]] = {}
    for name, ident in keys.items():
        recipient = ident.recipient
        subjects[f"{name} wrap"] = lambda _r, rc=recipient: _rate(lambda: rc.wrap(file_key), seconds)
        subjects[f"{name} unwrap"] = lambda _r, i=ident, st=stanzas[name]: _rate(
            lambda: i.unwrap(st), seconds)
    return interleave(rounds, subjects)


def report_lines(samples: dict[str, list[float]]) -> list[str]:
    """Median and best of each subject, the hybrid/X25519 ratios and the load now."""
    lines = [summary(name, got, "/s") for name, got in samples.items()]
    for op in ("wrap", "unwrap"):
        ratio = statistics.median(samples[f"hybrid {op}"]) / statistics.median(
            samples[f"x25519 {op}"])
        lines.append(f"hybrid {op}: {ratio:.2f}x the X25519 rate (medians)")
    lines.append(f"load average after the section: {loadavg()}")
    return lines


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    print(describe(with_reference=False))
    for line in report_lines(wrap_rates(rounds, seconds)):
        print(line)


if __name__ == "__main__":
    main()

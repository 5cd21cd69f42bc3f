"""Benchmark: HSM KEK unwraps per second (AES-256-GCM inside a SoftHSM2 token).

Run: ``.venv/bin/python bench/hsm.py [seconds]``. Needs ``softhsm2-util`` and
``/usr/lib/softhsm/libsofthsm2.so`` (apt-get install softhsm2); it creates a
throw-away token in a temporary directory. Target: 5,000 unwraps/s.

Every call into the PKCS#11 library is serialised (see strongroom.keys.hsm), so
threads do not add throughput; the 4-thread figure shows the cost of contention.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET_PER_S = 5_000
LIBRARY = os.environ.get("STRONGROOM_SOFTHSM_LIB", "/usr/lib/softhsm/libsofthsm2.so")
TOKEN, PIN = "bench", "1234"
PINS = ("--so-pin", "0000", "--pin", PIN)


def _measure(seconds: float, threads: int, work: object) -> float:
    assert callable(work)
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(slot: int) -> None:
        while time.perf_counter() < deadline:
            for _ in range(100):
                work()
            counts[slot] += 100

    start = time.perf_counter()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-hsm-") as tmp:
        root = Path(tmp)
        (root / "tokens").mkdir()
        conf = root / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {root / 'tokens'}/\n"
            "objectstore.backend = file\nlog.level = ERROR\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)  # before the library is loaded
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, *PINS],
            check=True,
            capture_output=True,
        )
        from strongroom.keys.hsm import HsmIdentity, HsmKek, HsmRecipient

        with HsmKek.generate(LIBRARY, TOKEN, PIN, "bench-kek") as kek:
            file_key, aad = os.urandom(16), b"shard 0"
            blob = kek.wrap(file_key, aad)
            stanzas = HsmRecipient(kek).wrap(file_key)
            identity = HsmIdentity(kek)
            _measure(0.2, 1, lambda: kek.unwrap(blob, aad))  # warm up
            results = [
                ("HsmKek.unwrap, 1 thread", _measure(seconds, 1, lambda: kek.unwrap(blob, aad))),
                ("HsmKek.unwrap, 4 threads", _measure(seconds, 4, lambda: kek.unwrap(blob, aad))),
                (
                    "HsmIdentity.unwrap, 1 thread",
                    _measure(seconds, 1, lambda: identity.unwrap(stanzas)),
                ),
                ("HsmKek.wrap, 1 thread", _measure(seconds, 1, lambda: kek.wrap(file_key, aad))),
            ]
    for label, rate in results:
        print(
            f"hsm {label}: {rate:,.0f}/s ({rate / TARGET_PER_S:.2f}x the {TARGET_PER_S:,}/s target)"
        )


if __name__ == "__main__":
    main()

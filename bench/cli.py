"""The ``strongroom`` command as a user meets it: start-up, and encrypt/decrypt against ``age``.

Whole processes, timed from the parent (spawn to exit), interleaved round by
round with the order flipped every round; the median is judged, the best
printed beside it, with the load average after every round and the machine's
reference figures first (bench/machine.py).

    .venv/bin/python bench/cli.py                     # start-up, 21 rounds
    .venv/bin/python bench/cli.py --size-mib 1024     # and 1 GiB encrypt/decrypt vs age

Start-up (target: ``strongroom --version`` and ``strongroom encrypt`` of a
1 KiB file within 150 ms) is printed beside the floor, the interpreter's own
``python -c pass`` (and ``python -S -c pass``) measured in the same rounds, and
``age`` encrypting the same file. Throughput (target: >= 1.5x ``age``) encrypts
and decrypts a file of random bytes with stdout redirected to /dev/null, the
way ``age`` is usually timed; the input sits in the page cache (a warm-up run
reads it first), so the figure is the tool's, not the disk's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine import describe, interleave, summary

_BIN = Path(sys.executable).parent
STRONGROOM = str(_BIN / "strongroom")

#: The children's environment: bytecode caches written and used, as after ``pip install``
#: (with PYTHONDONTWRITEBYTECODE, a module edited since its cache was written is
#: compiled again on every start, which is not what an installed strongroom does).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


#: CPU time (user + system, ms) of every run of each command, beside the wall times judged.
CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], *, stdin: Path | None = None) -> Callable[[int], float]:
    """A subject running ``cmd`` once (stdout to /dev/null); returns its wall time in ms.

    The child's CPU time (from ``wait4``) is kept in :data:`CPU`: on a loaded
    machine the wall time includes waiting for a core, the CPU time does not.
    """
    key = " ".join(cmd)

    def run(_: int) -> float:
        with open(stdin or os.devnull, "rb") as src:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=src, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=ENV)
            assert proc.stderr is not None
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            dt = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
        if proc.returncode != 0:
            raise SystemExit(f"`{key}` failed ({proc.returncode}): "
                             f"{err.decode(errors='replace').strip()[-300:]}")
        CPU.setdefault(key, []).append((usage.ru_utime + usage.ru_stime) * 1000)
        return dt * 1000
    run.key = key  # type: ignore[attr-defined]
    return run


def age_key(tmp: Path) -> tuple[Path, str]:
    """An identity file made by ``strongroom keygen`` and its recipient."""
    key = tmp / "key.txt"
    subprocess.run([STRONGROOM, "keygen", "-o", str(key)], check=True, capture_output=True,
                   env=ENV)
    recipient = next(line.split(": ", 1)[1] for line in key.read_text().splitlines()
                     if line.startswith("# public key: "))
    return key, recipient


def report(title: str, rounds: dict[str, list[float]], subjects: dict[str, Callable[[int], float]],
           pairs: list[tuple[str, str]]) -> None:
    """Median and best wall time of each subject, its median CPU time, and the ratios asked for."""
    print(f"\n{title}")
    width = max(map(len, rounds))
    for name, samples in rounds.items():
        cpu = CPU[subjects[name].key][-len(samples):]  # type: ignore[attr-defined]
        print(summary(name.ljust(width), samples, "ms wall", higher_is_better=False)
              + f"; CPU median {statistics.median(cpu):,.4g} ms (best {min(cpu):,.4g})")
    for ours, theirs in pairs:
        ratio = [b / a for a, b in zip(rounds[ours], rounds[theirs], strict=True)]
        mid = statistics.median(rounds[theirs]) / statistics.median(rounds[ours])
        cpu_ours, cpu_theirs = (statistics.median(CPU[subjects[n].key][-len(rounds[n]):])  # type: ignore[attr-defined]
                                for n in (ours, theirs))
        # On a loaded machine the wall ratio follows the CPU ratio; quiet, two threads beat one.
        print(f"{theirs} / {ours} = {mid:.2f} at the medians ({min(ratio):.2f}-{max(ratio):.2f}"
              f" over {len(ratio)} pairs; > 1 = {ours} faster); CPU {cpu_theirs / cpu_ours:.2f}")


def startup(tmp: Path, rounds: int, recipient: str) -> None:
    small = tmp / "small.bin"
    small.write_bytes(os.urandom(1024))
    subjects = {
        "python -c pass": timed([sys.executable, "-c", "pass"]),
        "python -S -c pass": timed([sys.executable, "-S", "-c", "pass"]),
        # the floor of anything that encrypts with the cryptography package
        "python + cryptography": timed([sys.executable, "-c", "import cryptography.hazmat."
                                        "primitives.ciphers.aead"]),
        "strongroom --version": timed([STRONGROOM, "--version"]),
        "strongroom encrypt 1 KiB": timed([STRONGROOM, "encrypt", "-r", recipient, str(small)]),
        "strongroom keygen": timed([STRONGROOM, "keygen"]),
    }
    if shutil.which("age"):
        subjects["age -r 1 KiB"] = timed(["age", "-r", recipient, str(small)])
    for fn in subjects.values():  # warm-up: bytecode caches, page cache
        fn(0)
        fn(0)
    print(f"\n== start-up, whole process, {rounds} interleaved rounds (ms)")
    result = interleave(rounds, subjects)
    report("start-up (target: strongroom --version and encrypt <= 150 ms)", result, subjects, [])
    floor = statistics.median(result["python -c pass"])
    cpu_floor = statistics.median(CPU[subjects["python -c pass"].key])  # type: ignore[attr-defined]
    for name in ("strongroom --version", "strongroom encrypt 1 KiB"):
        cpu = statistics.median(CPU[subjects[name].key])  # type: ignore[attr-defined]
        print(f"{name}: median {statistics.median(result[name]):.0f} ms wall, "
              f"{statistics.median(result[name]) - floor:.0f} ms above the interpreter's floor; "
              f"CPU {cpu:.0f} ms, {cpu - cpu_floor:.0f} ms above the floor's")


def throughput(tmp: Path, rounds: int, size_mib: int, key: Path, recipient: str) -> None:
    age = shutil.which("age")
    if age is None:
        print("\n== encrypt/decrypt vs age: skipped: the age CLI is not on the PATH "
              "(Debian: apt-get install age)")
        return
    plain = tmp / "plain.bin"
    with plain.open("wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    sealed = tmp / "sealed.age"
    with plain.open("rb") as src, sealed.open("wb") as dst:
        subprocess.run([age, "-r", recipient], stdin=src, stdout=dst, check=True)
    subjects = {
        "strongroom encrypt": timed([STRONGROOM, "encrypt", "-r", recipient, str(plain)]),
        "age -r": timed([age, "-r", recipient, str(plain)]),
        "strongroom decrypt": timed([STRONGROOM, "decrypt", "-i", str(key), str(sealed)]),
        "age -d": timed([age, "-d", "-i", str(key), str(sealed)]),
    }
    for fn in subjects.values():
        fn(0)
    print(f"\n== {size_mib} MiB, whole process, stdout to /dev/null, {rounds} interleaved rounds")
    result = interleave(rounds, subjects)
    report(f"{size_mib} MiB (target: >= 1.5x age)", result, subjects,
           [("strongroom encrypt", "age -r"), ("strongroom decrypt", "age -d")])
    for name in ("strongroom encrypt", "strongroom decrypt"):
        rate = size_mib / 1024 / (statistics.median(result[name]) / 1000)
        print(f"{name}: {rate:.2f} GiB/s at the median, start-up included")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21, help="interleaved start-up rounds")
    ap.add_argument("--size-mib", type=int, default=0,
                    help="also encrypt/decrypt a file this big against age (0: skip)")
    ap.add_argument("--size-rounds", type=int, default=7, help="interleaved throughput rounds")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the machine's reference figures (needs numpy)")
    args = ap.parse_args()
    print(describe(with_reference=not args.no_reference))
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as name:
        tmp = Path(name)
        key, recipient = age_key(tmp)
        startup(tmp, args.rounds, recipient)
        if args.size_mib:
            throughput(tmp, args.size_rounds, args.size_mib, key, recipient)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

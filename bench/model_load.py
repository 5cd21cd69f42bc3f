"""What users feel: whole-model loads of an 8-shard model per second (issue 24, item 4).

    .venv/bin/python bench/model_load.py [--size-mib 16] [--shards 8] [--rounds 7] [--workers 2]

Set-up (not timed), bench/remote_load.py's: a throwaway 2-of-3 vault, a real
``strongroom serve --workers N`` on loopback, unsealed over the API, alice, bob
and carol enrolled, the artifact labelled "load needs 2 of approvers" and one
Grant for alice. Its model is then replaced by a new version: a directory of
``--shards`` files ``model-0000N-of-0000M.safetensors`` of ``--size-mib`` MiB
each (4 float16 tensors a shard), imported as one artifact.

Each round, in rotating order:

* remote: ``RemoteVault`` (the ``STRONGROOM_URL`` path) full load — every
  shard's file key released by serve's gate with the one Grant in the
  evidence, ciphertext fetched by signed ranged GETs, decrypted here;
* embedded: ``open_vault().open_weights`` on this data directory, keys released
  by serve's key agent;
* lazy: a lazy remote open up to the first tensor in hand (time to first
  tensor), beside plaintext ``safe_open().get_tensor`` of the same tensor;
* plain: the floor, ``safetensors.numpy.load_file`` of every shard;
* keys: the remote load's key releases alone (manifest, then each shard's key
  in turn, as the load asks for them), to show what of the load is the gate;
* embedded_lazy: the embedded lazy open up to the first tensor.

Printed: medians (judged) and best, whole-model loads per second, the ratios
to the plaintext floor, CPU per load (mean over the rounds: /proc counts 10 ms
ticks) of this process, serve's workers and the agent, and the load average.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import bench_module

rl = bench_module("remote_load")  # its sys.path set-up, server start and deployment
server_bench = bench_module("server")

MIB = 2**20


def write_shards(folder: Path, shards: int, size_mib: int) -> list[Path]:
    """``shards`` safetensors files of ``size_mib`` MiB, 4 float16 tensors each."""
    folder.mkdir()
    per = size_mib * MIB // 4 // 2
    base = np.random.default_rng(0).standard_normal(per, dtype=np.float32).astype(np.float16)
    paths = []
    for s in range(shards):
        path = folder / f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({f"model.layers.{s}.w{j}": np.roll(base, s * 4 + j).reshape(-1, 512)
                   for j in range(4)}, str(path))
        paths.append(path)
    return paths


def _vault(tmp: Path, args: argparse.Namespace) -> tuple[Any, str, Path, Any]:
    """A fresh 2-of-3 vault and serve on it: (result, url, home, custodians)."""
    home, url = tmp / "home", f"sqlite:///{tmp / 'bench.db'}"
    os.environ.update(STRONGROOM_HOME=str(home), STRONGROOM_DATABASE_URL=url)
    cust = rl.make_custodians(tmp / "custodians", 3)
    store = rl.Store.open(url)
    try:
        result = rl.ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                        shares_dir=tmp / "shares",
                                        settings=rl.KeysSettings(key_backend="shamir"))
    finally:
        store.close()
    return result, url, home, cust


def _mean_cpu(rows: list[tuple[float, dict[str, float]]]) -> str:
    """CPU per run, the mean over the rounds (/proc counts in 10 ms ticks)."""
    return ", ".join(f"{k} {sum(c[k] for _, c in rows) / len(rows) * 1000:,.0f} ms"
                     for k in rows[0][1])


def run(args: argparse.Namespace, tmp: Path) -> None:
    from strongroom.runtime.services import open_vault

    result, url, home, cust = _vault(tmp, args)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRONGROOM_") or k in ("STRONGROOM_HOME",
                                                       "STRONGROOM_DATABASE_URL")}
    env["STRONGROOM_LOG_LEVEL"] = "warning"
    port = server_bench._free_port()
    server = rl._start_server(env, port, args.workers)
    base = f"http://127.0.0.1:{port}"
    http = rl.httpx.Client(base_url=base, timeout=60)
    try:
        world = rl.ServerWorld(None, http, rl.Identity.load(result.officer_identity), tmp=tmp)
        settings = rl.Settings(home=home, database_url=url, threads=args.threads)
        rl._deploy(tmp, world, settings, result, cust, 1)  # 1 MiB first version
        print(f"generating and importing {args.shards} x {args.size_mib} MiB shards…")
        shards = write_shards(tmp / "model", args.shards, args.size_mib)
        with open_vault(settings, identity=world.officer) as v:
            v.import_weights(tmp / "model", name=rl.NAME, compartments=["atlas"],
                             new_version=True)
        client = rl.Client(base, world.people["alice"],
                           known_servers=rl.KnownServers(tmp / "known_servers"))
        meter = server_bench.CpuMeter(server.pid, home)
        with open_vault(settings, identity=world.people["alice"]) as embedded, \
                rl.RemoteVault(client, rl.Settings(threads=args.threads)) as remote:
            manifest = remote.manifest(rl.NAME)
            assert len(manifest.files) == args.shards, manifest.files
            out = _rounds(args, embedded, remote, shards, meter)
        _report(args, out, sum(p.stat().st_size for p in shards))
    finally:
        http.close()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def _rounds(args: argparse.Namespace, embedded: Any, remote: Any, shards: list[Path],
            meter: Any) -> dict[str, list[tuple[float, dict[str, float]]]]:
    first = "model.layers.0.w0"

    def full(vault: Any) -> Any:
        def load() -> None:
            w = vault.open_weights(rl.NAME)
            assert len(w) == 4 * args.shards
            w.close()
        return load

    def lazy() -> None:
        with remote.open_weights(rl.NAME, lazy=True) as w:
            assert w[first].shape == (args.size_mib * MIB // 8 // 512, 512)

    def keys() -> None:
        manifest = remote.manifest(rl.NAME)
        for f in manifest.files:
            key = remote.client.release(manifest.ref, f.path, f.blob, "load")
            key[:] = bytes(len(key))

    def embedded_lazy() -> None:
        with embedded.open_weights(rl.NAME, lazy=True) as w:
            assert w[first].nbytes == args.size_mib * MIB // 4

    def plain() -> None:
        for p in shards:
            load_file(str(p))

    def plain_first() -> None:
        with safe_open(str(shards[0]), framework="numpy") as f:
            f.get_tensor(first)

    fns = {"remote": full(remote), "embedded": full(embedded), "plain": plain,
           "keys": keys, "lazy": lazy, "embedded_lazy": embedded_lazy,
           "plain_first": plain_first}
    for fn in fns.values():  # warm-up: page cache, connections, imports
        fn()
    kinds = list(fns)
    out: dict[str, list[tuple[float, dict[str, float]]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for kind in order:
            out[kind].append(rl._timed(fns[kind], meter))
        print(f"  round {r + 1}: " + ", ".join(
            f"{k} {out[k][-1][0] * 1000:,.0f} ms" for k in kinds))
    return out


def _report(args: argparse.Namespace, out: dict[str, list[tuple[float, dict[str, float]]]],
            size: int) -> None:
    load = os.getloadavg()
    print(f"\n== whole-model load, {args.shards} shards x {args.size_mib} MiB = "
          f"{size / MIB:,.0f} MiB, threads {args.threads}, serve --workers {args.workers}, "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    med = {k: statistics.median(t for t, _ in rows) for k, rows in out.items()}
    for kind in ("remote", "embedded", "plain"):
        times = [t for t, _ in out[kind]]
        print(f"{kind:9} {1 / med[kind]:6.2f} loads/s (best {1 / min(times):.2f}), median "
              f"{med[kind] * 1000:,.0f} ms = {size / med[kind] / 2**30:.2f} GiB/s; "
              f"{med['plain'] / med[kind]:.2f}x plaintext load_file; CPU per load: "
              f"{_mean_cpu(out[kind])}")
    keys = [t for t, _ in out["keys"]]
    print(f"keys only, {args.shards} remote releases in turn (manifest + gate + audit): median "
          f"{med['keys'] * 1000:,.0f} ms (best {min(keys) * 1000:,.0f} ms) = "
          f"{med['keys'] / med['remote']:.0%} of the remote load; CPU: {_mean_cpu(out['keys'])}")
    for kind, what in (("lazy", "remote lazy open"), ("embedded_lazy", "embedded lazy open"),
                       ("plain_first", "plaintext safe_open")):
        times = [t for t, _ in out[kind]]
        print(f"time to first tensor, {what}: median {med[kind] * 1000:.1f} ms "
              f"(best {min(times) * 1000:.1f} ms); CPU: {_mean_cpu(out[kind])}")
    print(f"first-tensor ratio (plaintext / remote lazy): {med['plain_first'] / med['lazy']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=16, help="MiB per shard")
    ap.add_argument("--shards", type=int, default=8, help="shard files")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (median judged)")
    ap.add_argument("--workers", type=int, default=2, help="`strongroom serve --workers`")
    ap.add_argument("--threads", type=int, default=2, help="load threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-model-load-") as name:
        run(args, Path(name))


if __name__ == "__main__":
    main()

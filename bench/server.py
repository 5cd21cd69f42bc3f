"""Authorised key releases over HTTP: ``strongroom serve --workers 2`` on loopback.

Target (issue 7): >= 1,000 releases/s with 2 workers, p99 <= 20 ms; printed
with the ratio to the same authorised release (GrantEvidence, same store,
same Grant) run in-process through the gate in this run.

    .venv/bin/python bench/server.py [--releases 1000] [--rounds 5] [--threads 8] [--workers 2]
    .venv/bin/python bench/server.py --profile /tmp/agent   # py-spy on the agent (top frames)
    .venv/bin/python bench/server.py --statements 20000 --history 300000   # a lab's history
    .venv/bin/python bench/server.py --workers 1 --direct-batches 1,4,8   # a batch's fixed cost

Each round signs its requests just before it is timed (a signature is valid
for 60 s), then times them; the median round is judged and the best printed
beside it, with the load average after each round and the machine's
reference figures (bench/machine.py) at the start. ``--profile PREFIX`` runs
``py-spy record`` on the key agent during the timed HTTP rounds and prints
its top frames (``PREFIX.gil.txt``: where the agent holds the GIL, i.e. its
Python CPU; ``PREFIX.all.txt``: every thread, waits included).

The load is closed-loop: ``--threads`` clients each send the next request
when the last is answered, so the mean latency is threads / rate (Little's
law); at 1,000/s a p99 of 20 ms leaves room for about 10 requests in flight,
hence 8 by default (16 doubles every latency without adding throughput).
The clients share the machine's cores with the server: besides rate and
latency the run prints the CPU per request of the client, the server's
processes and the key agent, which vary less than the rate on a shared
machine. ``--workers 1`` runs the keyring in the server process (no agent).

Set-up (not timed): a 2-of-3 vault initialised, the server started, unsealed
over the API by two custodians, a small model imported, alice/bob/carol
enrolled and the model labelled by the officer, a Grant made by alice's
request and bob's and carol's approvals. Each timed request carries fresh
release evidence and a fresh RFC 9421 signature, both made before timing
starts (the client's cost); the server verifies the HTTP signature, looks up
the caller, reads the manifest, runs the gate (Grant verification, replay,
egress charge, durable audit append, unwrap) and returns the file key.

A new deployment's database is nearly empty, so costs that grow with a lab's
history stay hidden. ``--statements N`` and ``--history M`` write, before the
server starts, ``N`` signed access statements of other people (enrollments,
requests, approvals and Grants, each with its audit entry) and ``M`` past
``key.release`` allow entries of the last 7 days with their egress ledger rows
(bench/history.py says how); the run prints how long that took and the size
of the database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

import httpx  # noqa: E402

from history import populate  # noqa: E402
from machine import describe, interleave, loadavg, summary  # noqa: E402
from strongroom.access.approvals import AccessRequest, approve  # noqa: E402
from strongroom.access.directory import (  # noqa: E402
    Enrollment,
    ResourceLabel,
    Rule,
    Vetting,
    level,
)
from strongroom.access.evidence import make_evidence  # noqa: E402
from strongroom.access.grants import build_grant  # noqa: E402
from strongroom.keys import ceremony  # noqa: E402
from strongroom.keys.config import KeysSettings  # noqa: E402
from strongroom.keys.identity import Identity  # noqa: E402
from strongroom.keys.keyring import KeyringStatus  # noqa: E402
from strongroom.server.client import Client  # noqa: E402
from strongroom.server.signatures import sign_request  # noqa: E402
from strongroom.store.db import Store  # noqa: E402

from keyring_fixtures import make_custodians  # noqa: E402
from vault_fixtures import make_model  # noqa: E402

YEAR = 365 * 24 * 3600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(label: str, latencies: list[float], elapsed: float, unit: str = "releases"
             ) -> float:
    latencies.sort()
    rate = len(latencies) / elapsed
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    print(f"{label}: {len(latencies)} {unit}: {rate:,.0f} {unit}/s  p50 {p50:.2f} ms  "
          f"p99 {p99:.2f} ms")
    return rate


def _run(threads: int, items: list[Any], one: Any) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    it = iter(items)
    errors: list[str] = []

    def worker() -> None:
        local: list[float] = []
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                break
            t0 = time.perf_counter()
            try:
                one(item)
            except Exception as exc:  # reported, and the run fails
                errors.append(f"{type(exc).__name__}: {exc}")
                break
            local.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"release failed: {errors[0]}")
    return latencies, elapsed


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server and its uvicorn workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


class CpuMeter:
    """CPU per request of the client (this process), the server's processes and the agent."""

    def __init__(self, server_pid: int, home: Path) -> None:
        self.server_pid = server_pid
        self.home = home

    def agent_pid(self) -> int | None:
        """The key agent's pid (from its lock file), None when none runs."""
        try:
            return int((self.home / "agent.lock").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def sample(self) -> dict[str, float]:
        agent = self.agent_pid()
        server = sum(_cpu(p) for p in _tree(self.server_pid) if p != agent)
        return {"client": _cpu(os.getpid()), "server": server,
                "agent": _cpu(agent) if agent else 0.0}

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float], n: int,
               who: str = "") -> None:
        parts = [f"{k} {(after[k] - before[k]) / n * 1e6:,.0f} us" for k in before]
        total = sum(after[k] - before[k] for k in before) / n * 1e6
        print(f"  {who + ' ' if who else ''}CPU per request: {', '.join(parts)}; "
              f"total {total:,.0f} us")


class RawClient:
    """A minimal HTTP/1.1 keep-alive client, one connection per thread.

    The load generator shares the machine's cores with the server, so its own
    CPU is kept small: requests are written as prepared bytes and responses
    read by Content-Length (http.client costs ~150 us a request, httpx ~500 us,
    this ~40 us). Responses other than 200 fail the run.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.local = threading.local()

    def _sock(self) -> socket.socket:
        sock: socket.socket | None = getattr(self.local, "sock", None)
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.sock, self.local.buf = sock, b""
        return sock

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The response body (a status other than 200 raises)."""
        sock = self._sock()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        buf: bytes = self.local.buf
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            buf += chunk
        header, _, rest = buf.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next((int(v) for k, _, v in (x.partition(b":") for x in lines[1:])
                       if k.strip().lower() == b"content-length"), None)
        if length is None:
            raise RuntimeError(f"HTTP {status} without Content-Length")
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            rest += chunk
        data, self.local.buf = rest[:length], rest[length:]
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        return data


class Profiler:
    """``py-spy record`` on one process while a block runs; prints its top frames after."""

    def __init__(self, prefix: str | None, pid: int | None) -> None:
        self.prefix, self.pid = prefix, pid
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Profiler:
        spy = Path(sys.executable).parent / "py-spy"
        if self.prefix is None or self.pid is None:
            return self
        if not spy.exists() and shutil.which("py-spy"):
            spy = Path(str(shutil.which("py-spy")))
        if not spy.exists():
            print("  (no py-spy in the venv or on PATH: not profiled)")
            return self
        for kind, extra in (("gil", ["--gil"]), ("all", [])):
            out = Path(f"{self.prefix}.{kind}.txt")
            self.procs.append((subprocess.Popen(
                [str(spy), "record", "-p", str(self.pid), "-r", "200", "-f", "raw",
                 "-o", str(out), *extra], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL), out))
        time.sleep(1.0)  # py-spy attaches
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc, out in self.procs:
            proc.wait(60)
            print(f"  py-spy ({out.name}): {top_frames(out)}")


def top_frames(path: Path, n: int = 12) -> str:
    """The ``n`` functions with the most samples in a py-spy raw file (inclusive %)."""
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            fn = f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]}"
            if fn not in seen and not name.startswith(("Thread.", "_bootstrap", "<module>")):
                seen.add(fn)
                incl[fn] = incl.get(fn, 0) + int(count)
    top = sorted(incl.items(), key=lambda kv: -kv[1])[:n]
    return f"{total} samples\n" + "\n".join(f"    {100 * v / max(total, 1):5.1f}% {k}"
                                             for k, v in top)


def _enroll(c: Client, officer: Identity, ident: Identity, roles: tuple[str, ...]) -> None:
    now = int(time.time())
    env = Enrollment(name=ident.name, key=ident.public.public_bytes, roles=roles,
                     clearance=level("secret"), compartments=("atlas",),
                     vetting=Vetting("active", now - 10, now + YEAR), serial=1,
                     issued=now).sign(officer.private_key)
    c.post("/v1/statements", {"kind": "enrollment", "envelope": env})


@dataclass
class Rig:
    """A running ``strongroom serve`` with alice's Grant for one shard, and a raw client."""

    tmp: Path
    base: str
    meter: CpuMeter
    people: dict[str, Identity]
    result: Any
    cust: Any
    ref: str = ""
    entry: dict[str, Any] = field(default_factory=dict)
    send: Any = None
    #: CPU seconds of the timed releases so far, by process (client, server, agent), and their count.
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_n: int = 0
    #: The last round's CPU per release (us) by process, as text.
    last_cpu: str = ""
    #: When the vault was unsealed over the API.
    unsealed_at: float = 0.0
    #: A version of the model with several shards (:meth:`add_shards`): its ref and entries.
    many_ref: str = ""
    many: list[dict[str, Any]] = field(default_factory=list)
    #: This deployment's database URL (its home is ``tmp / "home"``): several rigs may be up,
    #: and the environment names only the last one started.
    db_url: str = ""

    @property
    def unsealed_s(self) -> float:
        """Seconds since the unseal."""
        return time.time() - self.unsealed_at

    def _signed(self, path: str, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """``doc`` as a JSON POST to ``path`` with alice's fresh HTTP signature."""
        body = json.dumps(doc).encode()
        headers = sign_request(self.people["alice"].private_key, "POST", path, body)
        headers["content-type"] = "application/json"
        return body, headers

    def signed_releases(self, n: int) -> list[tuple[bytes, dict[str, str]]]:
        """``n`` release requests, each with fresh evidence and a fresh HTTP signature."""
        key, entry = self.people["alice"].private_key, self.entry
        return [self._signed("/v1/keys/release", {
            "artifact": self.ref, "shard": entry["path"], "purpose": "load",
            "evidence": make_evidence(key, artifact=self.ref, shard=entry["path"],
                                      blob_id=entry["blob"], purpose="load", ttl_s=600)})
            for _ in range(n)]

    def over_http(self, item: tuple[bytes, dict[str, str]]) -> None:
        """Send one prepared release (fails the run unless answered 200)."""
        self.send("POST", "/v1/keys/release", item[0], item[1])

    def add_shards(self, k: int) -> None:
        """Import a new version of the model with ``k`` shards (alice's Grant covers it)."""
        from strongroom.runtime.services import open_vault
        from strongroom.settings import Settings

        folder = self.tmp / f"shards-{k}"
        folder.mkdir()
        for i in range(k):
            make_model(folder / f"model-{i + 1:05d}-of-{k:05d}.safetensors", seed=i,
                       prefix=f"s{i}.")
        mine = Settings(home=self.tmp / "home", database_url=self.db_url)
        with open_vault(mine, identity=self.people["officer"]) as v:
            m = v.import_weights(folder, "tiny", compartments=("atlas",), new_version=True)
        shutil.rmtree(folder)
        self.many_ref = m.ref
        self.many = [{"path": f.path, "blob": f.blob} for f in m.files]

    def signed_release_many(self, n: int) -> list[tuple[bytes, dict[str, str]]]:
        """``n`` requests for every shard of :meth:`add_shards`'s version, one load evidence each."""
        from strongroom.access.evidence import make_load_evidence

        key = self.people["alice"].private_key
        pairs = [(e["path"], e["blob"]) for e in self.many]
        return [self._signed("/v1/keys/release-many", {
            "artifact": self.many_ref, "shards": [p for p, _ in pairs], "purpose": "load",
            "evidence": make_load_evidence(key, artifact=self.many_ref, shards=pairs,
                                           purpose="load", ttl_s=600)})
            for _ in range(n)]

    def release_many_http(self, item: tuple[bytes, dict[str, str]]) -> None:
        """Send one prepared release-many; fails the run unless every shard's key came back."""
        data = self.send("POST", "/v1/keys/release-many", item[0], item[1])
        keys = json.loads(data)["keys"]
        if len(keys) != len(self.many) or not all(k.get("file_key") for k in keys):
            raise RuntimeError(f"a shard was refused: {[k.get('error') for k in keys]}")

    def keys_many(self, n: int, threads: int) -> tuple[float, float]:
        """Like :meth:`releases` with ``n`` release-many requests: (keys per second, p50 ms)."""
        prepared = self.signed_release_many(n)
        return self._timed(threads, prepared, self.release_many_http, n * len(self.many))

    def releases(self, n: int, threads: int) -> tuple[float, float]:
        """Sign ``n`` releases, then time them from ``threads`` clients: (per second, p50 ms).

        The CPU the timed part cost (not the signing) is added to :attr:`cpu`, and
        this round's CPU per release by process kept in :attr:`last_cpu`.
        """
        return self._timed(threads, self.signed_releases(n), self.over_http, n, keep=True)

    def _timed(self, threads: int, prepared: list[tuple[bytes, dict[str, str]]],
               send: Any, units: int, *, keep: bool = False) -> tuple[float, float]:
        """Send ``prepared`` from ``threads`` clients: (``units`` per second, p50 ms a request).

        This round's CPU per unit by process goes to :attr:`last_cpu`; with ``keep``
        it is also added to :attr:`cpu` (and ``units`` to :attr:`cpu_n`).
        """
        before = self.meter.sample()
        lat, elapsed = _run(threads, prepared, send)
        after = self.meter.sample()
        if keep:
            for k in before:
                self.cpu[k] = self.cpu.get(k, 0.0) + after[k] - before[k]
            self.cpu_n += units
        self.last_cpu = " ".join(f"{k} {(after[k] - before[k]) / units * 1e6:,.0f}"
                                 for k in before)
        return units / elapsed, statistics.median(lat) * 1000


@contextlib.contextmanager
def bench_database(tmp: Path, postgres: str | None) -> Iterator[str]:
    """The deployment's database: SQLite in ``tmp``, or a fresh schema on the PostgreSQL
    server at ``postgres`` (dropped afterwards), as a lab's deployment would use."""
    if not postgres:
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    from testsupport import pg_schema  # the tests' fresh schema, dropped afterwards

    with pg_schema(postgres) as url:
        yield url


def database_arg(ap: argparse.ArgumentParser) -> None:
    """``--postgres URL``: the deployment on PostgreSQL instead of SQLite."""
    ap.add_argument("--postgres", metavar="URL", default=None,
                    help="run the deployment on this PostgreSQL server (a fresh schema, "
                         "dropped after), e.g. $STRONGROOM_TEST_PG_URL after "
                         "scripts/services.sh start; default: SQLite")


@contextlib.contextmanager
def release_server(workers: int, statements: int = 0, history: int = 0,
                   server_env: dict[str, str] | None = None, postgres: str | None = None
                   ) -> Iterator[Rig]:
    """A throwaway vault served by ``strongroom serve --workers N``, set up for releases.

    ``statements`` and ``history``: a lab's past written into the database before
    the server starts (:func:`history.populate`). ``postgres``: a PostgreSQL server
    to hold the deployment's database (:func:`bench_database`).
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    with bench_database(tmp, postgres) as url:
        yield from _release_server(tmp, url, workers, statements, history, server_env)


def _release_server(tmp: Path, url: str, workers: int, statements: int, history: int,
                    server_env: dict[str, str] | None) -> Iterator[Rig]:
    home = tmp / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(home), STRONGROOM_DATABASE_URL=url,
               STRONGROOM_LOG_LEVEL="warning", STRONGROOM_AGENT_IDLE="600")
    env.update(server_env or {})
    os.environ.update({k: env[k] for k in ("STRONGROOM_HOME", "STRONGROOM_DATABASE_URL")})
    store = Store.open(url)
    cust = make_custodians(tmp / "custodians", 3)
    result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                 shares_dir=tmp / "shares",
                                 settings=KeysSettings(key_backend="shamir"))
    assert result.officer_identity is not None
    officer = Identity.load(result.officer_identity)
    if statements or history:
        shares = [(result.share_files[i], cust.identities[i]) for i in (0, 1)]
        print(populate(store, shares, officer, statements_n=statements,
                       history_n=history).describe())
        if url.startswith("sqlite"):
            size = sum(f.stat().st_size for f in tmp.glob("bench.db*"))
            print(f"  database {size / 2**20:,.0f} MiB before the server starts")
    store.close()
    port = _free_port()
    # What `strongroom serve --port P --workers N` runs (without loading every CLI group).
    code = ("from strongroom.cli.serve_cmd import serve; "
            f"serve(port={port}, workers={workers})")
    server = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/v1/sys/seal-status", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        rig = Rig(tmp, base, CpuMeter(server.pid, home),
                  {n: Identity.generate(n) for n in ("officer", "alice", "bob", "carol")},
                  result, cust)
        rig.people["officer"] = officer
        rig.db_url = url
        print(f"deployment: {tmp} ({'PostgreSQL' if url.startswith('postgresql') else 'SQLite'})")
        _setup(rig)
        host, port_text = base.removeprefix("http://").split(":")
        rig.send = RawClient(host, int(port_text)).send
        yield rig
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        from strongroom.errors import StrongroomError
        from strongroom.runtime.services import key_service

        # A no-op when the bench already sealed it. The owned agent seals and exits
        # with serve, so it may be gone (Sealed) or going (its connection reset) by now.
        with contextlib.suppress(StrongroomError):
            key_service(home, start=False).seal()


def main() -> None:
    """Start the server, make a Grant, time releases over HTTP and in-process."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", type=int, default=1000, help="per round")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="timed HTTP rounds (median judged)")
    ap.add_argument("--profile", metavar="PREFIX", help="py-spy the agent during the rounds")
    ap.add_argument("--no-direct", action="store_true",
                    help="skip the agent-socket and in-process comparisons")
    ap.add_argument("--direct-batches", default="", metavar="SIZES",
                    help="also time the in-process gate's release_many at these batch sizes "
                         "(e.g. 1,4,8), interleaved: CPU a release at each, and a batch's "
                         "fixed cost")
    ap.add_argument("--keep", action="store_true",
                    help="keep the deployment's directory (printed) instead of removing it")
    ap.add_argument("--monitor-wait", type=float, default=300.0, metavar="S",
                    help="wait up to S s for the monitor's replay after unseal (0: don't)")
    ap.add_argument("--idle", type=float, default=5.0, metavar="S",
                    help="seconds without requests before the rounds: the background CPU")
    ap.add_argument("--statements", type=int, default=0, metavar="N",
                    help="first store N signed access statements of other people")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="set this in the server's environment (repeatable), e.g. "
                         "STRONGROOM_AUDIT_COMMIT_DELAY_MS=0")
    ap.add_argument("--history", type=int, default=0, metavar="N",
                    help="first write N past key.release entries (last 7 days) and their "
                         "egress ledger rows")
    database_arg(ap)
    args = ap.parse_args()
    print(describe())
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    with release_server(args.workers, args.statements, args.history, server_env,
                        args.postgres) as rig:
        _bench(args, rig)
    if not args.keep:  # with --history the database alone is ~1.4 kB an entry
        shutil.rmtree(rig.tmp, ignore_errors=True)


def _setup(rig: Rig) -> None:
    """Unseal over the API, import a small model, enroll, label, and grant alice."""
    base, people, result, cust = rig.base, rig.people, rig.result, rig.cust
    officer = people["officer"]
    with Client(base, officer) as c:
        for i in (1, 2):
            status = KeyringStatus.from_dict(c.status())
            content = ceremony.read_share_file(result.share_files[i - 1], [cust.identities[i - 1]])
            c.unseal(ceremony.build_submission(status, content))
        rig.unsealed_at = time.time()
        path = rig.tmp / "tiny.safetensors"
        make_model(path)
        c.import_weights(path, "tiny", compartments=("atlas",))  # streamed over the API
        path.unlink()
        _enroll(c, officer, people["alice"], ("requesters",))
        _enroll(c, officer, people["bob"], ("approvers",))
        _enroll(c, officer, people["carol"], ("approvers",))
        lab = ResourceLabel("tiny", level("secret"), ("atlas",),
                            {"load": Rule.parse("2 of approvers")}, serial=1,
                            issued=int(time.time())).sign(officer.private_key)
        c.post("/v1/statements", {"kind": "label", "envelope": lab})
    alice = Client(base, people["alice"])
    req = AccessRequest.new("alice", people["alice"].public.key_id, "tiny", "load", "bench",
                            3600, 1 << 50, time.time()).sign(people["alice"].private_key)
    digest = alice.post("/v1/access/requests", {"envelope": req})["digest"]
    for who in ("bob", "carol"):
        with Client(base, people[who]) as c:
            c.post(f"/v1/access/requests/{digest}/approvals",
                   {"envelope": approve(people[who].private_key, who, req, now=time.time())})
    bundle = alice.get(f"/v1/access/requests/{digest}")
    grant = build_grant(people["alice"].private_key, bundle["envelope"],
                        bundle["approval_envelopes"], now=time.time())
    alice.post("/v1/access/grants", {"envelope": grant})
    manifest = alice.manifest("tiny")["manifest"]
    rig.entry = manifest["files"][0]
    rig.ref = f"{manifest['name']}@{manifest['version']}"
    alice.close()


def _bench(args: argparse.Namespace, rig: Rig) -> None:
    meter, people, ref, entry, send = rig.meter, rig.people, rig.ref, rig.entry, rig.send
    result, cust = rig.result, rig.cust
    key = people["alice"].private_key
    over_http = rig.over_http

    def whoami(headers: dict[str, str]) -> None:
        send("GET", "/v1/whoami", b"", headers)

    # The server's own cost: a signed request that reaches a route but not the gate.
    noop = [sign_request(key, "GET", "/v1/whoami") for _ in range(args.releases // 2)]
    before = meter.sample()
    lat, elapsed = _run(args.threads, noop, whoami)
    _summary(f"signed GET /v1/whoami (no gate), {args.workers} workers", lat, elapsed,
             "requests")
    meter.report(before, meter.sample(), len(noop))
    _run(4, rig.signed_releases(50), over_http)  # warm-up: connections, caches
    _await_monitor(rig, args.monitor_wait)
    if args.idle > 0:  # background work (state guard, monitor) is charged to the releases too
        before, t0 = meter.sample(), time.perf_counter()
        time.sleep(args.idle)
        after, span = meter.sample(), time.perf_counter() - t0
        print(f"  at rest for {args.idle:g} s, CPU ms a second: " + ", ".join(
            f"{k} {(after[k] - before[k]) / span * 1e3:,.0f}" for k in ("server", "agent")))
    rates, p50s = [], []
    with Profiler(args.profile, meter.agent_pid()):
        for r in range(args.rounds):
            rate, p50 = rig.releases(args.releases, args.threads)
            rates.append(rate)
            p50s.append(p50)
            print(f"  round {r + 1}/{args.rounds}: {rate:,.0f} releases/s, p50 {p50:.2f} ms, "
                  f"CPU us a release: {rig.last_cpu} (load average {loadavg()})")
    print(summary(f"HTTP, {args.workers} workers, {args.threads} client threads", rates,
                  "releases/s") + f"; p50 median {statistics.median(p50s):.2f} ms")
    meter.report({k: 0.0 for k in rig.cpu}, rig.cpu, rig.cpu_n)
    http_rate = statistics.median(rates)
    from strongroom.runtime.services import key_service
    from strongroom.settings import Settings

    if args.no_direct:
        return
    if args.workers > 1:
        agent = key_service(Settings().resolved_home, start=False)
        before = meter.sample()
        _direct(args, "key agent over its socket, no HTTP", agent, ref, entry, people["alice"])
        meter.report(before, meter.sample(), args.releases // 2)
        agent.seal()  # the in-process run below unseals its own keyring
    store = Store.open(Settings().resolved_database_url)
    try:
        from strongroom.runtime.services import LocalKeyService

        svc = LocalKeyService(store, KeysSettings(key_backend="shamir"))
        for i in (1, 2):
            content = ceremony.read_share_file(result.share_files[i - 1],
                                               [cust.identities[i - 1]])
            svc.submit_share(ceremony.build_submission(svc.status(), content))
        prefix = f"{args.profile}.inproc" if args.profile else None
        with Profiler(prefix, os.getpid()):
            rate = _direct(args, "in-process gate (LocalKeyService)", svc, ref, entry,
                           people["alice"])
        if args.direct_batches:
            _batches(args, svc, ref, entry, people["alice"])
        svc.seal()
    finally:
        store.close()
    print(f"HTTP / in-process: {http_rate / rate:.2f}")


def _await_monitor(rig: Rig, limit_s: float) -> None:
    """Wait until the agent's monitor loop has caught up with the log (at most ``limit_s``).

    On taking its lease the loop primes the detectors by replaying the log's last
    ``replay_days`` (45): a cost each unseal pays in proportion to the history,
    which would otherwise fall into the first timed rounds. Prints how long it took.
    """
    from strongroom.runtime.monitor_loop import read_lease
    from strongroom.settings import Settings

    if limit_s <= 0:
        return
    mark = time.time()
    store = Store.open(Settings().resolved_database_url)
    try:
        agent = rig.meter.agent_pid()
        cpu0 = _cpu(agent) if agent else 0.0
        while True:
            lease = read_lease(store)
            if lease is not None and lease.caught_up_at >= mark:
                break
            if time.time() - mark > limit_s:
                print(f"  monitor: not caught up with the log after {limit_s:g} s; timing now")
                return
            time.sleep(0.25)
    finally:
        store.close()
    used = (_cpu(agent) - cpu0) if agent else 0.0
    print(f"  monitor caught up with the log {time.time() - mark:.1f} s after the warm-up "
          f"(agent CPU meanwhile {used:.1f} s; since unseal {rig.unsealed_s:.1f} s)")


def _direct(args: argparse.Namespace, label: str, keys: Any, ref: str, entry: dict[str, Any],
            alice: Identity) -> float:
    """The same authorised release through a gate without HTTP (same run)."""
    from strongroom.release import ReleaseRequest

    requests = _requests(ref, entry, alice, args.releases // 2)

    def direct(r: ReleaseRequest) -> None:
        k = keys.release(r)
        k[:] = bytes(len(k))

    lat, elapsed = _run(args.threads, requests, direct)
    return _summary(label, lat, elapsed)


def _requests(ref: str, entry: dict[str, Any], alice: Identity, n: int) -> list[Any]:
    """``n`` release requests for the shard ``entry``, each with fresh evidence of alice's."""
    from strongroom.crypto.age import read_header
    from strongroom.release import ReleaseRequest
    from strongroom.settings import Settings
    from strongroom.vault.blobs import blob_store_from_settings

    source = blob_store_from_settings(Settings()).open(entry["blob"])
    try:
        header, _ = read_header(source)
    finally:
        source.close()
    return [ReleaseRequest(
        principal="alice", principal_key=alice.public.public_bytes, artifact=ref,
        shard=entry["path"], blob_id=entry["blob"], nbytes=int(entry["size"]), purpose="load",
        evidence=make_evidence(alice.private_key, artifact=ref, shard=entry["path"],
                               blob_id=entry["blob"], purpose="load", ttl_s=600),
        stanzas=tuple(header.stanzas)) for _ in range(n)]


def _batches(args: argparse.Namespace, keys: Any, ref: str, entry: dict[str, Any],
             alice: Identity) -> None:
    """The in-process gate's ``release_many`` at each of ``--direct-batches``, interleaved.

    One thread sends the batches one after another, as a worker's batches reach the
    agent. Printed: releases/s and the CPU a release (``time.process_time``: every
    thread of this process, the gate's background threads included) at each size, and
    the fit ``CPU = each + fixed / size`` through the smallest and largest size, which
    splits a release's cost into its own and its share of its batch's fixed cost.
    """
    sizes = sorted({int(b) for b in args.direct_batches.split(",") if b.strip()})
    if not sizes or sizes[0] < 1:
        raise SystemExit("--direct-batches takes sizes of at least 1")
    n = max(args.releases // 2, sizes[-1])
    cpu: dict[int, list[float]] = {b: [] for b in sizes}

    def subject(b: int) -> Callable[[int], float]:
        def run(_: int) -> float:
            requests = _requests(ref, entry, alice, n - n % b)  # fresh evidence, not timed
            t0, w0 = time.process_time(), time.perf_counter()
            for i in range(0, len(requests), b):
                answers = keys.release_many(requests[i:i + b])
                for key in answers:
                    if isinstance(key, bytearray):
                        key[:] = bytes(len(key))
                refused = [a for a in answers if not isinstance(a, bytearray)]
                if refused:
                    raise RuntimeError(f"a release was refused: {refused[0]}")
            wall, used = time.perf_counter() - w0, time.process_time() - t0
            cpu[b].append(used / len(requests) * 1e6)
            return len(requests) / wall
        return run

    print(f"\n== the in-process gate's release_many, batches of {', '.join(map(str, sizes))}, "
          f"{n} releases a round, interleaved")
    rates = interleave(args.rounds, {f"batches of {b}": subject(b) for b in sizes})
    for b in sizes:
        print(summary(f"batches of {b}", rates[f"batches of {b}"], "releases/s")
              + f"; CPU {statistics.median(cpu[b]):,.0f} us a release (median)")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        c_lo, c_hi = statistics.median(cpu[lo]), statistics.median(cpu[hi])
        fixed = (c_lo - c_hi) / (1 / lo - 1 / hi)
        print(f"fit through {lo} and {hi}: each release ~{c_hi - fixed / hi:,.0f} us, a batch's "
              f"fixed cost ~{fixed:,.0f} us (~{fixed / 4:,.0f} us a release at 4 a batch, what "
              f"8 clients give one worker); load average {loadavg()}")


if __name__ == "__main__":
    main()

"""Authorised key releases through HAProxy over 1, 2 and 3 ``strongroom serve`` hosts.

    source /tmp/sr-services.env   # or what `scripts/services.sh start` prints
    .venv/bin/python bench/cluster.py [--releases 600] [--rounds 5] [--threads 8] [--workers 1]
                                      [--clients-per-host 4]

The cluster of ``tests/cluster`` (:mod:`cluster_kit`): three hosts on one
PostgreSQL schema and one S3 bucket (private, removed afterwards), each with
its own key agent, unsealed over its API, and one HAProxy with three
round-robin listeners: over host A, over A and B, over A, B and C. Each round
times ``--releases`` releases through each listener, the order alternating
round by round (bench/machine.py ``interleave``); the median round is judged,
the best printed beside it, the load average after each round.

Besides the rate, each run prints the CPU per release of the serving hosts
(every process of their ``serve``: uvicorn workers and key agent), of HAProxy
and of the load generator: on a machine with fewer cores than hosts the rate
cannot grow with the hosts, but the CPU a release costs must not. With a fixed
number of clients, more hosts also means fewer concurrent requests per host,
so smaller audit and ledger batches (one transaction each) and more CPU per
release for that reason alone; ``--clients-per-host`` keeps each host's
concurrency the same, which isolates what the hosts cost each other. The CPU
of the hosts not behind the listener (they follow the shared log and check the
ledger) is printed too: what one release costs every other host. At the end
every release acknowledged must have exactly one ``key.release`` entry in the
shared log, whichever host released it.

The load is closed-loop (``--threads`` clients, bench/server.py ``RawClient``:
keep-alive, prepared bytes); requests are signed just before their round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "cluster"), str(HERE)]

from cluster_kit import Cluster, Host, s3_env  # noqa: E402

from machine import bench_module, describe, interleave, summary  # noqa: E402
from strongroom.server.signatures import sign_request  # noqa: E402

from testsupport import pg_schema  # noqa: E402

ROUTE = "/v1/keys/release"
#: bench/server.py: the closed-loop runner, the keep-alive load client, CPU of a process tree.
server_bench = bench_module("server")


def _cpu_of(hosts: list[Host]) -> float:
    """CPU seconds so far of every process of these hosts' ``serve`` (workers, agent)."""
    return sum(server_bench._cpu(p) for h in hosts if h.proc is not None
               for p in server_bench._tree(h.proc.pid))


def _idle_rates(hosts: list[Host], seconds: float = 5.0) -> dict[str, float]:
    """Each host's CPU seconds per second while nothing is asked of it."""
    before = {h.name: _cpu_of([h]) for h in hosts}
    time.sleep(seconds)
    return {h.name: (_cpu_of([h]) - before[h.name]) / seconds for h in hosts}


def main() -> None:
    """Start the cluster, then time releases through 1, 2 and 3 hosts, interleaved."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", type=int, default=600, help="releases per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--clients-per-host", type=int, default=0,
                    help="instead of --threads: this many clients per host behind the "
                    "listener, so every host sees the same concurrency (and batch sizes) "
                    "whatever the number of hosts")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers per host")
    args = ap.parse_args()
    base, s3 = os.environ.get("STRONGROOM_TEST_PG_URL"), s3_env()
    if not base or s3 is None:
        raise SystemExit("needs PostgreSQL and S3: set STRONGROOM_TEST_PG_URL and "
                         "STRONGROOM_TEST_S3_* (source what scripts/services.sh start prints)")
    print(describe(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    with pg_schema(base) as url, Cluster.start(tmp, url, s3, hosts=3,
                                               workers=args.workers) as c:
        spans = {f"{k} host{'s' if k > 1 else ''}": c.hosts[:k] for k in (1, 2, 3)}
        c.proxy({f"h{k}": c.hosts[:k] for k in (1, 2, 3)})
        assert c.haproxy is not None
        c.setup_people(c.listener("h3")).grant_load("alice")
        start = len(c.audit_events())
        assert c.world is not None
        key = c.world.people["alice"].private_key
        idle = _idle_rates(c.hosts)
        print("idle CPU (monitor loop, state guard, health checks), CPU s/s: " + ", ".join(
            f"{h.name} {idle[h.name]:.3f}" for h in c.hosts), flush=True)
        nonces: list[str] = []
        cpu: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in spans}
        #: CPU per release of the hosts not behind the listener (following the shared log,
        #: the ledger check), less their idle CPU: what a release costs the other hosts.
        others: dict[str, list[float]] = {name: [] for name in spans if len(spans[name]) < 3}

        def subject(name: str, k: int) -> object:
            send = server_bench.RawClient("127.0.0.1", c.listeners[f"h{k}"]).send

            def one(item: tuple[bytes, dict[str, str]]) -> None:
                send("POST", ROUTE, item[0], item[1])

            def run(_round: int) -> float:
                items = []
                for _ in range(args.releases):
                    nonce, body = c.release_body("alice")
                    nonces.append(nonce)
                    items.append((body, {**sign_request(key, "POST", ROUTE, body),
                                         "content-type": "application/json"}))
                server_bench._run(2, items[:20], one)  # each client thread's connection through HAProxy
                cpu_of = server_bench._cpu
                hosts, proxy, me = _cpu_of(spans[name]), cpu_of(c.haproxy.pid), cpu_of(os.getpid())
                rest = [h for h in c.hosts if h not in spans[name]]
                rest_before = _cpu_of(rest)
                clients = args.clients_per_host * k if args.clients_per_host else args.threads
                latencies, elapsed = server_bench._run(clients, items[20:], one)
                n = len(latencies)
                used = _cpu_of(spans[name]) - hosts
                background = sum(idle[h.name] for h in spans[name]) * elapsed
                if rest:
                    rest_idle = sum(idle[h.name] for h in rest) * elapsed
                    others[name].append((_cpu_of(rest) - rest_before - rest_idle) / n / len(rest))
                cpu[name].append((used / n, (used - background) / n,
                                  (cpu_of(c.haproxy.pid) - proxy) / n, (cpu_of(os.getpid()) - me) / n))
                return n / elapsed

            return run

        clients = (f"{args.clients_per_host} clients a host" if args.clients_per_host
                   else f"{args.threads} clients")
        print(f"{args.releases} releases a run, {clients}, --workers {args.workers} "
              "a host; releases/s by hosts behind HAProxy:", flush=True)
        rates = interleave(args.rounds, {name: subject(name, k)
                                         for k, name in enumerate(spans, start=1)})
        print()
        for name, samples in rates.items():
            per = cpu[name]
            ms = [statistics.median(p[i] for p in per) * 1e3 for i in range(4)]
            print(summary(name, samples, "releases/s") + f"; CPU per release (median): hosts "
                  f"{ms[0]:.2f} ms ({ms[1]:.2f} ms less their idle CPU), HAProxy {ms[2]:.2f} ms, "
                  f"load generator {ms[3]:.2f} ms")
            if others.get(name):
                print(f"  each host not behind the listener: "
                      f"{statistics.median(others[name]) * 1e3:.2f} ms per release served "
                      "by the others (less its idle CPU)")
        time.sleep(0.5)
        logged = c.releases_by_nonce(start)
        missing = [n for n in nonces if len(logged.get(n, [])) != 1]
        servers = Counter(str(e.details.get("server")) for entries in logged.values()
                          for e in entries)
        print(f"audit: {len(nonces)} releases acknowledged, {len(nonces) - len(missing)} with "
              f"exactly one key.release entry; by host {dict(sorted(servers.items()))}")
        if missing:
            raise SystemExit(f"{len(missing)} acknowledged releases lack exactly one entry")


if __name__ == "__main__":
    main()

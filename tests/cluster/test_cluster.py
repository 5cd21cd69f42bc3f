"""Three ``strongroom serve`` hosts behind HAProxy, sharing PostgreSQL and S3 (``make test-cluster``).

One cluster for the module (:mod:`cluster_kit`): a private schema in the
test PostgreSQL, a private bucket in the test SeaweedFS, three hosts each with
its own data directory, host id and key agent, unsealed over their own APIs,
and HAProxy balancing round-robin with ``GET /readyz`` health checks every
200 ms. The tests run in file order; the last one kills a host.

1. Releases through the proxy spread over the three hosts, and each entry
   names the host that answered (HAProxy's ``X-Served-By`` = ``details.server``).
2. An egress cap sized to N releases lets exactly N through across the hosts;
   every other attempt is refused with the same error type and message.
3. ``seal`` on one host takes it out of rotation within a few check intervals;
   releases keep succeeding on the others, and it rejoins once unsealed.
4. ``kill -9`` of one host under load: every release the client got a key for
   has exactly one audit entry (from the host that answered), ``strongroom
   audit verify`` passes, the killed host's agent is gone, and the other hosts
   keep serving.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cluster_kit import CHECK_INTERVAL_MS, HAPROXY, Cluster, Release, s3_env

from strongroom.runtime.services import key_service

from testsupport import need_service, pg_schema

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

#: How long HAProxy may take to act on a failed or passed health check here (2 checks
#: of 200 ms nominally; the machine running the suite is shared and busy).
REACT_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")
    need_service("STRONGROOM_TEST_S3_ENDPOINT", "S3 (SeaweedFS)")
    if not os.access(HAPROXY, os.X_OK):
        pytest.fail(f"{HAPROXY} is not installed (scripts/system-deps.sh installs haproxy)")
    tmp = tmp_path_factory.mktemp("cluster")
    with pg_schema(base) as url, Cluster.start(tmp, url, s3_env(), hosts=3) as c:
        c.proxy({"sr": c.hosts})
        c.setup_people(c.listener("sr")).grant_load("alice")
        yield c


class Load:
    """Threads releasing as ``who`` through the proxy until stopped; (finished at, Release)."""

    def __init__(self, cluster: Cluster, who: str, threads: int = 4) -> None:
        self.cluster, self.who = cluster, who
        self.results: list[tuple[float, Release]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.cluster.listener("sr"), timeout=60) as http:
            while not self._stop.is_set():
                r = self.cluster.release(self.who, http)
                with self._lock:
                    self.results.append((time.monotonic(), r))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def acked(self, since: float = 0.0) -> list[Release]:
        with self._lock:
            return [r for t, r in self.results if t > since and r.key]

    def wait_acked(self, n: int, since: float = 0.0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked(since)) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked(since))} of {n} releases"
            time.sleep(0.05)


def _concurrently(cluster: Cluster, who: str, attempts: int, threads: int) -> list[Release]:
    """``attempts`` releases by ``who`` from ``threads`` clients at once, through the proxy."""
    out: list[Release] = []
    lock = threading.Lock()
    todo = iter(range(attempts))
    start = threading.Barrier(threads)

    def client() -> None:
        with httpx.Client(base_url=cluster.listener("sr"), timeout=60) as http:
            start.wait()
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                r = cluster.release(who, http)
                with lock:
                    out.append(r)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    return out


def _served(cluster: Cluster, got: list[Release], start: int = 0) -> Counter[str]:
    """Which host released each of ``got``, checked entry by entry against the proxy's header."""
    logged = cluster.releases_by_nonce(start)
    servers: Counter[str] = Counter()
    for r in got:
        entries = logged.get(r.nonce, [])
        assert len(entries) == 1, f"release {r.nonce} has {len(entries)} audit entries"
        assert entries[0].details["server"] == r.backend, (entries[0].details, r.backend)
        servers[str(r.backend)] += 1
    return servers


def test_releases_spread_over_the_hosts(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.listener("sr"), timeout=60) as http:
        got = [cluster.release("alice", http) for _ in range(30)]
    assert all(r.key for r in got), [r.body for r in got if not r.key]
    servers = _served(cluster, got)
    assert set(servers) == {h.name for h in cluster.hosts}, servers
    assert min(servers.values()) >= 8, servers  # round-robin: 10 each


def test_an_egress_cap_holds_exactly_across_hosts(cluster: Cluster) -> None:
    n = 5
    assert cluster.world is not None
    cluster.world.grant_load("dave")
    cap_gib = n * cluster.shard_size / 2**30  # exact: a division by a power of two
    out = cluster.hosts[0].cli("monitor", "budget", "principal", "dave", repr(cap_gib))
    assert out.returncode == 0, out.stderr
    start = len(cluster.audit_events())

    got = _concurrently(cluster, "dave", attempts=4 * n, threads=4)
    allowed = [r for r in got if r.key]
    refused = [r for r in got if not r.key]
    assert len(allowed) == n, [(r.status, r.body) for r in got]
    assert len(refused) == 3 * n
    kinds = {(r.status, r.body.get("type"), r.body.get("error")) for r in refused}
    cap = n * cluster.shard_size
    assert kinds == {(429, "BudgetExceeded", f"releasing {cluster.shard_size} bytes would exceed "
                      f"the egress budget principal dave / 24 h ({cap} of {cap} bytes used)")}, kinds
    assert len(_served(cluster, allowed, start)) >= 2  # the cap was shared, not one host's
    denied = [e for e in cluster.audit_events(start)
              if e.action == "key.release" and e.decision == "deny" and e.actor == "dave"]
    assert len(denied) == 3 * n and {e.details["error"] for e in denied} == {"BudgetExceeded"}


def test_seal_takes_a_host_out_of_rotation(cluster: Cluster) -> None:
    from server_kit import SignedClient

    b = cluster.hosts[1]
    with Load(cluster, "alice", threads=2) as load:
        load.wait_acked(10)
        with httpx.Client(base_url=b.url, timeout=60) as direct:
            r = SignedClient(direct, cluster.officer).post("/v1/sys/seal")
        assert r.status_code == 200 and r.json()["sealed"] is True, r.text
        sealed = time.monotonic()
        took = cluster.wait_state("sr", b.name, "DOWN", REACT_S)
        assert took is not None, cluster.server_states()
        out_at = sealed + took
        load.wait_acked(20, since=out_at + CHECK_INTERVAL_MS / 1000)
    after = [r for t, r in load.results if t > out_at + CHECK_INTERVAL_MS / 1000]
    assert all(r.key for r in after), [r.body for r in after if not r.key]
    assert b.name not in _served(cluster, after)
    # between the seal and HAProxy's reaction only the sealed host refused, as Sealed
    failed = [r for _, r in load.results if not r.key]
    assert {(r.backend, r.status, r.body.get("type")) for r in failed} <= {(b.name, 503, "Sealed")}
    print(f"sealed host out of rotation after {took:.2f} s "
          f"({len(failed)} releases refused as Sealed meanwhile)")

    cluster.unseal(b)
    assert cluster.wait_state("sr", b.name, "UP", REACT_S) is not None
    with httpx.Client(base_url=cluster.listener("sr"), timeout=60) as http:
        again = [cluster.release("alice", http) for _ in range(9)]
    assert b.name in _served(cluster, again)


def test_kill_9_of_a_host_under_load_loses_no_acknowledged_release(cluster: Cluster) -> None:
    victim = cluster.hosts[2]
    start = len(cluster.audit_events())
    with Load(cluster, "alice", threads=4) as load:
        load.wait_acked(30)
        assert any(r.backend == victim.name for r in load.acked()), "no load on the victim yet"
        cluster.kill(victim)
        killed = time.monotonic()
        took = cluster.wait_state("sr", victim.name, "DOWN", REACT_S)
        assert took is not None, cluster.server_states()
        settled = killed + took + CHECK_INTERVAL_MS / 1000
        load.wait_acked(40, since=settled)
    acked = [r for _, r in load.results if r.key]
    servers = _served(cluster, acked, start)  # exactly one entry each, by the host that answered
    assert servers[victim.name] >= 1 and len(servers) == 3, servers
    after = [r for t, r in load.results if t > settled]
    assert all(r.key for r in after), [(r.status, r.body) for r in after if not r.key]
    assert victim.name not in _served(cluster, after, start)
    lost = [r for _, r in load.results if not r.key]
    logged = cluster.releases_by_nonce(start)
    print(f"kill -9: out of rotation after {took:.2f} s; {len(acked)} releases acknowledged, "
          f"{len(lost)} in flight failed ({Counter(r.status for r in lost)}), "
          f"{sum(r.nonce in logged for r in lost)} of those logged before the answer was lost")
    assert all(r.status in (0, 502, 503) for r in lost), [(r.status, r.body) for r in lost]

    deadline = time.monotonic() + 10  # its agent sealed: serve's lifeline took it down
    while key_service(Path(victim.home)).client.running():
        assert time.monotonic() < deadline, "the killed host's agent is still running"
        time.sleep(0.1)
    verify = cluster.hosts[0].cli("audit", "verify")
    assert verify.returncode == 0 and "ok" in verify.stdout, verify.stdout + verify.stderr

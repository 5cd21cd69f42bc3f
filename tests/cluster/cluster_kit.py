"""Several ``strongroom serve`` hosts behind a real HAProxy, on loopback ports.

What ``docs/operations.md`` ("Production: several hosts") describes, started
for real: one PostgreSQL schema and one S3 bucket shared by every host, each
host its own data directory, host id and key agent (``serve`` owns it),
unsealed over its own API by the same two custodians, and an HAProxy that
balances round-robin over the hosts and takes out of rotation any host whose
``GET /readyz`` is not 200 (health checked every :data:`CHECK_INTERVAL_MS`).

    with Cluster.start(tmp, db_url, s3_env, hosts=3) as cluster:
        cluster.proxy({"sr": cluster.hosts})      # one HAProxy listener over all three
        cluster.setup_people()                    # model imported, alice/bob/carol/eve/dave
        cluster.release("alice", via=cluster.listener("sr"))

Used by ``tests/cluster/test_cluster.py`` and ``bench/cluster.py``; the
processes it starts (serve, its agent and workers, haproxy) are stopped by
:meth:`Cluster.close`, and the bucket's objects and the bucket itself removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# The server tests' kit (signed client, people, unseal over the API) lives beside them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from server_kit import ServerWorld, SignedClient, _free_port, unseal_over_api

from strongroom.access.directory import ResourceLabel, Rule, level
from strongroom.access.evidence import make_evidence
from strongroom.audit.entry import AuditEvent
from strongroom.keys.identity import Identity
from strongroom.server.client import Client, KnownServers
from strongroom.store.db import Store

from cli_fixtures import strongroom_exe
from keyring_fixtures import init_shamir
from vault_fixtures import make_model

HAPROXY = "/usr/sbin/haproxy"
ARTIFACT = "tiny"
#: HAProxy's health check interval; a host is taken out after 2 failures, back after 2 passes.
CHECK_INTERVAL_MS = 200


def s3_env() -> dict[str, str] | None:
    """The shared SeaweedFS's settings for a private bucket, or None when it is not configured."""
    endpoint = os.environ.get("STRONGROOM_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    return {"STRONGROOM_BLOB_STORE": "s3", "STRONGROOM_S3_ENDPOINT": endpoint,
            "STRONGROOM_S3_BUCKET": "sr-cluster-" + secrets.token_hex(4),
            "STRONGROOM_S3_ACCESS_KEY": os.environ["STRONGROOM_TEST_S3_ACCESS_KEY"],
            "STRONGROOM_S3_SECRET_KEY": os.environ["STRONGROOM_TEST_S3_SECRET_KEY"]}


@dataclass
class Host:
    """One ``strongroom serve`` (its own home and host id) on a loopback port."""

    name: str
    home: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``strongroom ARGS`` on this host (its home: the CLI reaches serve's agent)."""
        return subprocess.run([strongroom_exe(), *args], env=self.env, capture_output=True,
                              text=True, timeout=120)


@dataclass
class Release:
    """One release asked through the proxy: what the client saw."""

    nonce: str
    status: int
    backend: str | None
    body: dict[str, Any]

    @property
    def key(self) -> bool:
        """Whether the client got a file key (an acknowledged release)."""
        return self.status == 200 and bool(self.body.get("file_key"))


@dataclass
class Cluster:
    """Hosts sharing one database and one bucket, an HAProxy, and the people of the tests."""

    tmp: Path
    db_url: str
    shared_env: dict[str, str]
    officer: Identity
    init: Any
    custodians: Any
    hosts: list[Host] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    listeners: dict[str, int] = field(default_factory=dict)
    world: ServerWorld | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    # -- starting --------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(cls, tmp: Path, db_url: str, s3: dict[str, str] | None, hosts: int = 3,
              workers: int = 1) -> Iterator[Cluster]:
        """Initialise a 2-of-3 vault on ``db_url``, start and unseal ``hosts`` servers."""
        store = Store.open(db_url)
        try:
            result, cust = init_shamir(store, tmp)
        finally:
            store.close()
        assert result.officer_identity is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        env.update(STRONGROOM_DATABASE_URL=db_url, STRONGROOM_LOG_LEVEL="warning",
                   STRONGROOM_KNOWN_SERVERS=str(tmp / "known_servers"), **(s3 or {}))
        cluster = cls(tmp, db_url, env, Identity.load(result.officer_identity), result, cust)
        try:
            for i in range(hosts):
                cluster.hosts.append(cluster._start_host(f"host-{'abcdefgh'[i]}", workers))
            for host in cluster.hosts:
                cluster.wait_answering(host)
                cluster.unseal(host)
            yield cluster
        finally:
            cluster.close(s3)

    def _start_host(self, name: str, workers: int) -> Host:
        home = self.tmp / name
        env = dict(self.shared_env, STRONGROOM_HOME=str(home), STRONGROOM_HOST_ID=name)
        host = Host(name, home, _free_port(), env)
        self.serve(host, workers)
        return host

    def serve(self, host: Host, workers: int = 1) -> None:
        """Start (or restart) ``strongroom serve`` for ``host``; it comes up sealed."""
        log = (self.tmp / f"{host.name}.log").open("ab")
        host.proc = subprocess.Popen(
            [strongroom_exe(), "serve", "--port", str(host.port), "--workers", str(workers)],
            env=host.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_answering(self, host: Host, timeout: float = 90) -> None:
        """Until ``host`` answers ``/livez``; fails with its log if serve exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(host.url + "/livez", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert host.proc is not None
            if host.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{host.name} did not start: "
                                     + (self.tmp / f"{host.name}.log").read_text()[-3000:])
            time.sleep(0.2)

    def unseal(self, host: Host) -> None:
        """Two custodians submit their shares to ``host``'s own API (its ceremony nonce)."""
        with httpx.Client(base_url=host.url, timeout=60) as http:
            unseal_over_api(SignedClient(http, None), self.tmp, self.init, self.custodians)

    def kill(self, host: Host) -> None:
        """``kill -9`` of serve alone: its workers and agent must follow it (lifeline)."""
        assert host.proc is not None
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(10)

    # -- the proxy -------------------------------------------------------------------

    def proxy(self, listeners: dict[str, list[Host]]) -> None:
        """Start HAProxy: one round-robin listener per entry, over those hosts."""
        sections = []
        for name, members in listeners.items():
            port = self.listeners[name] = _free_port()
            servers = "\n".join(f"  server {h.name} 127.0.0.1:{h.port} check"
                                for h in members)
            sections.append(f"""
listen {name}
  bind 127.0.0.1:{port}
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter {CHECK_INTERVAL_MS} fastinter {CHECK_INTERVAL_MS} fall 2 rise 2
  http-response set-header X-Served-By %s
{servers}
""")
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(f"""global
  maxconn 2000
  stats socket {self.tmp / 'haproxy.sock'} mode 600 level admin

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # a host busy with releases may take longer than an interval to answer /readyz
  timeout check 2s
  retries 2
  option redispatch
""" + "".join(sections))
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (self.tmp / "haproxy.log").open("ab")
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        for name, members in listeners.items():
            for h in members:
                assert self.wait_state(name, h.name, "UP", 30) is not None, \
                    f"{h.name} never came UP in {name}: {self.server_states()}"

    def listener(self, name: str) -> str:
        return f"http://127.0.0.1:{self.listeners[name]}"

    def server_states(self) -> dict[tuple[str, str], str]:
        """HAProxy's view, ``(listener, host) -> status`` (UP, DOWN, ...), from its stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.tmp / "haproxy.sock"))
            s.sendall(b"show stat\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        lines = out.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
        return {(r["pxname"], r["svname"]): r["status"].split()[0] for r in rows
                if r["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_state(self, listener: str, host: str, state: str, timeout: float) -> float | None:
        """Seconds until HAProxy reports ``host`` in ``state`` in ``listener``; None if never."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(OSError, IndexError):
                if self.server_states().get((listener, host)) == state:
                    return time.monotonic() - t0
            time.sleep(0.02)
        return None

    # -- people and releases ---------------------------------------------------------

    def setup_people(self, via: str) -> ServerWorld:
        """Through ``via``: import the model, enroll alice/bob/carol/dave/eve, label it."""
        http = httpx.Client(base_url=via, timeout=60)
        # No in-process context: the hosts are subprocesses; ServerWorld's signed helpers
        # (enroll, grant_load) need only the HTTP client and the people.
        world = ServerWorld(None, http, self.officer, tmp=self.tmp)  # type: ignore[arg-type]
        path = self.tmp / "tiny.safetensors"
        make_model(path)
        with Client(via, self.officer,
                    known_servers=KnownServers(self.tmp / "known_servers")) as officer:
            officer.import_weights(path, ARTIFACT, compartments=("atlas",))
        path.unlink()
        for name, roles in (("alice", ("requesters",)), ("bob", ("approvers",)),
                            ("carol", ("approvers",)), ("dave", ("requesters",)),
                            ("eve", ("auditors",))):
            world.enroll(name, roles)
        lab = ResourceLabel(ARTIFACT, level("secret"), ("atlas",),
                            {"load": Rule.parse("2 of approvers")}, serial=1,
                            issued=int(time.time())).sign(self.officer.private_key)
        r = world.client("officer").post("/v1/statements", {"kind": "label", "envelope": lab})
        assert r.status_code == 201, r.text
        time.sleep(1.2)  # other hosts' one-second principal cache learns the new keys
        self.world = world
        self.manifest = world.client("alice").get(f"/v1/weights/{ARTIFACT}/manifest").json()[
            "manifest"]
        return world

    @property
    def shard_size(self) -> int:
        """Plaintext bytes one release of the model's shard opens (the egress charge)."""
        return int(self.manifest["files"][0]["size"])

    def release_body(self, who: str) -> tuple[str, bytes]:
        """A fresh release request body for ``who`` and its evidence nonce."""
        assert self.world is not None
        m, entry = self.manifest, self.manifest["files"][0]
        ref = f"{m['name']}@{m['version']}"
        evidence = make_evidence(self.world.people[who].private_key, artifact=ref,
                                 shard=entry["path"], blob_id=entry["blob"], purpose="load",
                                 ttl_s=600)
        envelope = json.loads(json.loads(evidence)["release"])
        nonce = json.loads(base64.b64decode(envelope["payload"]))["nonce"]
        body = {"artifact": ref, "shard": entry["path"], "purpose": "load",
                "evidence": evidence}
        return nonce, json.dumps(body).encode()

    def release(self, who: str, http: httpx.Client) -> Release:
        """One signed release by ``who`` over ``http``; a transport error is status 0."""
        assert self.world is not None
        nonce, raw = self.release_body(who)
        try:
            r = SignedClient(http, self.world.people[who]).request(
                "POST", "/v1/keys/release", raw=raw)
        except httpx.TransportError:
            return Release(nonce, 0, None, {})
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text[:300]}
        return Release(nonce, r.status_code, r.headers.get("x-served-by"), body)

    # -- the log ---------------------------------------------------------------------

    def audit_events(self, start: int = 0) -> list[AuditEvent]:
        """Every audit entry from ``start``, read from the shared database."""
        from sqlalchemy import select

        from strongroom.store.tables.audit import AuditEntry

        store = Store.open(self.db_url)
        try:
            with store.session(readonly=True) as s:
                bodies = s.scalars(select(AuditEntry.body).where(AuditEntry.idx >= start)
                                   .order_by(AuditEntry.idx)).all()
        finally:
            store.close()
        return [AuditEvent.from_body(b) for b in bodies]

    def releases_by_nonce(self, start: int = 0) -> dict[str, list[AuditEvent]]:
        """The allowed ``key.release`` entries from ``start``, by their evidence nonce."""
        out: dict[str, list[AuditEvent]] = {}
        for ev in self.audit_events(start):
            if ev.action == "key.release" and ev.decision == "allow":
                out.setdefault(str(ev.details.get("nonce")), []).append(ev)
        return out

    # -- stopping --------------------------------------------------------------------

    def close(self, s3: dict[str, str] | None) -> None:
        """Stop HAProxy and every host (process groups), then empty and remove the bucket."""
        procs = [self.haproxy] + [h.proc for h in self.hosts]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        if self.world is not None:
            self.world.http.close()
        if s3:
            _remove_bucket(s3)


def _remove_bucket(s3: dict[str, str]) -> None:
    """Delete the private bucket and its objects (nothing else in the shared SeaweedFS)."""
    from botocore.exceptions import ClientError

    from strongroom.vault.blobs.s3 import S3BlobStore

    client = S3BlobStore(s3["STRONGROOM_S3_BUCKET"], endpoint_url=s3["STRONGROOM_S3_ENDPOINT"],
                         region="us-east-1", access_key=s3["STRONGROOM_S3_ACCESS_KEY"],
                         secret_key=s3["STRONGROOM_S3_SECRET_KEY"], create_bucket=False).client
    bucket = s3["STRONGROOM_S3_BUCKET"]
    with contextlib.suppress(ClientError):  # a bucket never created has nothing to remove
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)

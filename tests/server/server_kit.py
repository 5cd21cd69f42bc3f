"""A real strongroom behind the HTTP API for the server tests.

A 2-of-3 keyring initialised with the bootstrap officer, unsealed *over the
API* by two custodians, one weights artifact imported, alice (requester),
bob and carol (approvers) and eve (auditor) enrolled by the officer, the
artifact labelled "load needs 2 of approvers". Requests go through a signing
client (:class:`SignedClient`) over either the ASGI app in-process or a real
uvicorn on a loopback port.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from strongroom.access.approvals import AccessRequest, approve
from strongroom.access.directory import (
    Enrollment,
    KeyRevocation,
    ResourceLabel,
    Rule,
    Vetting,
    level,
)
from strongroom.access.grants import build_grant
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import KeyringStatus
from strongroom.server.app import create_app
from strongroom.server.context import ServerContext
from strongroom.server.signatures import sign_request
from strongroom.settings import Settings
from strongroom.store.db import Store

import cli_zygote
from cli_fixtures import strongroom_exe
from keyring_fixtures import make_custodians
from testsupport import need_service, pg_schema
from vault_fixtures import make_model

YEAR = 365 * 24 * 3600
ARTIFACT = "tiny"


class SignedClient:
    """An httpx client that signs every request as ``identity`` (or sends it unsigned)."""

    def __init__(self, http: httpx.Client, identity: Identity | None) -> None:
        self.http = http
        self.identity = identity

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        req = self.http.build_request(method, path, content=content,
                                      headers={"content-type": "application/json",
                                               **(headers or {})})
        if self.identity is not None:
            target = req.url.raw_path.decode("ascii")
            req.headers.update(sign_request(self.identity.private_key, method, target,
                                            content))
        return self.http.send(req)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, body, **kw)


@dataclass
class ServerWorld:
    ctx: ServerContext
    http: httpx.Client
    officer: Identity
    people: dict[str, Identity] = field(default_factory=dict)
    model: dict[str, np.ndarray] = field(default_factory=dict)
    tmp: Path = Path(".")
    #: Unseals another host of this world's database over its API (the same shares).
    unseal_host: Any = None

    def client(self, who: str | None) -> SignedClient:
        ident = None if who is None else (self.officer if who == "officer" else self.people[who])
        return SignedClient(self.http, ident)

    def enroll(self, name: str, roles: tuple[str, ...], clearance: str = "secret",
               compartments: tuple[str, ...] = ("atlas",)) -> Identity:
        ident = self.people.get(name) or Identity.generate(name)
        self.people[name] = ident
        now = int(time.time())
        env = Enrollment(name=name, key=ident.public.public_bytes, roles=roles,
                         clearance=level(clearance), compartments=compartments,
                         vetting=Vetting("active", now - 10, now + YEAR), serial=1,
                         issued=now).sign(self.officer.private_key)
        r = self.client("officer").post("/v1/statements", {"kind": "enrollment", "envelope": env})
        assert r.status_code == 201, r.text
        return ident

    def revoke_key(self, name: str) -> None:
        env = KeyRevocation(self.people[name].public.key_id, "test", int(time.time())).sign(
            self.officer.private_key)
        r = self.client("officer").post("/v1/statements", {"kind": "revocation", "envelope": env})
        assert r.status_code == 201, r.text

    def list_for_break_glass(self, *names: str, serial: int = 2) -> None:
        """Relabel the artifact (newer serial) so that ``names`` may take break-glass on it."""
        lab = ResourceLabel(ARTIFACT, level("secret"), ("atlas",),
                            {"load": Rule.parse("2 of approvers")}, break_glass=names,
                            serial=serial, issued=int(time.time())).sign(self.officer.private_key)
        r = self.client("officer").post("/v1/statements", {"kind": "label", "envelope": lab})
        assert r.status_code == 201, r.text

    def grant_load(self, who: str = "alice", approvers: tuple[str, ...] = ("bob", "carol"),
                   resource: str = ARTIFACT, *, byte_budget: int = 1 << 40) -> str:
        """Request, approve and grant over the API, each party signing with its own key."""
        me = self.people[who]
        req = AccessRequest.new(who, me.public.key_id, resource, "load", "test", 3600,
                                byte_budget, time.time()).sign(me.private_key)
        r = self.client(who).post("/v1/access/requests", {"envelope": req})
        assert r.status_code == 201, r.text
        digest = r.json()["digest"]
        for a in approvers:
            env = approve(self.people[a].private_key, a, req, now=time.time())
            r = self.client(a).post(f"/v1/access/requests/{digest}/approvals", {"envelope": env})
            assert r.status_code == 201, r.text
        bundle = self.client(who).get(f"/v1/access/requests/{digest}").json()
        grant = build_grant(me.private_key, bundle["envelope"], bundle["approval_envelopes"],
                            now=time.time())
        r = self.client(who).post("/v1/access/grants", {"envelope": grant})
        assert r.status_code == 201, r.text
        return str(r.json()["grant_id"])

    def release_body(self, who: str = "alice", *, purpose: str = "load") -> dict[str, str]:
        from strongroom.access.evidence import make_evidence

        m = self.client(who).get(f"/v1/weights/{ARTIFACT}/manifest").json()["manifest"]
        f = m["files"][0]
        ref = f"{m['name']}@{m['version']}"
        evidence = make_evidence(self.people[who].private_key, artifact=ref, shard=f["path"],
                                 blob_id=f["blob"], purpose=purpose)
        return {"artifact": ref, "shard": f["path"], "purpose": purpose, "evidence": evidence}

    def audit_size(self) -> int:
        return int(self.ctx.audit().size())

    def statement_count(self) -> int:
        from sqlalchemy import func, select

        from strongroom.store.tables.access import AccessStatement

        with self.ctx.store.session() as s:
            return int(s.scalar(select(func.count()).select_from(AccessStatement)) or 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornThread:
    """A real uvicorn on a free loopback port, in a thread; call it with the app."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def __call__(self, app: object) -> httpx.Client:
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)


def unseal_over_api(http: SignedClient, tmp: Path, result: Any, cust: Any, k: int = 2) -> None:
    for i in range(1, k + 1):
        status = KeyringStatus.from_dict(http.get("/v1/sys/seal-status").json())
        content = ceremony.read_share_file(result.share_files[i - 1], [cust.identities[i - 1]])
        sub = ceremony.build_submission(status, content)
        r = http.post("/v1/sys/unseal", {"submission": base64.b64encode(sub).decode()})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server_db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A module's database for :func:`build_world`: None (SQLite in its tmp dir) or a
    fresh PostgreSQL schema (the ``db_url`` fixture's backends, at module scope)."""
    if request.param == "sqlite":
        yield None
        return
    with pg_schema(need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")) as url:
        yield url


def build_world(tmp: Path, http_factory: Any = None, *, agent: bool = False,
                db_url: str | None = None, **app_kw: Any) -> Iterator[ServerWorld]:
    """Yield a world; ``http_factory(app)`` gives the httpx client (default: in-process ASGI).

    ``agent=True``: the worker layout (keys in the local key agent, which the
    caller's environment must point at the same home and database).
    ``db_url``: the database (default: SQLite under ``tmp``).
    """
    home = tmp / "home"
    settings = Settings(home=home, database_url=db_url or f"sqlite:///{tmp / 'sr.db'}")
    home.mkdir(mode=0o700)
    store = Store.open(settings.resolved_database_url)
    cust = make_custodians(tmp / "custodians", 3)
    try:
        result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                     shares_dir=tmp / "shares",
                                     settings=KeysSettings(key_backend="shamir"))
    finally:
        store.close()
    assert result.officer_identity is not None
    officer = Identity.load(result.officer_identity)
    ctx = ServerContext.agent(settings) if agent else ServerContext.local(settings)
    app = create_app(ctx, **app_kw)
    if http_factory is None:
        from fastapi.testclient import TestClient

        http: httpx.Client = TestClient(app, base_url="http://testserver")
    else:
        http = http_factory(app)
    world = ServerWorld(ctx, http, officer, tmp=tmp,
                        unseal_host=lambda client: unseal_over_api(client, tmp, result, cust))
    try:
        unseal_over_api(world.client(None), tmp, result, cust)
        path = tmp / "tiny.safetensors"
        world.model = make_model(path)
        ctx.vault(identity=officer).import_weights(path, name=ARTIFACT, compartments=["atlas"])
        path.unlink()
        world.enroll("alice", ("requesters",))
        world.enroll("bob", ("approvers",))
        world.enroll("carol", ("approvers",))
        world.enroll("eve", ("auditors",))
        lab = ResourceLabel(ARTIFACT, level("secret"), ("atlas",),
                            {"load": Rule.parse("2 of approvers")}, serial=1,
                            issued=int(time.time())).sign(officer.private_key)
        r = world.client("officer").post("/v1/statements", {"kind": "label", "envelope": lab})
        assert r.status_code == 201, r.text
        yield world
    finally:
        http.close()
        ctx.close()
        if agent:
            ctx.keys.seal()  # stops the agent


def run_cli(world: ServerWorld, who: str, *args: str, ok: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS`` as ``who`` against the world's server (STRONGROOM_URL), from an empty home."""
    ident = world.officer if who == "officer" else world.people[who]
    path = world.tmp / f"{who}.identity"
    if not path.exists():
        ident.save(path)
    empty = world.tmp / "client-home"  # nothing local: everything must come from the server
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_URL=str(world.http.base_url), STRONGROOM_IDENTITY=str(path),
               STRONGROOM_HOME=str(empty),
               STRONGROOM_KNOWN_SERVERS=str(world.tmp / "known_servers"), **(extra_env or {}))
    out = cli_zygote.run([strongroom_exe(), *args], env, timeout=120)  # a forked process
    assert "Traceback" not in out.stderr, out.stderr
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


@contextlib.contextmanager
def second_host(world: ServerWorld, host_id: str = "host-b") -> Iterator[httpx.Client]:
    """Another server host on the world's database (its own home and keyring state), unsealed."""
    from fastapi.testclient import TestClient

    settings = Settings(home=world.tmp / host_id, host_id=host_id,
                        database_url=world.ctx.settings.resolved_database_url)
    settings.resolved_home.mkdir(mode=0o700)
    # one blob store for both hosts, as S3 would be (local blobs live in the home)
    settings.blob_dir.symlink_to(world.ctx.settings.blob_dir, target_is_directory=True)
    ctx = ServerContext.local(settings)
    http = TestClient(create_app(ctx), base_url=f"http://{host_id}")
    try:
        world.unseal_host(SignedClient(http, None))
        yield http
    finally:
        http.close()
        ctx.close()

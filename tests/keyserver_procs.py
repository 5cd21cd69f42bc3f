"""``strongroom keyserver serve`` processes for tests: started, unsealed by two custodians, set up, DKG.

Shared by the process tests of threshold release (tests/runtime/test_keyserver*.py)::

    servers = [start_keyserver(tmp, i, None, manifest_pub, [principal_pub]) for i in (1, 2, 3)]
    commitments = keygen(servers, threshold=2)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto import age
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import KeyringStatus
from strongroom.runtime.keyserver import admin_statement
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.store.db import Store
from strongroom.threshold.group import Element
from threshold_fixtures import Blob, FileKeyIdentity, release_request

from cli_fixtures import free_port, strongroom_exe
from keyring_fixtures import make_custodians
from testsupport import need_service, pg_schema


@dataclass
class KeyServerProc:
    name: str
    index: int
    url: str
    proc: subprocess.Popen[bytes]
    officer: Ed25519PrivateKey
    home: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def status(self) -> dict[str, Any]:
        r = self.http.get(f"{self.url}/v1/keyserver/status")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        env = admin_statement(self.officer, op, **fields)
        r = self.http.post(f"{self.url}/v1/keyserver/admin", json={"envelope": env})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.http.close()


@contextlib.contextmanager
def database_urls(kind: str, n: int) -> Iterator[list[str | None]]:
    """``n`` database URLs for processes: None each (its own SQLite) or fresh PostgreSQL schemas."""
    if kind == "sqlite":
        yield [None] * n
        return
    base = need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(pg_schema(base)) for _ in range(n)]


def start_officer_keyservers(tmp: Path, databases: list[str | None], manifest_key: bytes,
                             officer: Identity, servers: list[KeyServerProc]) -> None:
    """Start ks-1..ks-3 (databases[1..3]) into ``servers`` (so a caller's ``finally`` stops
    those started before a failure); each one's own officer pins ``officer`` (1 of 1)."""
    for i in (1, 2, 3):
        servers.append(start_keyserver(tmp, i, databases[i], manifest_key, []))
    for s in servers:
        s.admin("setup", index=s.index, manifest_key=base64.b64encode(manifest_key).decode(),
                principals=[], officers=[base64.b64encode(officer.public.public_bytes).decode()],
                officer_threshold=1)


def start_keyserver(tmp: Path, index: int, db_url: str | None, manifest_key: bytes, principals: list[bytes]) -> KeyServerProc:
    name = f"ks-{index}"
    home = tmp / name
    home.mkdir(mode=0o700)
    url = db_url or f"sqlite:///{home / 'strongroom.db'}"
    store = Store.open(url)
    cust = make_custodians(tmp / f"{name}-custodians", 3)
    try:
        result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                     shares_dir=tmp / f"{name}-shares",
                                     settings=KeysSettings(key_backend="shamir"))
    finally:
        store.close()
    assert result.officer_identity is not None
    officer = Identity.load(result.officer_identity).private_key
    env = dict(os.environ, STRONGROOM_HOME=str(home), STRONGROOM_HOST_ID=name)
    env.pop("STRONGROOM_URL", None)
    env.pop("STRONGROOM_WITNESSES", None)
    if db_url:
        env["STRONGROOM_DATABASE_URL"] = db_url
    else:
        env.pop("STRONGROOM_DATABASE_URL", None)
    port = free_port()
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen([strongroom_exe(), "keyserver", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    ks = KeyServerProc(name, index, f"http://127.0.0.1:{port}", proc, officer, home)
    deadline = time.monotonic() + 60
    while True:
        try:
            ks.status()
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                ks.stop()
                raise AssertionError((tmp / f"{name}.log").read_text()) from None
            time.sleep(0.2)
    for i in (1, 2):  # two of its three custodians unseal it
        status = KeyringStatus.from_dict(ks.status()["keyring"])
        content = ceremony.read_share_file(result.share_files[i - 1], [cust.identities[i - 1]])
        sub = ceremony.build_submission(status, content)
        r = ks.http.post(f"{ks.url}/v1/keyserver/unseal", json={"submission": base64.b64encode(sub).decode()})
        assert r.status_code == 200, r.text
    assert ks.status()["sealed"] is False
    fields = {"index": index, "manifest_key": base64.b64encode(manifest_key).decode(),
              "principals": [base64.b64encode(p).decode() for p in principals]}
    if index != 4:
        ks.admin("setup", **fields)
        return ks
    # the fourth server's officer sets it up as an operator does: with the CLI and its identity file
    (tmp / "setup-4.json").write_text(json.dumps(fields))
    out = subprocess.run([strongroom_exe(), "keyserver", "admin", "setup", "--server", ks.url, "--identity",
                          str(result.officer_identity), "--body", str(tmp / "setup-4.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert json.loads(out.stdout)["index"] == 4
    unknown = subprocess.run([strongroom_exe(), "keyserver", "admin", "launch", "--server", ks.url,
                             "--identity", str(result.officer_identity)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert unknown.returncode != 0 and "unknown operation" in unknown.stderr and "Traceback" not in unknown.stderr
    return ks


def keygen(servers: list[KeyServerProc], *, threshold: int) -> list[Element]:
    recipients = {str(s.index): s.status()["transport"] for s in servers}
    dealings = [s.admin("deal", mode="dkg", threshold=threshold, recipients=recipients) for s in servers]
    results = [s.admin("accept", mode="dkg", dealings=dealings, epoch=1) for s in servers]
    commitments = {tuple(r["commitments"]) for r in results}
    assert len(commitments) == 1  # every server derived the same group key and polynomial
    return [Element.decode(bytes.fromhex(c)) for c in commitments.pop()]


def load_blob(client: ThresholdClient, principal: Ed25519PrivateKey, blob: Blob) -> tuple[bytes, list[str]]:
    released = client.release(release_request(principal, blob), blob.manifest, blob.header)
    try:
        return age.decrypt(blob.encrypted, [FileKeyIdentity(released.key)]), released.answered
    finally:
        released.key[:] = bytes(len(released.key))

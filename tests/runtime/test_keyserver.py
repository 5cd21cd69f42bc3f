"""Threshold release across key servers run as separate ``strongroom keyserver serve`` processes.

Three key servers (2 of 3), each initialised like a vault with its own custodians,
officer, database (SQLite file or its own PostgreSQL schema) and audit log, are
unsealed over HTTP, set up and run distributed key generation through
officer-signed statements. Then: a release loads the blob bit-identical; a
server's disagreement leaves the requester without a key; re-sharing to a
fourth server keeps the group key; killed servers leave releases running while
k are up, and none once fewer are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto import age
from strongroom.errors import AccessDenied
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import KeyringStatus
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.store.db import Store
from strongroom.threshold.group import Element
from threshold_fixtures import (
    VAULT,
    Blob,
    FileKeyIdentity,
    admin_statement,
    make_blob,
    release_request,
)

from cli_fixtures import strongroom_exe
from keyring_fixtures import make_custodians
from testsupport import need_service, pg_schema


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _start(tmp: Path, index: int, db_url: str | None, manifest_key: bytes, principals: list[bytes]) -> KeyServerProc:
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
    port = _free_port()
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


def _keygen(servers: list[KeyServerProc], *, threshold: int) -> list[Element]:
    recipients = {str(s.index): s.status()["transport"] for s in servers}
    dealings = [s.admin("deal", mode="dkg", threshold=threshold, recipients=recipients) for s in servers]
    results = [s.admin("accept", mode="dkg", dealings=dealings, epoch=1) for s in servers]
    commitments = {tuple(r["commitments"]) for r in results}
    assert len(commitments) == 1  # every server derived the same group key and polynomial
    return [Element.decode(bytes.fromhex(c)) for c in commitments.pop()]


def _load(client: ThresholdClient, principal: Ed25519PrivateKey, blob: Blob) -> tuple[bytes, list[str]]:
    released = client.release(release_request(principal, blob), blob.manifest, blob.header)
    try:
        return age.decrypt(blob.encrypted, [FileKeyIdentity(released.key)]), released.answered
    finally:
        released.key[:] = bytes(len(released.key))


# The SQLite run is the one test that proves the feature end to end (four processes, ~45 s on
# 2 cores); the PostgreSQL run repeats it on the other backend and is marked slow.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def databases(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    if request.param == "sqlite":
        yield [None] * 4
        return
    base = need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(pg_schema(base)) for _ in range(4)]


def test_two_of_three_key_servers_release_reshare_and_survive_a_kill(
    tmp_path: Path, databases: list[str | None]
) -> None:
    manifest_key = Ed25519PrivateKey.generate()
    principal = Ed25519PrivateKey.generate()
    principal_pub = principal.public_key().public_bytes_raw()
    mpub = manifest_key.public_key().public_bytes_raw()
    servers: list[KeyServerProc] = []
    try:
        for i in (1, 2, 3):
            servers.append(_start(tmp_path, i, databases[i - 1], mpub, [principal_pub]))
        commitments = _keygen(servers, threshold=2)
        group_key = commitments[0]
        blob = make_blob(group_key, manifest_key)
        targets = [(s.name, s.url) for s in servers]
        client = ThresholdClient(targets, commitments, vault_id=VAULT)

        # release: the first two servers answer, the blob loads bit-identical
        plain, answered = _load(client, principal, blob)
        assert plain == blob.plaintext and answered == ["ks-1", "ks-2"]

        # each server audited its own decision in its own log (its own database)
        for s in servers[:2]:
            assert s.status()["epoch"] == 1

        # a server that answers for a principal the others unpinned gives no key: 1 of 2
        for s in servers[1:]:
            s.admin("setup", index=s.index, manifest_key=base64.b64encode(mpub).decode(), principals=[])
        with pytest.raises(AccessDenied, match="1 of the 2 key servers") as refused:
            client.release(release_request(principal, blob), blob.manifest, blob.header)
        assert "ks-2: AccessDenied" in str(refused.value) and "ks-3: AccessDenied" in str(refused.value)
        for s in servers[1:]:
            s.admin("setup", index=s.index, manifest_key=base64.b64encode(mpub).decode(),
                    principals=[base64.b64encode(principal_pub).decode()])

        # a header that the signed manifest does not pin is refused by every server
        other = make_blob(group_key, manifest_key)
        with pytest.raises(AccessDenied, match="0 of the 2"):
            client.release(release_request(principal, blob), blob.manifest, other.header)

        # re-sharing to a fourth server (2 of 4) keeps the group key: old files still open
        servers.append(_start(tmp_path, 4, databases[3], mpub, [principal_pub]))
        recipients = {str(s.index): s.status()["transport"] for s in servers}
        old = [c.hex() for c in commitments]
        dealings = [s.admin("deal", mode="reshare", threshold=2, recipients=recipients) for s in servers[:2]]
        results = [s.admin("accept", mode="reshare", dealings=dealings, old_commitments=old, epoch=2)
                   for s in servers]
        new_commitments = [Element.decode(bytes.fromhex(c)) for c in results[0]["commitments"]]
        assert all(r["commitments"] == results[0]["commitments"] for r in results)
        assert new_commitments[0] == group_key and new_commitments != commitments
        client4 = ThresholdClient([(s.name, s.url) for s in reversed(servers)], new_commitments, vault_id=VAULT)
        plain, answered = _load(client4, principal, blob)
        assert plain == blob.plaintext and answered == ["ks-4", "ks-3"]

        # a server killed mid-load: every release of the load still completes bit-identical
        done: list[list[str]] = []
        killed = threading.Event()

        def load() -> None:
            for i in range(12):
                if i == 4:
                    killed.set()
                plain, answered = _load(client4, principal, blob)
                assert plain == blob.plaintext
                done.append(answered)

        loader = threading.Thread(target=load)
        loader.start()
        assert killed.wait(60)
        servers[3].proc.send_signal(signal.SIGKILL)  # ks-4, first in the client's order
        loader.join(120)
        assert len(done) == 12 and done[-1] == ["ks-3", "ks-2"]
        servers[3].stop()
        # releases continue while two are up; none with one
        servers[2].stop()
        servers[1].stop()
        with pytest.raises(AccessDenied, match="1 of the 2 key servers"):
            _load(client4, principal, blob)
        client.close()
        client4.close()
    finally:
        for s in servers:
            s.stop()

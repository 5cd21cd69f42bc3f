"""Key servers run the deployment's Grant rule, each on its own store, against its own pinned officers.

Three ``strongroom keyserver serve`` processes (2 of 3) pin two directory officers (2 of 2) at
set-up. The officers' enrollments reach each server through ``POST /v1/keyserver/statements``;
each Grant is stored on every server (its access cap counts stored
holders) and travels in the release evidence. Each refusal is made by every key server on its own
and named in the requester's error: a Grant one approval short, an approver enrolled by an
officer the key servers did not pin, an over-budget release (each server's own ledger), and a
Grant revoked by a revocation its approver pushed to the key servers directly (and still revoked
after each server's DBA deletes it: the server's own log restores it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from keyserver_procs import KeyServerProc, keygen, start_keyserver
from strongroom.access import statements
from strongroom.access.approvals import AccessRequest, approve
from strongroom.access.directory import Enrollment, Vetting, level
from strongroom.access.evidence import make_evidence
from strongroom.access.grants import build_grant
from strongroom.crypto import age
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.release import ReleaseRequest
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.store.db import Store
from threshold_fixtures import ARTIFACT, SHARD, VAULT, Blob, FileKeyIdentity, make_blob

from cli_fixtures import strongroom_exe
from testsupport import need_service, pg_schema

YEAR = 365 * 24 * 3600


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def databases(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    if request.param == "sqlite":
        yield [None] * 3
        return
    base = need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(pg_schema(base)) for _ in range(3)]


@dataclass
class Directory:
    """The vault's officers and the people they enroll: signed statements, nothing stored."""

    officers: list[Identity]
    people: dict[str, Identity] = field(default_factory=dict)

    def enroll(self, name: str, *, by: list[Identity] | None = None) -> str:
        ident = self.people.setdefault(name, Identity.generate(name))
        now = int(time.time())
        e = Enrollment(
            name=name,
            key=ident.public.public_bytes,
            roles=("approvers",),
            clearance=level("secret"),
            compartments=(),
            vetting=Vetting("active", now - 10, now + YEAR, ()),
            kind="person",
            serial=1,
            issued=now,
        )
        return e.sign(*[o.private_key for o in (by or self.officers)])

    def grant(self, who: str, approvers: list[str], *, budget: int = 1 << 30) -> str:
        ident = self.people[who]
        req = AccessRequest.new(
            who, ident.public.key_id, "minilm", "load", "test", 3600, budget, time.time()
        )
        env = req.sign(ident.private_key)
        approvals = [
            approve(self.people[a].private_key, a, env, now=time.time(), ttl_s=3600)
            for a in approvers
        ]
        return build_grant(ident.private_key, env, approvals, now=time.time())


def push(servers: list[KeyServerProc], items: list[dict[str, str]]) -> None:
    for s in servers:
        r = s.http.post(f"{s.url}/v1/keyserver/statements", json={"statements": items})
        assert r.status_code == 200, r.text


def load(
    client: ThresholdClient, person: Identity, blob: Blob, grant: str, servers: list[KeyServerProc]
) -> bytes:
    # a Grant is stored on each key server (its access cap counts stored holders), then carried
    push(servers, [{"kind": "grant", "envelope": grant}])
    evidence = make_evidence(
        person.private_key,
        artifact=ARTIFACT,
        shard=SHARD,
        blob_id=blob.blob_id,
        purpose="load",
        grant=grant,
    )
    request = ReleaseRequest(
        principal=person.name,
        principal_key=person.public.public_bytes,
        artifact=ARTIFACT,
        shard=SHARD,
        blob_id=blob.blob_id,
        nbytes=len(blob.plaintext),
        purpose="load",
        evidence=evidence,
    )
    released = client.release(request, blob.manifest, blob.header)
    try:
        return age.decrypt(blob.encrypted, [FileKeyIdentity(released.key)])
    finally:
        released.key[:] = bytes(len(released.key))


def keyserver_cli(servers: list[KeyServerProc], *args: str) -> dict[str, Any]:
    """Run ``strongroom keyserver ARGS --server URL...`` (no vault in its environment); its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("STRONGROOM_URL", "STRONGROOM_HOME")}
    urls = [a for s in servers for a in ("--server", s.url)]
    out = subprocess.run([strongroom_exe(), "keyserver", *args, *urls], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def refused_by_each(
    exc: pytest.ExceptionInfo[AccessDenied],
    servers: list[KeyServerProc],
    words: str,
    *,
    released: int = 0,
) -> None:
    """Each of ``servers`` refused on its own, and the requester's error names each with its reason."""
    text = str(exc.value)
    assert f"{released} of the 2 key servers" in text, text
    # the server's own refusal, relayed under its name: "ks-1: <kind>: ks-1: <reason>"
    for s in servers:
        head = f"({s.name}: " if s.name == "ks-1" else f"; {s.name}: "
        assert head in text, text
        reason = text.split(head, 1)[1].split("; ks-", 1)[0]
        assert reason.split(": ", 1)[1].startswith(f"{s.name}: ") and words in reason, text


def test_key_servers_verify_grants_themselves(tmp_path: Path, databases: list[str | None]) -> None:
    manifest_key = Ed25519PrivateKey.generate()
    mpub = manifest_key.public_key().public_bytes_raw()
    officers = [Identity.generate("officer1"), Identity.generate("officer2")]
    foreign = Identity.generate("officer-elsewhere")  # an officer no key server pinned
    d = Directory(officers)
    servers: list[KeyServerProc] = []
    try:
        for i in (1, 2, 3):
            servers.append(start_keyserver(tmp_path, i, databases[i - 1], mpub, []))
        setup: dict[str, Any] = {
            "manifest_key": base64.b64encode(mpub).decode(),
            "principals": [],
            "officers": [base64.b64encode(o.public.public_bytes).decode() for o in officers],
            "officer_threshold": 2,
        }
        for s in servers:
            assert s.admin("setup", index=s.index, **setup)["mode"] == "grant"
        commitments = keygen(servers, threshold=2)
        blob = make_blob(commitments[0], manifest_key)
        client = ThresholdClient([(s.name, s.url) for s in servers], commitments, vault_id=VAULT)
        enrollments = [d.enroll(n) for n in ("alice", "bob", "carol")]
        enrollments.append(
            d.enroll("mallory", by=[officers[0], foreign])
        )  # one pinned officer, one not
        push(servers, [{"kind": "enrollment", "envelope": e} for e in enrollments])
        alice = d.people["alice"]

        # a Grant approved by two enrolled approvers: the first two servers release, bit-identical
        grant = d.grant("alice", ["bob", "carol"])
        assert load(client, alice, blob, grant, servers) == blob.plaintext

        # not approved by enough approvers: each server refuses by the approval rule
        with pytest.raises(AccessDenied) as one_short:
            load(client, alice, blob, d.grant("alice", ["bob"]), servers)
        refused_by_each(one_short, servers, "rule 2 of approvers")

        # an approver enrolled by an officer the key servers did not pin counts for nothing
        with pytest.raises(AccessDenied) as foreign_enrolled:
            load(client, alice, blob, d.grant("alice", ["bob", "mallory"]), servers)
        refused_by_each(foreign_enrolled, servers, "rule 2 of approvers")
        # the control: once the two pinned officers enroll mallory, the same approvals count
        push(servers, [{"kind": "enrollment", "envelope": d.enroll("mallory")}])
        assert (
            load(client, alice, blob, d.grant("alice", ["bob", "mallory"]), servers)
            == blob.plaintext
        )

        # over budget: one shard fits the Grant's bytes, a second load does not (each server's ledger)
        size = len(blob.plaintext)
        small = d.grant("alice", ["bob", "carol"], budget=size + size // 2)
        assert load(client, alice, blob, small, servers) == blob.plaintext
        with pytest.raises(AccessDenied) as spent:
            load(client, alice, blob, small, servers)
        # ks-1 and ks-2 charged the first load and refuse; ks-3 never did and answers, but one is not k
        refused_by_each(spent, servers[:2], "byte budget", released=1)

        # revoked: bob signs a revocation of the first Grant and sends it to each key server himself
        # (`keyserver revoke-grant`: no vault, so no vault DBA, on the path); every server refuses it
        bob = d.people["bob"]
        bob.save(tmp_path / "bob.identity")
        grant_id = statements.payload_digest(grant)
        assert (
            load(client, alice, blob, grant, servers) == blob.plaintext
        )  # the control: it loads before
        sent = keyserver_cli(
            servers, "revoke-grant", grant_id, "--reason", "left the project",
            "--identity", str(tmp_path / "bob.identity"),
        )  # fmt: skip
        assert sent["grant"] == grant_id
        assert all(sent["stored"][s.url] == {"grant-revocation": 1} for s in servers)
        revocation: str = sent["revocation"]  # its digest
        with pytest.raises(AccessDenied) as revoked:
            load(client, alice, blob, grant, servers)
        refused_by_each(revoked, servers, "revoked")

        # a key server's DBA deletes the revocation from its table: its state guard restores it from
        # the server's own log before the next decision, and the Grant stays refused there
        for s, url in zip(servers, databases, strict=True):
            store = Store.open(url or f"sqlite:///{s.home / 'strongroom.db'}")
            try:
                with store.session() as session:
                    gone = session.execute(
                        text("DELETE FROM access_statements WHERE kind = 'grant-revocation'")
                    )
                    assert gone.rowcount == 1  # type: ignore[attr-defined]
            finally:
                store.close()
        with pytest.raises(AccessDenied) as restored:
            load(client, alice, blob, grant, servers)
        refused_by_each(restored, servers, "revoked")
        for s, url in zip(servers, databases, strict=True):  # the row is back (not just remembered)
            store = Store.open(url or f"sqlite:///{s.home / 'strongroom.db'}")
            try:
                kept = statements.envelopes(store, "grant-revocation", subject=grant_id)
                assert [statements.payload_digest(e) for e in kept] == [revocation]
            finally:
                store.close()

        # a principal's key revoked by the two pinned officers, each sending a signature directly
        # (`keyserver revoke-key`, then `--cosign`): bob's approvals stop counting on every server
        for i, o in enumerate(officers):
            o.save(tmp_path / f"officer{i}.identity")
        first = keyserver_cli(
            servers, "revoke-key", "--key-id", bob.public.key_id, "--reason", "left",
            "--identity", str(tmp_path / "officer0.identity"), "--out", str(tmp_path / "rev.json"),
        )  # fmt: skip
        assert first["key_id"] == bob.public.key_id
        # the control: one officer's signature of the two pinned is not a revocation yet
        assert (
            load(client, alice, blob, d.grant("alice", ["bob", "carol"]), servers) == blob.plaintext
        )
        keyserver_cli(
            servers, "revoke-key", "--cosign", str(tmp_path / "rev.json"),
            "--identity", str(tmp_path / "officer1.identity"),
        )  # fmt: skip
        with pytest.raises(AccessDenied) as key_revoked:
            load(client, alice, blob, d.grant("alice", ["bob", "carol"]), servers)
        refused_by_each(key_revoked, servers, "rule 2 of approvers")

        # nothing of the above reached a server as a statement it could not read: malformed refused whole
        r = httpx.post(
            f"{servers[0].url}/v1/keyserver/statements",
            json={
                "statements": [
                    {"kind": "enrollment", "envelope": enrollments[0]},
                    {"kind": "break-glass", "envelope": "{}"},
                ]
            },
        )
        assert r.status_code == 400 and "statement 1" in r.json()["error"]["message"]
        client.close()
    finally:
        for s in servers:
            s.stop()

"""Key servers in operation: what they let in, incremental sync, revocations pushed at once, break-glass.

A CLI-initialised vault (``STRONGROOM_FILE_KEYS=threshold``) and three ``strongroom keyserver serve``
processes (2 of 3, each its own database: SQLite, or PostgreSQL for all four) that run the Grant
rule against the vault's officer. Where the operator meets each:

* ``POST /v1/keyserver/statements`` refuses, before storing anything, a statement not signed by a
  pinned officer or a person they enrolled, a body over 1 MiB and a non-JSON body (4xx naming the
  object and a remedy, never a 500); resending or replaying valid statements writes nothing;
* ``strongroom keyserver sync`` sends each server only what it lacks: a second run sends nothing;
  a server down is named and the command fails, telling the operator to run it again;
* ``strongroom access revoke`` and ``strongroom people revoke`` push the revocation to every key
  server at once, each server's answer printed, a server down named with ``keyserver sync`` as
  the remedy; without the push (the control) the key servers keep releasing until a sync;
* a break-glass taken at the vault is refused by the key servers, by name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import text

import strongroom
from keyserver_procs import KeyServerProc, database_urls, keygen, start_officer_keyservers
from strongroom.access import statements
from strongroom.access.approvals import AccessRequest
from strongroom.access.directory import Enrollment, Vetting, level
from strongroom.access.evidence import NO_BREAK_GLASS
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.runtime.services import key_service
from strongroom.store.db import Store

from cli_fixtures import grant_cli, make_runner, unseal_home
from vault_fixtures import make_model


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def databases(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    """The vault's database, then the three key servers'."""
    with database_urls(request.param, 4) as urls:
        yield urls


def _footprint(s: KeyServerProc, url: str | None) -> tuple[int, int]:
    """(access statements stored, ``keys.threshold_statements`` audit entries) of one key server."""
    store = Store.open(url or f"sqlite:///{s.home / 'strongroom.db'}")
    try:
        with store.session(readonly=True) as session:
            rows = int(session.execute(text("SELECT count(*) FROM access_statements")).scalar_one())
            bodies = session.execute(text("SELECT body FROM audit_entries")).scalars().all()
    finally:
        store.close()
    return rows, sum(1 for b in bodies if b"keys.threshold_statements" in bytes(b))


def _post(s: KeyServerProc, items: list[dict[str, str]], **extra: Any) -> httpx.Response:
    r: httpx.Response = s.http.post(
        f"{s.url}/v1/keyserver/statements", json={"statements": items, **extra}
    )
    return r


def _load(tensors: dict[str, np.ndarray]) -> None:
    with strongroom.open_weights("tm") as weights:
        for name, want in tensors.items():
            np.testing.assert_array_equal(weights[name], want)


def _refused(words: str, servers: list[KeyServerProc]) -> None:
    with pytest.raises(AccessDenied) as exc:
        strongroom.open_weights("tm")
    for s in servers:
        assert f"{s.name}: " in str(exc.value) and words in str(exc.value), str(exc.value)


def _grant_ids(run: Any) -> list[str]:
    return [g["grant_id"] for g in json.loads(run("access", "grants", "--json").stdout)]


# One test per database: a vault agent and three key servers as processes (~90 s on 2 cores).
def test_key_servers_in_operation(
    tmp_path: Path, databases: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, databases[0])
    servers: list[KeyServerProc] = []
    try:
        manifest_pub = key_service(home).public_keys()["manifest"]
        officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        start_officer_keyservers(tmp_path, databases, manifest_pub, officer, servers)
        commitments = keygen(servers, threshold=2)
        pinned = tmp_path / "commitments.json"
        pinned.write_text(json.dumps([c.hex() for c in commitments]))
        env.update({
            "STRONGROOM_FILE_KEYS": "threshold",
            "STRONGROOM_THRESHOLD_SERVERS": ",".join(f"{s.name}={s.url}" for s in servers),
            "STRONGROOM_THRESHOLD_COMMITMENTS": str(pinned),
        })  # fmt: skip
        run = make_runner(env)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("STRONGROOM_URL", raising=False)
        tensors = make_model(tmp_path / "model.safetensors")
        run("weights", "import", tmp_path / "model.safetensors", "--name", "tm")
        grant_cli(env, "tm")
        ks1, db1 = servers[0], databases[1]

        # -- 1. intake: nothing unsigned by a pinned officer or an enrolled person gets in -------
        before = _footprint(ks1, db1)
        stranger = Identity.generate("stranger")
        now = int(time.time())
        forged = Enrollment(name="stranger", key=stranger.public.public_bytes, roles=("approvers",),
                            clearance=level("secret"), compartments=(),
                            vetting=Vetting("active", now, now + 3600, ()), kind="person", serial=1,
                            issued=now).sign(stranger.private_key)  # fmt: skip
        r = _post(ks1, [{"kind": "enrollment", "envelope": forged}])
        err = r.json()["error"]
        assert r.status_code == 403 and err["type"] == "AccessDenied", r.text
        assert err["obj"] == "statement 0" and "not signed by a directory officer" in err["message"]
        assert "nothing was stored" in err["message"] and "setup" in err["remedy"]
        request = AccessRequest.new("stranger", stranger.public.key_id, "tm", "load", "x", 3600, 1 << 20,
                                    now).sign(stranger.private_key)  # fmt: skip
        r = _post(ks1, [{"kind": "request", "envelope": request}])
        assert r.status_code == 403 and "enrolled" in r.json()["error"]["remedy"], r.text
        # one forged statement in a batch: refused whole; with skip_refused, named and left out
        r = _post(ks1, [{"kind": "request", "envelope": request}], skip_refused=True)
        assert r.status_code == 200 and r.json()["refused"][0]["kind"] == "request", r.text
        r = ks1.http.post(
            f"{ks1.url}/v1/keyserver/statements", content=b'{"statements": [' + b" " * (2 << 20)
        )
        assert r.status_code == 400 and "too large" in r.json()["error"]["message"], r.text
        r = ks1.http.post(f"{ks1.url}/v1/keyserver/statements", content=b"junk")
        assert r.status_code == 400 and r.json()["error"]["obj"] == "/v1/keyserver/statements", (
            r.text
        )
        assert _footprint(ks1, db1) == before  # not a row, not an audit entry

        # -- 3. sync sends what each server lacks; a second run sends nothing -------------------
        first = json.loads(run("keyserver", "sync").stdout)
        assert first["sent"] == 3 * first["statements"] > 0
        assert all(first["stored"][s.name].get("grant", 0) == 1 for s in servers)
        _load(tensors)
        synced = _footprint(ks1, db1)
        again = json.loads(run("keyserver", "sync").stdout)
        assert again["sent"] == 0 and again["sent_to"] == {s.name: 0 for s in servers}
        # a replayed statement is held, not written again (no row, no audit entry)
        (grant,) = _grant_ids(run)
        vs = Store.open(databases[0] or f"sqlite:///{home / 'strongroom.db'}")
        try:
            grant_env = statements.by_digest(vs, grant)
        finally:
            vs.close()
        assert grant_env is not None
        r = _post(ks1, [{"kind": "grant", "envelope": grant_env}] * 3)
        assert r.status_code == 200 and r.json()["stored"] == {} and r.json()["held"] == 3, r.text
        # signatures under made-up key ids appended to it: verification ignores them, and
        # the key server strips them, so the held copy does not grow (a row is not a bin)
        padded = json.loads(grant_env)
        for n in range(2):
            padded["signatures"].append({"keyid": f"made-up-{n}", "sig": "AAAA" * 64})
            r = _post(ks1, [{"kind": "grant", "envelope": json.dumps(padded)}])
            assert r.status_code == 200 and r.json()["stored"] == {}, r.text
            assert r.json()["held"] == 1, r.text
        assert _footprint(ks1, db1) == synced

        # -- 2. the control: a revocation not pushed leaves the key servers releasing until a sync
        quiet = make_runner(
            {**env, "STRONGROOM_THRESHOLD_SERVERS": "", "STRONGROOM_FILE_KEYS": "keyring"}
        )
        assert "key server" not in quiet("access", "revoke", grant, "--reason", "control").stderr
        _load(tensors)  # the gap the push closes
        caught_up = json.loads(run("keyserver", "sync").stdout)
        assert caught_up["sent_to"] == {s.name: 1 for s in servers}  # the revocation alone
        _refused("revoked", servers[:2])

        # pushed: `access revoke` reaches each key server at once; a server down is named
        grant_cli(env, "tm")
        run("keyserver", "sync")
        _load(tensors)
        (second,) = set(_grant_ids(run)) - {grant}
        servers[2].stop()
        out = run("access", "revoke", second, "--reason", "left the project")
        assert "key server ks-1: grant-revocation stored" in out.stderr, out.stderr
        assert "key server ks-2: grant-revocation stored" in out.stderr, out.stderr
        assert (
            "key server ks-3: NOT SENT" in out.stderr
            and "`strongroom keyserver sync`" in out.stderr
        )
        _refused("revoked", servers[:2])
        down = run("keyserver", "sync", ok=False)
        assert (
            down.returncode != 0
            and "ks-3" in down.stderr
            and "keyserver sync` again" in down.stderr
        )
        assert json.loads(down.stdout)["sent_to"] == {"ks-1": 0, "ks-2": 0}

        # `people revoke`: the officer's key revocation is on each reachable key server at once
        people = Path(env["STRONGROOM_IDENTITY"]).parent / "grant-people"
        approver = Identity.load(people / "approver1.id").public.key_id
        out = run("people", "revoke", "approver1", "--reason", "left")
        assert "key server ks-1: revocation stored" in out.stderr, out.stderr
        assert "key server ks-2: revocation stored" in out.stderr and "ks-3: NOT SENT" in out.stderr
        for s, url in zip(servers[:2], databases[1:3], strict=True):
            store = Store.open(url or f"sqlite:///{s.home / 'strongroom.db'}")
            try:
                assert len(statements.envelopes(store, "revocation", subject=approver)) == 1
            finally:
                store.close()

        # -- 4. break-glass taken at the vault: the key servers refuse it, by name ---------------
        run(
            "compartments",
            "label",
            "tm",
            "--classification",
            "internal",
            "--break-glass",
            officer.name,
        )
        run("access", "break-glass", "tm", "--reason", "incident 4411")
        up = [a for s in servers[:2] for a in ("--server", f"{s.name}={s.url}")]
        sent = json.loads(run("keyserver", "sync", *up).stdout)
        assert all(sent["stored"][s.name].get("break-glass") == 1 for s in servers[:2])
        _refused(NO_BREAK_GLASS, servers[:2])
    finally:
        for s in servers:
            s.stop()
        run("seal", ok=False)

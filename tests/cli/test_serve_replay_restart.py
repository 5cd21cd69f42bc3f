"""Replayed key releases against a real ``strongroom serve``, as an attacker meets them.

An engineer with a Grant loads a two-shard model from another working directory
(``STRONGROOM_URL`` set): a full load (``POST /v1/keys/release-many``, one load
evidence) and a single-shard release (``POST /v1/keys/release``). The exact
signed requests the client sent are recorded as they leave it, and the same
bytes are sent again:

i.   at once: the request nonce is spent (401, "replayed nonce");
ii.  after ``serve`` is stopped and started again on the same data directory and
     database: still spent (the host's mapped table on SQLite, ``server_nonces``
     on PostgreSQL);
iii. after a hostile administrator clears the spent request nonces (``DELETE FROM
     server_nonces`` on PostgreSQL; on SQLite they are not in the database but in
     ``<home>/server-nonces.map``, which the host user who owns the data directory
     zeroes): the gate's own evidence-nonce check refuses (rebuilt from the audit
     log at the restart), and audits the refusal;
iv.  after the administrator also deletes the egress ledger rows of those charges:
     still refused, and the deletion is noticed (DESIGN rule 1, absence is
     evidence): the state guard puts the rows back from the audit log and raises
     the critical alert ``SR-STATE-TAMPER``.

No answer carries a key, and the audit log still verifies. Everything must fit in
the signature's replay window (60 s after the request was signed): a replay later
than that would be refused as stale and prove nothing, so the test checks the
clock before each replay and each refusal's exact reason.

The same ledger deletion made while ``serve`` is down is noticed at the next
unseal: the state guard's first check puts the rows back with the alert (an
egress-meter backfill that ran before it at unseal used to restore them silently).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from strongroom.keys.identity import Identity
from strongroom.runtime.state_guard import TAMPER_RULE
from strongroom.server.client import Client, KnownServers
from strongroom.server.signatures import REPLAY_WINDOW_S
from strongroom.server.workers import NONCE_DB

import cli_zygote
from cli_fixtures import Run, make_runner, serve_process, strongroom_exe, unseal_home
from vault_fixtures import make_model

MODEL = "multi"
SHARDS = 2
RELEASE = "/v1/keys/release"
RELEASE_MANY = "/v1/keys/release-many"
#: What the signature check answers a spent request nonce with.
REPLAYED_NONCE = "this signed request was already used (replayed nonce)"
#: How the gate's refusal of spent release evidence begins (its own memory of spent
#: nonces, or the egress ledger's "its nonce is already charged" after it).
EVIDENCE_REPLAY = "the evidence was already used (replay)"
#: Seconds a replay must leave before the signature's window closes (to be judged at all).
_MARGIN_S = 3

#: The engineer's side, run from its own working directory with STRONGROOM_URL set: a full
#: load and one shard released alone. Every signed key request is recorded as it leaves
#: the client (method, target, headers, body: the bytes on the wire), with the status and
#: the number of keys of its answer (never the keys). Prints each tensor's SHA-256 and the
#: single shard's plaintext SHA-256.
_ENGINEER = r"""
import base64, hashlib, json, sys
import httpx, numpy as np
import strongroom
from strongroom.server.client import Client

sent = []
_send = httpx.Client.send

def send(self, request, **kw):
    response = _send(self, request, **kw)
    if request.url.path in ("/v1/keys/release", "/v1/keys/release-many"):
        answer = response.json()
        keys = ([k for k in answer.get("keys", []) if k.get("file_key")]
                if "keys" in answer else [answer] if answer.get("file_key") else [])
        sent.append({"method": request.method, "target": request.url.raw_path.decode(),
                     "headers": list(request.headers.items()),
                     "body": base64.b64encode(request.content).decode(),
                     "status": response.status_code, "keys": len(keys)})
    return response

httpx.Client.send = send
tensors = {}
with strongroom.open_weights(sys.argv[2]) as w:
    for name in w:
        tensors[name] = hashlib.sha256(np.ascontiguousarray(w[name]).tobytes()).hexdigest()
with Client.from_env() as client:
    with client.open_shard(sys.argv[2], None, sys.argv[3], purpose="load") as reader:
        single = hashlib.sha256()
        for i in range(reader.num_chunks):
            single.update(reader.decrypt_chunk(i))
with open(sys.argv[1], "w") as f:
    json.dump(sent, f)
print(json.dumps({"tensors": tensors, "single": single.hexdigest()}))
"""


def _desk_env(desk: Path, base: str, identity: Path) -> dict[str, str]:
    """A client's environment: only the server's URL and an identity (no data directory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_URL=base, STRONGROOM_IDENTITY=str(identity),
               STRONGROOM_KNOWN_SERVERS=str(desk / "known_servers"),
               STRONGROOM_HOME=str(desk / "no-home"))
    return env


def _remote(desk: Path, base: str, identity: Path, *args: str) -> str:
    """``strongroom ARGS`` run in ``desk`` against the server; its stdout (a forked process:
    the desk's environment differs from the test's only in ``STRONGROOM_*`` settings)."""
    out = cli_zygote.run([strongroom_exe(), *args], _desk_env(desk, base, identity),
                         timeout=120, cwd=desk)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    return out.stdout


def _unseal(run: Run, home: Path) -> None:
    shares = sorted((home.parent / "shares").glob("share-*.age"))
    for i in (1, 2):
        run("unseal", "--share", shares[i - 1], "--identity",
            home.parent / "custodians" / f"c{i}.key")


def _enroll(run: Run, tmp: Path) -> dict[str, Path]:
    """The officer enrolls the engineer (requesters) and two approvers; their identity files."""
    files = {}
    for name, role in (("engineer", "requesters"), ("approver1", "approvers"),
                       ("approver2", "approvers")):
        ident = Identity.generate(name)
        files[name] = tmp / f"{name}.identity"
        ident.save(files[name])
        (tmp / f"{name}.pub").write_text(ident.public.to_text())
        run("people", "enroll", name, "--key", tmp / f"{name}.pub", "--vetting-expires",
            "2099-01-01", "--clearance", "top-secret", "--role", role)
    return files


def _created(request: dict[str, Any]) -> int:
    """The ``created`` time the request's signature carries."""
    sig_input = next(v for k, v in request["headers"] if k.lower() == "signature-input")
    found = re.search(r";created=(\d+)", sig_input)
    assert found, sig_input
    return int(found.group(1))


def _replay(base: str, request: dict[str, Any]) -> httpx.Response:
    """The recorded request's exact bytes sent again (httpx sets Host and Content-Length)."""
    left = _created(request) + REPLAY_WINDOW_S - time.time()
    assert left > _MARGIN_S, (f"the replay comes {REPLAY_WINDOW_S - left:.0f} s after signing: "
                              "too late to judge (a stale signature is refused anyway)")
    headers = [(k, v) for k, v in request["headers"]
               if k.lower() not in ("host", "content-length")]
    return httpx.request(request["method"], base + request["target"], headers=headers,
                         content=base64.b64decode(request["body"]), timeout=60)


def _no_key(answer: httpx.Response) -> dict[str, Any]:
    """The refusal's JSON, checked to carry no file key anywhere."""
    assert b"file_key" not in answer.content, answer.text[:300]
    body: dict[str, Any] = answer.json()
    return body


def _refused_as_replayed_nonce(base: str, sent: dict[str, dict[str, Any]]) -> None:
    """Both recorded requests: 401 at the signature check, the nonce already spent."""
    for path, request in sent.items():
        answer = _replay(base, request)
        body = _no_key(answer)
        assert (answer.status_code, body.get("type"), body.get("error")) == (
            401, "Unauthenticated", REPLAYED_NONCE), (path, answer.status_code, answer.text)


def _refused_by_the_gate(base: str, sent: dict[str, dict[str, Any]]) -> None:
    """Both recorded requests pass the signature check and the gate refuses each shard as
    spent evidence (release: 403; release-many: each shard its own refusal)."""
    single = _replay(base, sent[RELEASE])
    body = _no_key(single)
    assert single.status_code == 403 and body["type"] == "AccessDenied", single.text
    assert body["error"].startswith(EVIDENCE_REPLAY), body
    many = _replay(base, sent[RELEASE_MANY])
    body = _no_key(many)
    assert many.status_code == 200 and len(body["keys"]) == SHARDS, many.text
    for item in body["keys"]:
        assert item["error"]["type"] == "AccessDenied", item
        assert item["error"]["error"].startswith(EVIDENCE_REPLAY), item


@contextlib.contextmanager
def _dba(db_url: str) -> Iterator[Any]:
    """A connection of the database's administrator (direct SQL, no strongroom code)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _charges(db_url: str) -> int:
    with _dba(db_url) as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM egress_charges WHERE principal = 'engineer'")).scalar_one())


def _clear_request_nonces(db_url: str, home: Path) -> None:
    """What a hostile administrator does to the spent request nonces of the deployment."""
    if db_url.startswith("postgresql"):
        with _dba(db_url) as conn:
            deleted = conn.execute(text("DELETE FROM server_nonces")).rowcount
        assert deleted >= 2, deleted  # at least the two recorded requests' nonces
        return
    # SQLite: not in the database (its server_nonces table stays empty), in the mapped
    # table under the data directory, mode 0600: the host user owning it zeroes its slots
    # in place (the running workers map the same pages).
    with _dba(db_url) as conn:
        assert conn.execute(text("SELECT count(*) FROM server_nonces")).scalar_one() == 0
    table = home / NONCE_DB
    assert table.stat().st_mode & 0o777 == 0o600
    size = table.stat().st_size
    with open(table, "r+b") as f:
        f.seek(4096)  # the header (layout and hash key) stays: a table with no nonce spent
        assert f.read().strip(b"\0"), "no spent nonce in the mapped table"
        f.seek(4096)
        f.write(bytes(size - 4096))
        f.flush()
        os.fsync(f.fileno())


def _delete_charges(db_url: str, n: int) -> None:
    """The administrator deletes the engineer's ``n`` rows of the egress ledger."""
    with _dba(db_url) as conn:
        deleted = conn.execute(text(
            "DELETE FROM egress_charges WHERE principal = 'engineer'")).rowcount
    assert deleted == n, deleted


def _deletion_noticed(base: str, officer: Identity, tmp: Path, db_url: str, n: int, *,
                      wait_s: float) -> None:
    """Within ``wait_s`` the ``n`` deleted charges are back in the ledger, each with its
    critical SR-STATE-TAMPER alert (and that alert's ``alert.raise`` audit entry)."""
    deadline = time.monotonic() + wait_s
    while True:
        alerts, held = _tamper_alerts(base, officer, tmp), _charges(db_url)
        if (held == n and len(alerts) == n) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert held == n, (held, alerts)
    assert [a["severity"] for a in alerts] == ["critical"] * n, alerts


def _tamper_alerts(base: str, officer: Identity, tmp: Path) -> list[dict[str, Any]]:
    with Client(base, officer, known_servers=KnownServers(tmp / "officer.known_servers")) as c:
        return [a for a in c.get("/v1/alerts", params={"limit": 1000})
                if a["rule"] == TAMPER_RULE and a["subject"] == "engineer"]


class _Deployment(NamedTuple):
    """A data directory with MODEL imported and the engineer and approvers enrolled (sealed:
    ``serve`` starts its key agent)."""

    run: Run
    env: dict[str, str]
    home: Path
    shards: list[Path]
    model: dict[str, np.ndarray]
    people: dict[str, Path]
    officer: Identity


def _deployment(tmp: Path, db_url: str) -> _Deployment:
    home = tmp / "home"
    run, env = unseal_home(home, db_url)
    src = tmp / "multi"
    src.mkdir()
    shards = [src / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)]
    model: dict[str, np.ndarray] = {}
    for i, path in enumerate(shards):
        model.update(make_model(path, seed=i, prefix=f"s{i}."))
    run("weights", "import", src, "--name", MODEL)
    people = _enroll(run, tmp)
    run("seal")  # serve starts the data directory's key agent itself
    return _Deployment(run, env, home, shards, model, people,
                       Identity.load(Path(env["STRONGROOM_IDENTITY"])))


@pytest.mark.timeout(600)
def test_replayed_releases_stay_refused_across_restart_and_dba(tmp_path: Path,
                                                               db_url: str) -> None:
    d = _deployment(tmp_path, db_url)
    run, home, people = d.run, d.home, d.people
    desk = tmp_path / "desk"  # the engineer's own working directory, nothing of the vault
    desk.mkdir()
    record = desk / "sent.json"

    with serve_process(d.env, tmp_path / "serve-1.log") as base:
        _unseal(run, home)
        out = _remote(desk, base, people["engineer"], "access", "request", MODEL,
                      "--action", "load", "--purpose", "eval run")
        request_id = out.split()[1]
        for approver in ("approver1", "approver2"):
            _remote(desk, base, people[approver], "access", "approve", request_id)
        # (a, b) the full load and the single-shard release, as the engineer runs them
        loaded = subprocess.run(
            [sys.executable, "-c", _ENGINEER, str(record), MODEL, d.shards[0].name],
            env=_desk_env(desk, base, people["engineer"]), cwd=desk, capture_output=True,
            text=True, timeout=120, check=False)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        got = json.loads(loaded.stdout)
        assert got["tensors"] == {
            k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            for k, v in d.model.items()}
        assert got["single"] == hashlib.sha256(d.shards[0].read_bytes()).hexdigest()
        sent_list = json.loads(record.read_text())
        sent = {r["target"]: r for r in sent_list}
        # one release-many for the whole load, then one release: each answered with keys
        assert [(r["target"], r["status"], r["keys"]) for r in sent_list] == [
            (RELEASE_MANY, 200, SHARDS), (RELEASE, 200, 1)]
        assert _charges(db_url) == SHARDS + 1
        # (i) the same bytes at once
        _refused_as_replayed_nonce(base, sent)

    with serve_process(d.env, tmp_path / "serve-2.log") as base:  # same home, same database
        _unseal(run, home)
        # (ii) after the restart
        _refused_as_replayed_nonce(base, sent)
        # (iii) the spent request nonces cleared behind the server's back
        _clear_request_nonces(db_url, home)
        _refused_by_the_gate(base, sent)
        # (iv) ... and the egress ledger's rows of those charges deleted too (with the
        # nonces the refused replays spent again)
        _clear_request_nonces(db_url, home)
        _delete_charges(db_url, SHARDS + 1)
        _refused_by_the_gate(base, sent)
        # the deletion is noticed: each row comes back from the audit log, with an alert
        _deletion_noticed(base, d.officer, tmp_path, db_url, SHARDS + 1, wait_s=30)
        # every refusal the gate made is in the log, which still verifies
        entries = json.loads(run("audit", "tail", "-n", "300", "--json").stdout)
        mine = [(e["decision"], e["reason"]) for e in entries
                if e["action"] == "key.release" and e["actor"] == "engineer"]
        assert [dec for dec, _ in mine] == ["allow"] * (SHARDS + 1) + ["deny"] * 2 * (SHARDS + 1)
        assert all(r.startswith(EVIDENCE_REPLAY) for dec, r in mine if dec == "deny"), mine
        raised = [e for e in entries if e["action"] == "alert.raise"
                  and e["details"].get("rule") == TAMPER_RULE]
        assert len(raised) == SHARDS + 1, raised
        run("audit", "verify")


@pytest.mark.timeout(600)
def test_ledger_rows_deleted_while_serve_is_down_are_alerted_at_unseal(
        tmp_path: Path, db_url: str) -> None:
    d = _deployment(tmp_path, db_url)
    engineer = Identity.load(d.people["engineer"])
    with serve_process(d.env, tmp_path / "serve-1.log") as base:
        _unseal(d.run, d.home)
        as_engineer = make_runner(dict(d.env, STRONGROOM_IDENTITY=str(d.people["engineer"])))
        request_id = as_engineer("access", "request", MODEL, "--action", "load", "--purpose",
                                 "eval run").stdout.split()[1]
        for approver in ("approver1", "approver2"):
            make_runner(dict(d.env, STRONGROOM_IDENTITY=str(d.people[approver])))(
                "access", "approve", request_id)
        with Client(base, engineer, known_servers=KnownServers(tmp_path / "pins")) as c:
            assert c.verify(MODEL, purpose="load")[1] == SHARDS  # a key released per shard
        assert _charges(db_url) == SHARDS
    _delete_charges(db_url, SHARDS)  # while nothing runs to see it
    with serve_process(d.env, tmp_path / "serve-2.log") as base:
        _unseal(d.run, d.home)  # the guard's first check runs before the unseal returns
        _deletion_noticed(base, d.officer, tmp_path, db_url, SHARDS, wait_s=5)

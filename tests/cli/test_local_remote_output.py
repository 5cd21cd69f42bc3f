"""Every command the API offers prints the same embedded and with STRONGROOM_URL set.

One world per database (SQLite and PostgreSQL): a vault whose keys live in the
local key agent, served over a real uvicorn (the worker layout of ``strongroom
serve``). The embedded side runs the CLI on that data directory and database;
the remote side runs it from an empty home against the server. Text and
``--json`` output must be byte-for-byte identical: both services return the
same rows (strongroom.service) and the CLI renders them once. Every command in
``placement.REMOTE`` is either compared here or named in ``CHANGES_STATE``
(compared by the tests that drive it remotely), so a command that becomes
remote cannot skip the comparison.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_kit import ServerWorld, UvicornThread, build_world, run_cli, server_db  # noqa: F401  (fixture)

from strongroom.cli import placement
from strongroom.monitor.alerts import Alert, AlertManager
from strongroom.monitor.egress import Budget, EgressMeter
from strongroom.vault.documents import add_document

import cli_zygote
from cli_fixtures import strongroom_exe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    tmp = tmp_path_factory.mktemp("parity")
    mp = pytest.MonkeyPatch()
    mp.setenv("STRONGROOM_HOME", str(tmp / "home"))
    mp.setenv("STRONGROOM_DATABASE_URL", server_db or f"sqlite:///{tmp / 'sr.db'}")
    mp.delenv("STRONGROOM_IDENTITY", raising=False)
    mp.delenv("STRONGROOM_URL", raising=False)
    server = UvicornThread()
    try:
        for w in build_world(tmp, http_factory=server, agent=True, db_url=server_db):
            w.grant_load("alice")
            r = w.client("alice").post("/v1/keys/release", w.release_body("alice"))
            assert r.status_code == 200, r.text  # an entry with shard and bytes
            manager = AlertManager(w.ctx.store, audit=w.ctx.audit())  # alert.raise entries
            manager.raise_alert(Alert("egress-spike", "high", "alice", "tiny@1",
                                      "3 GiB in an hour", "parity-1"))
            acked = manager.raise_alert(Alert("odd-hours", "warning", "bob", "tiny@1",
                                              "load at 03:00", "parity-2"))
            manager.ack(acked.id, by="officer", note="on call")
            EgressMeter(w.ctx.store).set_budget(Budget("principal", "alice", 86400, 3 << 30))
            doc = tmp / "runbook.md"
            doc.write_text("rotate the on-call key quarterly\n")
            add_document(w.ctx.vault(identity=w.officer), doc, name="runbook",
                         classification="secret", compartments=["atlas"])
            doc.unlink()
            yield w
    finally:
        server.stop()
        mp.undo()


def _embedded(world: ServerWorld, who: str, *args: str, ok: bool = True
              ) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS`` on the world's data directory and database, signing as ``who``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(world.tmp / "home"),
               STRONGROOM_DATABASE_URL=world.ctx.settings.resolved_database_url,
               STRONGROOM_IDENTITY=str(world.tmp / f"{who}.identity"))
    out = cli_zygote.run([strongroom_exe(), *args], env, timeout=120)  # a forked process
    assert (out.returncode == 0) == ok and "Traceback" not in out.stderr, out.stdout + out.stderr
    return out


#: (who, argv, --json too): the remote commands that only read, compared byte for byte.
LISTINGS = [
    ("alice", ("weights", "ls"), True),
    ("alice", ("weights", "show", "tiny"), True),
    ("alice", ("status",), True),
    ("alice", ("keys", "public"), True),
    ("alice", ("keys", "public", "--manifest"), True),
    ("alice", ("access", "grants"), True),
    ("alice", ("access", "grants", "--pending"), True),
    ("eve", ("alerts", "ls"), True),
    ("eve", ("alerts", "ls", "--all"), True),
    ("eve", ("audit", "tail", "-n", "8"), True),
    ("eve", ("audit", "show", "2"), False),
    ("eve", ("audit", "prove", "2"), False),
    ("eve", ("audit", "verify"), False),
    ("eve", ("monitor", "egress"), True),
    ("eve", ("monitor", "egress", "--compression", "2.5", "--json"), False),
    ("alice", ("people", "ls"), True),
    ("alice", ("compartments", "ls"), True),
    ("alice", ("docs", "ls"), True),
    ("alice", ("access", "caps"), True),
    ("alice", ("access", "break-glass", "--pending"), True),
    ("eve", ("posture", "assess"), True),
    ("eve", ("audit", "export"), False),
    ("eve", ("audit", "export", "--format", "jsonl", "--from", "3"), False),
    ("eve", ("alerts", "export"), False),
]
#: Remote commands that change state; tests/server/test_server_remote_cli.py and
#: test_server_remote_seal.py drive each against a server and check what it printed, and
#: test_signed_changes_print_the_same (below) makes revoke, break-glass and keys
#: rotate/rewrap both ways and compares.
CHANGES_STATE = frozenset({
    "access approve", "access deny", "access request", "access revoke", "alerts ack",
    "audit checkpoint", "keys rewrap", "keys rotate", "seal", "unseal", "weights import",
    "weights verify",
    # test_officer_statements_print_the_same (below) makes each both ways and compares
    "compartments label", "people cosign", "people enroll", "people revoke",
})
#: What a posture report measures at the moment it runs: the monitor loop's age, and when.
LIVE = re.compile(r"(?<=older than )[\d,.]+(?= s)|(?<=audit log )[\d,]+(?= s ago)"
                  r'|(?<="generated": ")[^"]+')
CASES = [(who, (*args, "--json") if as_json else args)
         for who, args, has_json in LISTINGS for as_json in ((False, True) if has_json
                                                             else (False,))]


def _command(args: tuple[str, ...]) -> str:
    from strongroom.cli.main import command_path

    return command_path(list(args))


#: Remote reads of one object by id, compared by their own test below.
BY_ID = frozenset({"access show"})


def test_every_remote_command_is_compared_or_driven() -> None:
    compared = {_command(args) for _, args, _ in LISTINGS} | BY_ID
    assert compared.isdisjoint(CHANGES_STATE)
    assert compared | CHANGES_STATE == placement.REMOTE, (
        "classify each remote command here: compare its output (LISTINGS) or name it in "
        "CHANGES_STATE with a test that drives it against a server")


@pytest.mark.parametrize(("who", "argv"), CASES, ids=[" ".join(a) for _, a in CASES])
def test_embedded_and_remote_print_the_same(world: ServerWorld, who: str,
                                            argv: tuple[str, ...]) -> None:
    assert _command(argv) in placement.REMOTE
    remote = run_cli(world, who, *argv).stdout
    local = _embedded(world, who, *argv).stdout
    if argv[0] == "posture":
        remote, local = LIVE.sub("<age>", remote), LIVE.sub("<age>", local)
    assert remote == local
    assert remote.strip()


def test_audit_tail_names_bytes_as_recorded(world: ServerWorld) -> None:
    import json

    rows = json.loads(run_cli(world, "eve", "audit", "tail", "-n", "50", "--json").stdout)
    release = next(r for r in rows if r["action"] == "key.release")
    assert release["bytes"] > 0 and release["shard"] and "nbytes" not in release


def _masked(text: str, ids: dict[str, str]) -> str:
    """``text`` with each id's 16-character prefix replaced by its placeholder."""
    for ident, placeholder in ids.items():
        text = text.replace(ident[:16], placeholder)
    return text


def _critical(proc: subprocess.CompletedProcess[str]) -> str:
    return "".join(line for line in proc.stderr.splitlines(keepends=True)
                   if line.startswith("CRITICAL"))


def test_access_show_prints_the_consoles_code_on_both_paths(world: ServerWorld) -> None:
    """``access show ID`` prints the request's short code, computed from the envelope, the
    same embedded and remotely; bad ids are refused with exit 2 and no traceback."""
    import json

    from strongroom.access import statements
    from strongroom.units import short_code

    env = statements.envelopes(world.ctx.store, "request")[0]
    digest = statements.payload_digest(env)
    for extra in ((), ("--json",)):
        argv = ("access", "show", digest[:12], *extra)
        remote = run_cli(world, "bob", *argv).stdout
        assert remote == _embedded(world, "bob", *argv).stdout
    text = run_cli(world, "bob", "access", "show", digest[:12]).stdout
    assert text.startswith(f"request {short_code(digest)}\n") and digest in text
    shown = json.loads(run_cli(world, "bob", "access", "show", digest, "--json").stdout)
    assert shown["code"] == short_code(digest) and shown["request"] == digest
    assert shown["statement"] == statements.unverified_payload(env)
    for bad in ("zz", "0" * 7, "ffffffffff"):
        out = run_cli(world, "bob", "access", "show", bad, ok=False)
        assert out.returncode in (2, 3) and "Traceback" not in out.stderr, out.stderr


def test_signed_changes_print_the_same(world: ServerWorld) -> None:
    """Each signed change is made twice, remotely and embedded, on twin objects: the two
    print the same but for the ids and counters, and both take effect."""
    import json

    from strongroom.access import statements
    from strongroom.access.directory import ResourceLabel, Rule, level

    # access revoke: one of two fresh grants each way
    g_remote, g_local = world.grant_load("alice"), world.grant_load("alice")
    remote = run_cli(world, "alice", "access", "revoke", g_remote[:12], "--reason", "done")
    local = _embedded(world, "alice", "access", "revoke", g_local[:12], "--reason", "done")
    assert remote.stdout == f"grant {g_remote[:16]} revoked by alice\n"
    assert _masked(remote.stdout, {g_remote: "<g>"}) == _masked(local.stdout, {g_local: "<g>"})
    tail = json.loads(run_cli(world, "eve", "audit", "tail", "-n", "40", "--json").stdout)
    revoked = {e["details"]["grant"]: e["actor"] for e in tail if e["action"] == "access.revoke"}
    assert revoked.get(g_remote) == revoked.get(g_local) == "alice", revoked
    # access grants shows the revocation as the gate derives it, the same on both faces
    for extra in ((), ("--json",)):
        shown = run_cli(world, "alice", "access", "grants", *extra).stdout
        assert shown == _embedded(world, "alice", "access", "grants", *extra).stdout
    listed = {g["grant_id"]: g for g in json.loads(
        run_cli(world, "alice", "access", "grants", "--json").stdout)}
    assert listed[g_remote]["state"] == listed[g_local]["state"] == "revoked", listed
    assert listed[g_remote]["revoked_by"] == listed[g_local]["revoked_by"] == "alice"
    assert "active" in {g["state"] for g in listed.values()}

    # access break-glass: alice is listed by a newer label, takes it each way, bob reviews
    label = ResourceLabel("tiny", level("secret"), ("atlas",), {"load": Rule.parse(
        "2 of approvers")}, break_glass=("alice",), break_glass_window_s=900, serial=2,
        issued=int(time.time())).sign(world.officer.private_key)
    r = world.client("officer").post("/v1/statements", {"kind": "label", "envelope": label})
    assert r.status_code == 201, r.text
    argv = ("access", "break-glass", "tiny", "--reason", "outage", "--window", "1h")
    # bob is not listed: refused alike each way (one check), nothing stored
    before = len(statements.envelopes(world.ctx.store, "break-glass"))
    remote, local = run_cli(world, "bob", *argv, ok=False), _embedded(world, "bob", *argv,
                                                                      ok=False)
    assert "bob is not listed for break-glass on tiny" in remote.stderr, remote.stderr
    assert remote.stderr == local.stderr and remote.returncode == local.returncode
    assert len(statements.envelopes(world.ctx.store, "break-glass")) == before
    remote, local = run_cli(world, "alice", *argv), _embedded(world, "alice", *argv)
    bg_remote, bg_local = remote.stdout.split()[-1], local.stdout.split()[-1]
    assert remote.stdout == f"break-glass {bg_remote}\n" and bg_remote != bg_local
    assert "alice broke glass on tiny (load, 15 min): outage" in _critical(remote)
    assert _critical(remote) == _critical(local)
    remote = run_cli(world, "bob", "access", "break-glass", "--review", bg_remote)
    local = _embedded(world, "bob", "access", "break-glass", "--review", bg_local)
    assert remote.stdout == f"bob reviewed break-glass {bg_remote}: justified\n"
    assert _masked(remote.stdout, {bg_remote: "<b>"}) == _masked(local.stdout, {bg_local: "<b>"})
    # each face journals the signed review, so the log can re-derive it if its row goes
    tail = json.loads(run_cli(world, "eve", "audit", "tail", "-n", "40", "--json").stdout)
    journaled = {e["details"]["break_glass"][:16]: e["details"]["statement"] for e in tail
                 if e["action"] == "access.break-glass.review"}
    for bg in (bg_remote, bg_local):
        signed = journaled[bg[:16]]
        assert signed["kind"] == "review" and signed["subject"].startswith(bg), journaled
        assert signed["envelope"] in statements.envelopes(world.ctx.store, "review",
                                                          subject=signed["subject"])
    for extra in ((), ("--json",)):
        pending = ("access", "break-glass", "--pending", *extra)
        shown = run_cli(world, "alice", *pending).stdout
        assert shown == _embedded(world, "alice", *pending).stdout
        assert bg_remote in shown and bg_local in shown and "bob" in shown

    # keys rotate and rewrap: a pinned officer's signed key order remotely, the agent locally
    remote = run_cli(world, "officer", "keys", "rotate")
    local = _embedded(world, "officer", "keys", "rotate")
    versions = [int(re.findall(r"\d+", p.stdout)[0]) for p in (remote, local)]
    assert versions[1] == versions[0] + 1
    assert re.sub(r"\d+", "N", remote.stdout) == re.sub(r"\d+", "N", local.stdout) == \
        "KEK version N created; run `strongroom keys rewrap`\n"
    remote = run_cli(world, "officer", "keys", "rewrap")
    local = _embedded(world, "officer", "keys", "rewrap")
    assert re.fullmatch(r"rewrapped [1-9]\d* file key\(s\)\n", remote.stdout), remote.stdout
    assert re.sub(r"\d+", "N", remote.stdout) == re.sub(r"\d+", "N", local.stdout)
    status = json.loads(run_cli(world, "alice", "status", "--json").stdout)
    assert max(status["kek_versions"]) == versions[1]


def test_officer_statements_print_the_same(world: ServerWorld) -> None:
    """An officer enrolls, labels, cosigns and revokes from the vault host and from another
    machine (STRONGROOM_URL) on twin objects: text and --json print the same but for the
    objects' names and ids, and each statement counts (people ls sees it); a non-officer is
    refused remotely as on the vault host."""
    import json

    from strongroom.keys.identity import Identity

    def both(argv: tuple[str, ...], twins: tuple[str, str],
             json_twins: tuple[str, str] | None = None) -> list[dict[str, object]]:
        """``argv`` each way (``{}``: the twin), text then --json; returns the JSON rows.

        ``json_twins``: other twins for the --json run, for a change that cannot be made
        twice (a key revoked already is refused).
        """
        fill = [[a.format(t) for a in argv] for t in twins]
        again = [[a.format(t) for a in argv] for t in json_twins] if json_twins else fill
        texts = [run_cli(world, "officer", *fill[0]).stdout,
                 _embedded(world, "officer", *fill[1]).stdout]
        rows = [json.loads(run_cli(world, "officer", *again[0], "--json").stdout),
                json.loads(_embedded(world, "officer", *again[1], "--json").stdout)]
        # ids (statement prefixes, key ids) are 16 hex digits; the twins' names differ too
        masked = [re.sub(r"\b[0-9a-f]{16}\b", "<id>", text).replace(twin, "<o>")
                  for text, twin in zip(texts, twins, strict=True)]
        assert all(text.strip() for text in texts)
        assert masked[0] == masked[1], texts
        names = set(twins) | set(json_twins or ())
        plain = [{k: ("<o>" if v in names else v) for k, v in row.items()
                  if k not in ("statement", "key_id")} for row in rows]
        assert plain[0] == plain[1], rows
        return rows

    for twin in ("dora", "dave", "dina", "dean"):
        (world.tmp / f"{twin}.pub").write_text(Identity.generate(twin).public.to_text())
    enroll = ("people", "enroll", "{}", "--key", str(world.tmp / "{}.pub"),
              "--vetting-expires", "2099-01-01", "--role", "approvers", "--compartment", "atlas")
    remote, _ = both(enroll, ("dora", "dave"))
    both(enroll, ("dina", "dean"))  # the --json revocation's twins (a key is revoked once)
    # a pinned officer who is not enrolled is named by key id, as the server's gate names it
    assert remote["signer"] == f"officer-{world.officer.public.key_id}", remote
    assert remote["signatures"] == 1 and remote["serial"] == 2, remote
    people = {p["name"]: p for p in json.loads(run_cli(world, "alice", "people", "ls",
                                                         "--json").stdout)}
    assert people["dora"]["current"] and people["dave"]["current"], people

    label = ("compartments", "label", "{}", "--classification", "secret", "--compartment",
             "atlas", "--rule", "load=2 of approvers", "--break-glass", "alice")
    remote, local = both(label, ("twin-remote", "twin-local"))
    assert remote["resource"] == "twin-remote" and remote["serial"] == 2, remote

    # cosign by a 12-character prefix: the same officer signing again adds no signature
    cosigned = both(("people", "cosign", "{}"), (str(remote["statement"])[:12],
                                                 str(local["statement"])[:12]))
    assert [c["kind"] for c in cosigned] == ["label", "label"]
    assert [c["statement"] for c in cosigned] == [remote["statement"], local["statement"]]

    twins = people["dora"]["key_id"], people["dave"]["key_id"]
    json_twins = people["dina"]["key_id"], people["dean"]["key_id"]
    remote, _ = both(("people", "revoke", "{}", "--reason", "left the lab"), twins, json_twins)
    assert remote["key_id"] == json_twins[0] and remote["signatures"] == 1, remote
    people = {p["name"]: p for p in json.loads(run_cli(world, "alice", "people", "ls",
                                                         "--json").stdout)}
    assert not {"dora", "dave", "dina", "dean"} & set(people), people
    again = run_cli(world, "officer", "people", "revoke", twins[0], "--reason", "again",
                    ok=False)
    assert again.returncode != 0 and "already revoked" in again.stderr, again.stderr
    refused = run_cli(world, "alice", *[a.format("eve2") for a in label], ok=False)
    assert refused.returncode == 6 and "not a security officer" in refused.stderr, refused.stderr

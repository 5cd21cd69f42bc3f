"""People are who sign (issue 17 item 7), and the access commands' units and JSON (item 6).

Through the installed ``strongroom`` command on a real unsealed vault: a change
without ``STRONGROOM_IDENTITY`` is refused before any work, and the audit log
names the signing identity (the OS user only beside it, as ``os_user``); an
approval that could not count exits non-zero saying why; durations need a unit.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.keys.identity import Identity

from cli_fixtures import Run, make_runner, unseal_home
from vault_fixtures import make_model


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[tuple[Run, dict[str, str]]]:
    run, env = unseal_home(tmp_path / "home", None)
    try:
        yield run, env
    finally:
        run("seal", ok=False)


def _people(tmp_path: Path, run: Run, env: dict[str, str]) -> dict[str, Run]:
    """alice (requesters), bob and carol (approvers), enrolled by the officer; a runner each."""
    runners = {}
    for name, role in (("alice", "requesters"), ("bob", "approvers"), ("carol", "approvers")):
        ident = Identity.generate(name)
        ident.save(tmp_path / f"{name}.identity")
        (tmp_path / f"{name}.identity.pub").write_text(ident.public.to_text())
        run("people", "enroll", name, "--key", tmp_path / f"{name}.identity.pub",
            "--clearance", "top-secret", "--compartment", "atlas", "--role", role,
            "--vetting-expires", "2099-01-01")
        runners[name] = make_runner(dict(env, STRONGROOM_IDENTITY=str(tmp_path /
                                                                      f"{name}.identity")))
    return runners


def _tail(run: Run, n: int = 20) -> list[dict[str, object]]:
    return [json.loads(line) for line in run("audit", "tail", "-n", str(n)).stdout.splitlines()
            if line.strip()]


def test_a_change_needs_an_identity_and_the_log_names_it(
        vault: tuple[Run, dict[str, str]], tmp_path: Path) -> None:
    run, env = vault
    src = tmp_path / "m.safetensors"
    make_model(src)
    anonymous = make_runner({k: v for k, v in env.items() if k != "STRONGROOM_IDENTITY"})
    refused = anonymous("weights", "import", src, "--name", "tiny", ok=False)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "STRONGROOM_IDENTITY" in refused.stderr and "keys new-identity" in refused.stderr
    assert json.loads(run("weights", "ls", "--json").stdout) == []  # nothing was imported
    run("weights", "import", src, "--name", "tiny", "--compartment", "atlas")
    officer = Identity.load(Path(env["STRONGROOM_IDENTITY"])).public.principal
    imported = [e for e in _tail(run) if e["action"] == "weights.import"]
    assert [e["actor"] for e in imported] == [officer]
    assert imported[0]["details"]["os_user"] == getpass.getuser()  # type: ignore[index]
    assert officer != getpass.getuser()


def test_approvals_that_would_not_count_are_refused(
        vault: tuple[Run, dict[str, str]], tmp_path: Path) -> None:
    run, env = vault
    src = tmp_path / "m.safetensors"
    make_model(src)
    run("weights", "import", src, "--name", "tiny", "--compartment", "atlas")
    who = _people(tmp_path, run, env)
    unitless = who["alice"]("access", "request", "tiny", "--purpose", "eval",
                            "--duration", "8", ok=False)
    assert unitless.returncode == 2
    assert "--duration 8 has no unit" in unitless.stderr and "4h" in unitless.stderr
    out = who["alice"]("access", "request", "tiny", "--purpose", "eval", "--duration", "4h",
                       "--bytes", "1G").stdout
    assert "for 4 h, 1.0 GiB; needs 2 of approvers" in out
    request_id = out.split()[1]
    own = who["alice"]("access", "approve", request_id, ok=False)
    assert own.returncode == 6 and "alice made this request and cannot approve it" in own.stderr
    # the pinned officer is not an enrolled principal: its approval would count for nothing
    officer = run("access", "approve", request_id, ok=False)
    assert officer.returncode == 6 and "not an enrolled, unrevoked principal" in officer.stderr
    assert "people enroll" in officer.stderr
    assert "not yet" in who["bob"]("access", "approve", request_id).stdout
    twice = who["bob"]("access", "approve", request_id, ok=False)
    assert twice.returncode == 3 and "bob approved this request already" in twice.stderr
    pending = json.loads(run("access", "grants", "--pending", "--json").stdout)
    assert [(r["requester"], r["approvals"], r["duration_s"], r["byte_budget"], r["rule"])
            for r in pending] == [("alice", ["bob"], 4 * 3600, 1 << 30, "2 of approvers")]
    assert "issued" in who["carol"]("access", "approve", request_id, "--ttl", "1h").stdout
    grants = json.loads(run("access", "grants", "--json").stdout)
    assert len(grants) == 1 and set(grants[0]) == {
        "grant_id", "holder", "action", "resource", "approvers", "issued", "expires",
        "byte_budget", "issuer", "state", "revoked_by", "spent"}
    assert grants[0]["state"] == "active" and grants[0]["revoked_by"] is None
    assert grants[0]["approvers"] == ["bob", "carol"] and grants[0]["byte_budget"] == 1 << 30
    assert grants[0]["expires"].endswith("Z")
    caps = json.loads(run("access", "caps", "--json").stdout)
    assert caps == [{"artifact": "tiny", "holders": {"infer": 0, "load": 1, "read": 0,
                                                     "export": 0},
                     "caps": {"infer": 100, "load": 50, "read": 50, "export": 20}}]
    actors = {e["actor"] for e in _tail(run, 40) if e["action"] == "access.approve"}
    assert actors == {"bob", "carol"}


def test_revoking_a_name_nobody_holds_or_a_key_twice_is_refused(
        vault: tuple[Run, dict[str, str]], tmp_path: Path) -> None:
    run, env = vault
    _people(tmp_path, run, env)
    before = len(_tail(run, 200))
    typo = run("people", "revoke", "alcie", "--reason", "left", ok=False)
    assert typo.returncode != 0 and "alcie" in typo.stderr and "people ls" in typo.stderr
    assert "Traceback" not in typo.stderr
    assert len(_tail(run, 200)) == before  # nothing signed, nothing logged
    run("people", "revoke", "alice", "--reason", "left")
    again = run("people", "revoke", "alice", "--reason", "left", ok=False)
    assert again.returncode != 0 and "already revoked" in again.stderr
    assert "alice" not in run("people", "ls").stdout

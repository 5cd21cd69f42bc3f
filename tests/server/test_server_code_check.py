"""``strongroom serve --code-release``: a changed module stops the start, or the serving.

The server runs from a copy of the strongroom package (as a serving host's
installation), signed as a release by a code owner the officer pinned, so the
tree the suite runs from is never edited.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from server_kit import ServerWorld, build_world

from strongroom.gateway.codesign import CodeWatch, package_root, sign_release
from strongroom.gateway.owners import CodeOwners, publish_owners
from strongroom.keys.identity import Identity
from strongroom.server.app import create_app
from strongroom.server.codecheck import CodeCheck, release_check, report_change

from cli_fixtures import serve_process, unseal_home

OWNER = Identity.generate("olga")


def test_a_live_serve_from_a_signed_installation_refuses_after_a_module_changes(
        installed: tuple[Path, Path], tmp_path: Path) -> None:
    """The real ``strongroom serve --code-release`` running from the copy, owners pinned."""
    signed, release = installed
    root = tmp_path / "code" / "strongroom"
    shutil.copytree(signed, root)
    home = tmp_path / "home"
    run, env = unseal_home(home, None)
    (tmp_path / "olga.pub").write_text(OWNER.public.to_text())
    run("gateway", "owners", "set", "--code-owner", tmp_path / "olga.pub", "--threshold", "1")
    run("seal")
    env = dict(env, PYTHONPATH=str(root.parent), PYTHONDONTWRITEBYTECODE="1",
               STRONGROOM_CODE_CHECK_S="0")
    log = tmp_path / "serve.log"
    with serve_process(env, log, "--code-release", str(release)) as base:
        assert "the installed modules match release" in log.read_text()
        shares = sorted((home.parent / "shares").glob("share-*.age"))
        for i in (1, 2):
            run("unseal", "--share", shares[i - 1], "--identity",
                home.parent / "custodians" / f"c{i}.key")
        r = httpx.get(f"{base}/v1/sys/version", timeout=30)
        assert r.status_code == 200, r.text  # verified against the pinned owner: served
        target = root / "keys" / "keyring.py"
        target.write_text(target.read_text() + "\nimport os  # implant\n")
        r = httpx.get(f"{base}/v1/sys/version", timeout=30)
        assert r.status_code == 503 and r.json()["type"] == "code_changed", r.text
        assert str(target) in r.json()["error"]
        assert httpx.get(f"{base}/v1/sys/health", timeout=30).status_code == 200
    alerts = (home / "alerts.jsonl").read_text()
    assert "code-modified" in alerts and str(target) in alerts


def _copy_package(tmp: Path) -> Path:
    """A serving host's installation: a copy of the package (its directory)."""
    root = tmp / "code" / "strongroom"
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(package copy, its release signed by OWNER); tests copy it again before editing it."""
    tmp = tmp_path_factory.mktemp("installed")
    root = _copy_package(tmp)
    release = tmp / "release.json"
    release.write_text(sign_release([OWNER], root) + "\n")
    return root, release


def _serve(root: Path, release: Path, home: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from strongroom.cli.main import main; "
            "sys.argv = ['strongroom', 'serve', '--code-release', sys.argv[1]]; main()")
    env = dict(os.environ, PYTHONPATH=str(root.parent), PYTHONDONTWRITEBYTECODE="1",
               STRONGROOM_HOME=str(home), STRONGROOM_DATABASE_URL=f"sqlite:///{home / 'x.db'}")
    env.pop("STRONGROOM_CODE_RELEASE", None)
    return subprocess.run([sys.executable, "-c", code, str(release)], env=env, text=True,
                          capture_output=True, timeout=60, cwd=root.parent)


def test_serve_refuses_to_start_naming_the_changed_module(installed: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    signed, release = installed
    root = tmp_path / "code" / "strongroom"
    shutil.copytree(signed, root)
    # the signed installation passes the code check (and stops at the next one: no vault)
    ok = _serve(root, release, tmp_path / "home")
    assert "the installed modules match release" in ok.stderr, ok.stderr
    assert "not initialised" in ok.stderr or "init" in ok.stderr, ok.stderr
    assert "Traceback" not in ok.stderr
    # a module changed in the installation before start: refused, naming the file
    units = root / "units.py"
    units.write_text(units.read_text() + "\nBACKDOOR = 1\n")
    bad = _serve(root, release, tmp_path / "home")
    assert bad.returncode != 0
    assert "module changed since the release was signed" in bad.stderr, bad.stderr
    assert str(units) in bad.stderr and "Traceback" not in bad.stderr
    assert "match release" not in bad.stderr
    # an added module is named too
    shutil.copy2(signed / "units.py", units)
    extra = root / "server" / "extra.py"
    extra.write_text("X = 1\n")
    added = _serve(root, release, tmp_path / "home")
    assert added.returncode != 0 and "not in the signed release" in added.stderr
    assert str(extra) in added.stderr


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path)


def _pin_owner(world: ServerWorld) -> None:
    owners = CodeOwners((OWNER.public,), 1, serial=1, issued=int(time.time()))
    publish_owners(world.ctx.store, owners.sign(world.officer.private_key))


def _app(world: ServerWorld, release: Path, root: Path, clock: list[float],
         interval_s: float) -> TestClient:
    app = create_app(world.ctx)
    app.add_middleware(CodeCheck, watch=CodeWatch(release_check(world.ctx, release, root)),
                       interval_s=interval_s, on_change=report_change(world.ctx),
                       clock=lambda: clock[0])
    return TestClient(app, base_url="http://testserver")


def test_a_module_changed_while_serving_is_refused_audited_and_alerted(
        world: ServerWorld, installed: tuple[Path, Path], tmp_path: Path) -> None:
    signed, release = installed
    root = tmp_path / "code" / "strongroom"
    shutil.copytree(signed, root)
    clock = [1000.0]
    with _app(world, release, root, clock, interval_s=60) as http:
        # no code owners pinned yet: nothing is served (fail closed), health still answers
        r = http.get("/v1/sys/version")
        assert r.status_code == 503 and r.json()["type"] == "code_unverified", r.text
        assert "no code owners are pinned" in r.json()["error"]
        # the key release's hot path (entered below FastAPI's layers) passes the check too
        r = http.post("/v1/keys/release", json={})
        assert r.status_code == 503 and r.json()["type"] == "code_unverified", r.text
        _pin_owner(world)
        assert http.get("/v1/sys/version").status_code == 200  # verified: served
        target = root / "vault" / "__init__.py"
        target.write_text(target.read_text() + "\nimport os  # implant\n")
        clock[0] += 30  # before the next check: still served (the interval is the window)
        assert http.get("/v1/sys/version").status_code == 200
        clock[0] += 31
        r = http.get("/v1/sys/version")
        assert r.status_code == 503 and r.json()["type"] == "code_changed", r.text
        assert str(target) in r.json()["error"]
        r = http.post("/v1/keys/release", json={})
        assert r.status_code == 503 and r.json()["type"] == "code_changed", r.text
        target.write_text((signed / "vault" / "__init__.py").read_text())  # restored: still
        clock[0] += 120  # refused until a restart from the signed code
        assert http.get("/v1/sys/version").status_code == 503
        assert http.get("/v1/sys/health").status_code == 200  # health is never refused
        assert http.get("/livez").status_code == 200
    entries = [e for e in world.ctx.audit().tail(50) if e.action == "server.code"]
    assert len(entries) == 1 and entries[0].decision == "deny"
    assert entries[0].object == str(target)
    alerts = [a for a in world.ctx.alerts().recent() if a.rule == "code-modified"]
    assert len(alerts) == 1 and alerts[0].severity == "critical"


def test_a_release_the_pinned_owners_did_not_sign_is_refused(
        world: ServerWorld, installed: tuple[Path, Path], tmp_path: Path) -> None:
    signed, _ = installed
    _pin_owner(world)
    forged = tmp_path / "forged.json"
    forged.write_text(sign_release([Identity.generate("mallory")], signed))
    with _app(world, forged, signed, [0.0], interval_s=60) as http:
        r = http.get("/v1/sys/version")
        assert r.status_code == 503 and r.json()["type"] == "code_changed", r.text
    assert [a for a in world.ctx.alerts().recent() if a.rule == "code-modified"]

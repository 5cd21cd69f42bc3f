"""Backup and restore as an operator drills them: back up, destroy, restore, unseal, check, load."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from cli_fixtures import Run, grant_cli, make_runner, unseal_home
from testsupport import need_service, pg_schema
from vault_fixtures import make_model


def _unseal(run: Run, root: Path) -> None:
    shares = sorted((root / "shares").glob("share-*.age"))
    for i in (1, 2):
        run("unseal", "--share", shares[i - 1], "--identity", root / "custodians" / f"c{i}.key")


def _destroy(db_url: str, home: Path) -> None:
    """What a lost host leaves: no data directory, no database."""
    shutil.rmtree(home)
    if db_url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(db_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    _empty_schema(db_url)


def _empty_schema(db_url: str) -> None:
    """Drop and re-create the PostgreSQL schema of ``db_url``: empty, the same name."""
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()


def _load(env: dict[str, str], out: Path) -> dict[str, np.ndarray]:
    script = ("import sys, numpy as np, strongroom\n"
              "with strongroom.open_weights('tiny') as w:\n"
              "    np.savez(sys.argv[1], **{k: np.array(v) for k, v in w.items()})\n")
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(out) as loaded:
        return {k: loaded[k] for k in loaded.files}


def _tamper_manifest_row(db_url: str) -> None:
    """Edit the artifact's manifest row in place, re-signing nothing."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        envelope = json.loads(conn.exec_driver_sql(
            "SELECT manifest_json FROM artifacts WHERE name = 'tiny'").scalar_one())
        payload = json.loads(base64.b64decode(envelope["payload"]))
        payload["compartments"] = []
        envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
        conn.execute(sa.text("UPDATE artifacts SET manifest_json = :m WHERE name = 'tiny'"),
                     {"m": json.dumps(envelope)})
    engine.dispose()


class Drilled:
    """A vault that imported ``tiny`` (compartment atlas) with a load Grant for the CLI's
    identity, was backed up, sealed and destroyed: what a lost host leaves, and its backup."""

    def __init__(self, root: Path, db_url: str, env: dict[str, str],
                 tensors: dict[str, np.ndarray], made: str) -> None:
        self.root, self.db_url, self.env, self.tensors, self.made = root, db_url, env, tensors, made

    @property
    def backup(self) -> Path:
        return self.root / "backup"


# Module scope: one vault, import, Grant and backup per database for the drill and the
# tampered restores below (each restores into its own empty target), instead of one each.
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def drilled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Drilled]:
    root = tmp_path_factory.mktemp("drill")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            db_url = f"sqlite:///{root / 'strongroom.db'}"
        else:
            db_url = stack.enter_context(pg_schema(need_service("STRONGROOM_TEST_PG_URL",
                                                                "PostgreSQL")))
        home = root / "home"
        run, env = unseal_home(home, db_url)
        src = root / "m.safetensors"
        tensors = make_model(src)
        run("weights", "import", src, "--name", "tiny", "--compartment", "atlas")
        grant_cli(env, "tiny", ("load",), compartments=("atlas",))
        # The agent's checkpoint publisher records new entries in the high-water file on its
        # interval (2 s); a host that has been running has one, and the backup must carry it.
        deadline = time.monotonic() + 20
        while not (home / "audit-high-water").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (home / "audit-high-water").is_file(), "no checkpoint published within 20 s"
        made = run("backup", "create", "--to", root / "backup").stdout
        backup = root / "backup"
        assert src.read_bytes() not in b"".join(p.read_bytes() for p in backup.rglob("*")
                                               if p.is_file()), "plaintext in the backup"
        assert "ok: backup" in run("backup", "verify", backup).stdout
        run("seal")
        _destroy(db_url, home)
        yield Drilled(root, db_url, env, tensors, made)


def _restore_target(drilled: Drilled, tmp_path: Path, request: pytest.FixtureRequest
                    ) -> str:
    """The empty database a restore of the drilled backup goes to: SQLite in ``tmp_path``;
    on PostgreSQL the lost host's own schema (a dump restores only into a schema of its
    name), emptied again when the test ends."""
    if drilled.db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'new.db'}"
    request.addfinalizer(lambda: _empty_schema(drilled.db_url))
    return drilled.db_url


def test_restore_drill(drilled: Drilled, tmp_path: Path, request: pytest.FixtureRequest
                      ) -> None:
    assert "signed with the vault's manifest key" in drilled.made
    backup = drilled.backup
    listing = {p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file()}
    assert "backup.json" in listing and "home/audit-high-water" in listing
    assert sum(name.startswith("blobs/") for name in listing) == 1

    new_home = tmp_path / "home2"
    new_url = _restore_target(drilled, tmp_path, request)
    restored_env = dict(drilled.env, STRONGROOM_HOME=str(new_home),
                        STRONGROOM_DATABASE_URL=new_url)
    again = make_runner(restored_env)
    out = again("backup", "restore", "--from", backup, "--to", new_home, "--database-url",
                new_url).stdout
    assert "(sealed)" in out
    refused = again("serve", "--port", "1", ok=False)
    assert refused.returncode == 2 and "backup check" in refused.stderr
    _unseal(again, drilled.root)
    try:
        checked = again("backup", "check").stdout
        assert "1 artifacts, 1 blobs match" in checked and "may serve" in checked
        assert not (new_home / "restore-unchecked.json").exists()
        assert "ok tiny@1" in again("weights", "verify", "tiny").stdout
        loaded = _load(restored_env, tmp_path / "loaded.npz")
        assert set(loaded) == set(drilled.tensors)
        for name, want in drilled.tensors.items():
            assert loaded[name].dtype == want.dtype and loaded[name].tobytes() == want.tobytes()
        tail = again("audit", "tail", "-n", "100").stdout
        assert '"action":"backup.create"' in tail and '"action":"backup.check"' in tail
    finally:
        again("seal", ok=False)


def _tamper_audit_entry(db_url: str) -> None:
    """Edit the first audit entry's recorded bytes in place."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        body = bytes(conn.exec_driver_sql("SELECT body FROM audit_entries WHERE idx = 0")
                     .scalar_one())
        conn.execute(sa.text("UPDATE audit_entries SET body = :b WHERE idx = 0"),
                     {"b": body.replace(b'"ok"', b'"OK"', 1) if b'"ok"' in body else body + b" "})
    engine.dispose()


# The manifest-row variant runs in `make test-slow` (each variant is a full restore).
@pytest.mark.parametrize(("tamper", "named"), [
    pytest.param(_tamper_manifest_row, "manifest of tiny@1", marks=pytest.mark.slow),
    (_tamper_audit_entry, "entry 0")])
def test_edited_restored_row_fails_the_check_and_serve_stays_refused(
        drilled: Drilled, tmp_path: Path, request: pytest.FixtureRequest, tamper: object,
        named: str) -> None:
    new_url, backup = _restore_target(drilled, tmp_path, request), tmp_path / "backup"
    shutil.copytree(drilled.backup, backup)  # the drill's own backup stays as it was made
    again = make_runner(dict(drilled.env, STRONGROOM_HOME=str(tmp_path / "home2"),
                             STRONGROOM_DATABASE_URL=new_url))
    again("backup", "restore", "--from", backup, "--to", tmp_path / "home2",
          "--database-url", new_url)
    tamper(new_url)  # type: ignore[operator]
    _unseal(again, drilled.root)
    try:
        failed = again("backup", "check", ok=False)
        assert failed.returncode != 0 and named in failed.stderr, failed.stderr
        assert (tmp_path / "home2" / "restore-unchecked.json").exists()
        assert "backup check" in again("serve", "--port", "1", ok=False).stderr
    finally:
        again("seal", ok=False)


@pytest.fixture(scope="module")
def sqlite_vault(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Run, dict[str, str], Path]]:
    """An unsealed SQLite vault that imported ``tiny`` and made ``backup`` (left as made);
    sealed when the module ends. One per module: the tests below each take a copy."""
    root = tmp_path_factory.mktemp("backup-vault")
    run, env = unseal_home(root / "home", None)
    src = root / "m.safetensors"
    make_model(src)
    run("weights", "import", src, "--name", "tiny")
    run("backup", "create", "--to", root / "backup")
    try:
        yield run, env, root
    finally:
        run("seal", ok=False)


@pytest.fixture
def sqlite_backup(sqlite_vault: tuple[Run, dict[str, str], Path], tmp_path: Path
                  ) -> tuple[Run, Path]:
    """A copy of the module's backup in ``tmp_path``, for a test to break."""
    run, _, root = sqlite_vault
    shutil.copytree(root / "backup", tmp_path / "backup")
    return run, tmp_path / "backup"


def test_a_backup_missing_a_blob_is_refused_naming_it(sqlite_backup: tuple[Run, Path],
                                                      tmp_path: Path) -> None:
    run, backup = sqlite_backup
    (blob,) = [p for p in (backup / "blobs").rglob("*") if p.is_file()]
    blob.unlink()
    for argv in (("backup", "verify", backup),
                 ("backup", "restore", "--from", backup, "--to", tmp_path / "new")):
        refused = run(*argv, ok=False)
        assert refused.returncode != 0
        assert f"blob {blob.name} of tiny@1 is missing from the backup" in refused.stderr
    assert not (tmp_path / "new").exists(), "a refused restore wrote something"


def test_a_backup_with_an_edited_row_is_refused_naming_the_database(
        sqlite_backup: tuple[Run, Path], tmp_path: Path) -> None:
    run, backup = sqlite_backup
    with sqlite3.connect(backup / "database.sqlite3") as db:
        db.execute("UPDATE artifacts SET total_size = total_size + 1")
    refused = run("backup", "restore", "--from", backup, "--to", tmp_path / "new", ok=False)
    assert refused.returncode != 0 and "database.sqlite3 was changed" in refused.stderr
    assert not (tmp_path / "new").exists()


def test_a_backup_signed_by_another_key_is_refused_when_pinned(
        sqlite_backup: tuple[Run, Path], tmp_path: Path) -> None:
    run, backup = sqlite_backup
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode()
    refused = run("backup", "verify", backup, "--manifest-key", other, ok=False)
    assert refused.returncode != 0 and "not by the pinned manifest key" in refused.stderr


def test_restore_refuses_a_non_empty_target(sqlite_backup: tuple[Run, Path],
                                            tmp_path: Path) -> None:
    run, backup = sqlite_backup
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep").write_text("x")
    refused = run("backup", "restore", "--from", backup, "--to", target, ok=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert [p.name for p in target.iterdir()] == ["keep"]


def _as_if_made_by(backup: Path, home: Path, release: str, edit_db: Any,
                   recorded: list[str] | None) -> None:
    """Rewrite ``backup`` as ``release`` would have made it (its database edited by
    ``edit_db(url)``, ``recorded`` revisions or none), re-signed by the vault of ``home``
    through its running key agent, so only the release differs."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.crypto.dsse import sign_statement
    from strongroom.digests import sha256_file
    from strongroom.runtime.backup import BACKUP_TYPE
    from strongroom.runtime.services import key_service

    edit_db(f"sqlite:///{backup / 'database.sqlite3'}")
    envelope = json.loads((backup / "backup.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["strongroom"] = release
    statement["database"].pop("schema_revisions")
    if recorded is not None:
        statement["database"]["schema_revisions"] = recorded
    size, digest = sha256_file(backup / "database.sqlite3")
    statement["files"]["database.sqlite3"] = {"size": size, "sha256": digest}
    keys = key_service(home)
    public = Ed25519PublicKey.from_public_bytes(keys.public_keys()["manifest"])
    (backup / "backup.json").write_text(sign_statement(
        statement, BACKUP_TYPE, (public, lambda m: keys.sign("manifest", m))) + "\n")


def test_restore_across_releases(sqlite_vault: tuple[Run, dict[str, str], Path],
                                 tmp_path: Path) -> None:
    """A backup made by an older release restores, then `db upgrade`, unseal, `backup check`;
    one made by a newer release is refused (before writing when it records its schema)."""
    from test_db_upgrade_cli import _downgrade_one, _set_revision

    run, env, root = sqlite_vault
    older, newer, unrecorded = (tmp_path / n for n in ("older", "newer", "newer-unrecorded"))
    for copy in (older, newer, unrecorded):
        shutil.copytree(root / "backup", copy)
    revision: list[str] = []
    home = root / "home"
    _as_if_made_by(older, home, "0.0.9", lambda url: revision.append(_downgrade_one(url)), None)
    future = lambda url: _set_revision(url, "9999_from_the_future")  # noqa: E731
    _as_if_made_by(newer, home, "9.0.0", future, ["9999_from_the_future"])
    _as_if_made_by(unrecorded, home, "9.0.0", future, None)

    for backup in (newer, unrecorded):
        refused = run("backup", "restore", "--from", backup, "--to", tmp_path / "new", ok=False)
        assert refused.returncode == 9, refused.stderr
        assert "9999_from_the_future, which this strongroom does not know" in refused.stderr
        assert "made by strongroom 9.0.0" in refused.stderr
        assert not (tmp_path / "new").exists(), "a refused restore left something"

    new_home = tmp_path / "home2"
    again = make_runner(dict(env, STRONGROOM_HOME=str(new_home)))
    out = again("backup", "restore", "--from", older, "--to", new_home).stdout
    assert f"schema revision {revision[0]}, older than" in out
    assert "made by strongroom 0.0.9" in out and "`strongroom db upgrade`" in out
    shares = sorted((root / "shares").glob("share-*.age"))
    early = again("unseal", "--share", shares[0], "--identity",
                  root / "custodians" / "c1.key", ok=False)
    assert early.returncode == 9 and "db upgrade" in early.stderr
    assert "upgraded" in again("db", "upgrade").stdout
    _unseal(again, root)
    try:
        checked = again("backup", "check").stdout
        assert "1 artifacts, 1 blobs match" in checked and "may serve" in checked
        assert '"action":"backup.check"' in again("audit", "tail", "-n", "3").stdout
    finally:
        again("seal", ok=False)

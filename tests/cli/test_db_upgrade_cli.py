"""``strongroom db upgrade [--check]`` and the refusal of a database older or newer than the code.

Through the real CLI on SQLite and PostgreSQL: a vault made by ``init`` is moved
one migration back with Alembic (a database an older strongroom left), then
``unseal`` (which starts the key agent) and ``serve`` must refuse it without
migrating it; ``db upgrade --check`` exits 1 and names from and to; ``db
upgrade`` migrates it; a revision no migration file defines (a newer
strongroom's) is refused everywhere, naming both revisions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from strongroom.crypto.age import X25519Identity
from strongroom.store.db import Store, _alembic_config, is_sqlite, schema_heads

from cli_fixtures import Run, make_runner

FUTURE = "0999_from_a_newer_release"


def _env(home: Path, db_url: str) -> dict[str, str]:
    env = dict(os.environ, STRONGROOM_HOME=str(home))
    env.pop("STRONGROOM_IDENTITY", None)
    env.pop("STRONGROOM_URL", None)
    if is_sqlite(db_url):
        env.pop("STRONGROOM_DATABASE_URL", None)
    else:
        env["STRONGROOM_DATABASE_URL"] = db_url
    return env


def _init(run: Run, tmp_path: Path) -> list[tuple[Path, Path]]:
    """A 2-of-2 vault; each custodian's (share file, identity file)."""
    pubs: list[str | Path] = []
    for i in (1, 2):
        ident = X25519Identity.generate()
        (tmp_path / f"c{i}.key").write_text(f"{ident}\n")
        (tmp_path / f"c{i}.pub").write_text(f"{ident.recipient}\n")
        pubs += ["--custodian", tmp_path / f"c{i}.pub"]
    run("init", *pubs, "--threshold", "2", "--shares-dir", tmp_path / "shares")
    shares = sorted((tmp_path / "shares").glob("share-*.age"))
    return [(shares[i], tmp_path / f"c{i + 1}.key") for i in (0, 1)]


def _at(db_url: str) -> frozenset[str]:
    store = Store.open(db_url, schema="unchecked")
    try:
        return store.schema_versions()
    finally:
        store.close()


def _downgrade_one(db_url: str) -> str:
    from alembic import command

    kwargs = {"connect_args": {"isolation_level": None}} if is_sqlite(db_url) else {}
    engine = create_engine(db_url, **kwargs)
    try:
        command.downgrade(_alembic_config(engine), "-1")
    finally:
        engine.dispose()
    (older,) = _at(db_url)
    return older


def _set_revision(db_url: str, revision: str) -> None:
    kwargs = {"connect_args": {"isolation_level": None}} if is_sqlite(db_url) else {}
    engine = create_engine(db_url, **kwargs)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_older_database_is_refused_until_db_upgrade(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    url = db_url if not is_sqlite(db_url) else f"sqlite:///{home / 'strongroom.db'}"
    run = make_runner(_env(home, db_url))
    share, key = _init(run, tmp_path)[0]
    (head,) = schema_heads()
    older = _downgrade_one(url)
    assert older != head

    refused = run("unseal", "--share", share, "--identity", key, ok=False)
    assert refused.returncode == 9, refused.stderr
    assert older in refused.stderr and head in refused.stderr
    assert "strongroom db upgrade" in refused.stderr
    assert not (home / "agent.sock").exists()
    assert _at(url) == {older}  # refused, not silently migrated

    check = run("db", "upgrade", "--check", ok=False)
    assert check.returncode == 1, check.stderr
    assert f"{older} -> {head}" in check.stdout

    done = run("db", "upgrade")
    assert f"upgraded the database schema: {older} -> {head}" in done.stdout
    assert _at(url) == {head}
    assert '"result": "current"' in run("db", "upgrade", "--check", "--json").stdout
    Store.open(url, schema="current").close()  # what serve and the agent open now accept it


def test_newer_database_is_refused_naming_both_revisions(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    url = db_url if not is_sqlite(db_url) else f"sqlite:///{home / 'strongroom.db'}"
    run = make_runner(_env(home, db_url))
    share, key = _init(run, tmp_path)[0]
    (head,) = schema_heads()
    _set_revision(url, FUTURE)

    for args in (("unseal", "--share", share, "--identity", key),
                 ("db", "upgrade", "--check"),
                 ("serve", "--port", "1")):
        refused = run(*args, ok=False)
        assert refused.returncode == 9, (args, refused.stderr)
        assert FUTURE in refused.stderr and head in refused.stderr, refused.stderr
        assert "newer strongroom" in refused.stderr
    assert _at(url) == {FUTURE}


@pytest.mark.postgres
def test_empty_database_is_for_init_not_for_upgrade(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    run = make_runner(_env(home, pg_url))
    refused = run("db", "upgrade", ok=False)
    assert refused.returncode == 9, refused.stderr
    assert "no strongroom schema" in refused.stderr and "strongroom init" in refused.stderr
    assert _at(pg_url) == frozenset()  # nothing created it
    _init(run, tmp_path)
    assert _at(pg_url) == schema_heads()


def test_stray_directory_gets_no_database(tmp_path: Path) -> None:
    env = _env(tmp_path / "stray", "sqlite://")
    refused = make_runner(env)("db", "upgrade", ok=False)
    assert refused.returncode == 2 and "no vault" in refused.stderr
    assert not (tmp_path / "stray").exists()

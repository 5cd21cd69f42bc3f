"""Backups of a vault, and their restore: ciphertext only, signed by the vault, checked before use.

A backup is a directory::

    backup.json             DSSE envelope (payload type BACKUP_TYPE) signed with the vault's
                            manifest key: every file below with its size and SHA-256, the blob
                            inventory (id, size, SHA-256, artifact), the database, the log size
    database.sqlite3        SQLite: a snapshot by the online backup API (sqlite3 .backup)
    database.pgdump         PostgreSQL: ``pg_dump --format=custom`` of strongroom's schema,
                            taken in the same snapshot the blob inventory was read in
    blobs/ab/<blob id>      local blob store: every blob an artifact row names (age ciphertext);
                            S3: none, the inventory only (the bucket is kept by its versioning)
    home/audit-high-water   what ``audit verify`` checks the log against, off the database
    home/audit/latest-checkpoint

Nothing in it is plaintext or an unwrapped key: blobs are age ciphertext, the
database holds the sealed keyring and wrapped file keys; the custodians' shares
are the other half, kept by them. Use it like this::

    report = create_backup(vault, home, Path("/backups/2027-01-05"))   # unsealed, an officer
    statement = verify_backup(Path("/backups/2027-01-05"), pinned_key)  # anywhere, no vault
    restore_backup(src, new_home, database_url, pinned_key)            # leaves the vault sealed
    # custodians unseal new_home; then, before it may serve:
    check_restore(vault, new_home)     # audit verify + every artifact's blobs vs signed manifests

Verification precedes every write: a restore refuses (naming the file, the
blob or the artifact) before it creates anything, and refuses a target that
is not empty. A restored data directory carries :data:`RESTORE_MARK` until
:func:`check_restore` passes; ``strongroom serve`` refuses it meanwhile
(:func:`require_checked`).

Why the manifest key signs: it is the vault's own key, held in the keyring
behind the root key (so only an unsealed vault signs a backup, and a forged
backup made with another key cannot pass the check once the real custodians'
shares unseal the restored keyring), clients already pin it
(``STRONGROOM_MANIFEST_KEY``), and DSSE's pre-authentication encoding keeps a
backup statement from ever being read as an artifact manifest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.crypto.dsse import key_id, sign_statement, verify_statement
from strongroom.datadir import make_private_dir
from strongroom.digests import file_inventory, sha256_file
from strongroom.errors import ConfigError, IntegrityError, InvalidInput
from strongroom.runtime.backup_schema import recorded_schema, refuse_newer_backup, restored_schema
from strongroom.timefmt import utc_stamp

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from strongroom.vault.vault import Vault

__all__ = [
    "BACKUP_TYPE",
    "MANIFEST_NAME",
    "RESTORE_MARK",
    "BackupReport",
    "CheckReport",
    "check_restore",
    "create_backup",
    "require_checked",
    "restore_backup",
    "verify_backup",
]

#: The DSSE payload type of a backup statement.
BACKUP_TYPE = "application/vnd.strongroom.backup+json"
#: The signed manifest's name in a backup directory.
MANIFEST_NAME = "backup.json"
#: Written into a restored data directory; removed by a passing check; ``serve`` refuses it.
RESTORE_MARK = "restore-unchecked.json"
_SQLITE_FILE = "database.sqlite3"
_PG_FILE = "database.pgdump"
#: Files of the data directory that ``audit verify`` reads (relative to it).
_HOME_FILES = ("audit-high-water", "audit/latest-checkpoint")
_STEP = 8 << 20
_INVENTORY_SQL = (
    "SELECT f.blob_id, f.ct_size, f.ct_sha256, a.name, a.version FROM artifact_files f "
    "JOIN artifacts a ON a.id = f.artifact_id ORDER BY f.blob_id"
)


@dataclass(frozen=True)
class BackupReport:
    """What ``backup create`` wrote."""

    backup_id: str
    path: Path
    files: int
    blobs: int
    bytes: int
    audit_size: int


@dataclass(frozen=True)
class CheckReport:
    """What ``backup check`` verified of a restored vault."""

    backup_id: str | None
    audit: str
    artifacts: int
    blobs: int


# -- files and hashes ---------------------------------------------------------------


def _copy(src: Path, dest: Path) -> tuple[int, str]:
    """Copy ``src`` to a new private file ``dest`` (fsynced); its size and SHA-256."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
        while chunk := f.read(_STEP):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _blob_path(blob_id: str) -> str:
    return f"blobs/{blob_id[:2]}/{blob_id}"


def _inside(root: Path, relative: str) -> Path:
    """``root/relative``, refused when the manifest names a path outside ``root``."""
    path = (root / relative).resolve()
    if relative.startswith("/") or ".." in Path(relative).parts or not path.is_relative_to(
            root.resolve()):
        raise IntegrityError(f"the backup manifest names a path outside the backup: {relative!r}",
                             obj=MANIFEST_NAME, remedy="do not use this backup")
    return path


def _public_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy PostgreSQL URL as a libpq URI, and the environment carrying its password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)  # never on a command line others can read
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} is not on PATH: a PostgreSQL vault is backed up and restored "
                          f"with {name}", obj=name,
                          remedy="install the PostgreSQL client tools of the server's major "
                          "version (Debian: postgresql-client) and retry")
    return found


def _run_tool(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"{what} failed: {done.stderr.strip()[-500:]}", obj=argv[0],
                          remedy="check the database URL and that the client tools match the "
                          "server's major version")


# -- create ---------------------------------------------------------------------------


def _sqlite_snapshot(db_path: Path, dest: Path) -> tuple[list[tuple[Any, ...]], int]:
    """Snapshot ``db_path`` into ``dest`` with the online backup API; the snapshot's inventory."""
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        rows = target.execute(_INVENTORY_SQL).fetchall()
        head = target.execute("SELECT size FROM audit_head").fetchone()
    finally:
        target.close()
        source.close()
    return rows, int(head[0]) if head else 0


@contextlib.contextmanager
def _pg_snapshot(url: str) -> Iterator[tuple[Connection, str, str]]:
    """A repeatable-read transaction on ``url``: the connection, its exported snapshot, its schema."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn, conn.begin():
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            yield conn, str(snapshot), str(schema)
    finally:
        engine.dispose()


def _pg_dump(url: str, dest: Path) -> tuple[list[tuple[Any, ...]], int, str]:
    """Dump strongroom's schema into ``dest`` in the snapshot the inventory is read in."""
    tool = _pg_tool("pg_dump")
    uri, env = _libpq(url)
    with _pg_snapshot(url) as (conn, snapshot, schema):
        rows = [tuple(r) for r in conn.exec_driver_sql(_INVENTORY_SQL).all()]
        head = conn.exec_driver_sql("SELECT size FROM audit_head").first()
        _run_tool([tool, "--format=custom", "--no-owner", "--no-privileges",
                   f"--snapshot={snapshot}", f"--schema={schema}", f"--file={dest}",
                   f"--dbname={uri}"], env, "pg_dump")
    os.chmod(dest, 0o600)
    return rows, int(head[0]) if head else 0, schema


def create_backup(vault: Vault, home: Path, dest: Path) -> BackupReport:
    """Write a signed backup of ``vault`` (its data directory ``home``) into the new directory ``dest``.

    The vault must be unsealed (the manifest key signs) and the actor an
    identity (the backup is recorded in the audit log before the snapshot, so
    the restored log ends with it). The directory is built beside ``dest`` and
    renamed into place when complete; a failure leaves nothing.
    """
    from strongroom.vault.blobs import LocalBlobStore

    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput("the backup directory exists and is not empty", obj=str(dest),
                           remedy="name a new directory: a backup never overwrites another")
    backup_id = utc_stamp().replace(":", "").replace("-", "") + "-" + secrets.token_hex(4)
    dialect = vault.store.dialect
    local = isinstance(vault.blobs, LocalBlobStore)
    vault.record("backup.create", backup_id, "ok", to=str(dest), dialect=dialect,
                 blob_store="local" if local else "s3")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        database: dict[str, Any] = {"dialect": dialect,
                                    "schema_revisions": recorded_schema(vault.store)}
        if dialect == "sqlite":
            db_file = Path(str(vault.store.engine.url.database))
            rows, audit_size = _sqlite_snapshot(db_file, tmp / _SQLITE_FILE)
            database["file"] = _SQLITE_FILE
        else:
            url = vault.store.engine.url.render_as_string(hide_password=False)
            rows, audit_size, schema = _pg_dump(url, tmp / _PG_FILE)
            database.update(file=_PG_FILE, schema=schema)
        blobs = []
        for blob_id, ct_size, ct_sha256, name, version in rows:
            ref = f"{name}@{version}"
            if local:
                assert isinstance(vault.blobs, LocalBlobStore)
                source = vault.blobs.path_of(blob_id)
                if not source.is_file():
                    raise IntegrityError(f"blob {blob_id} of {ref} is missing from the blob store",
                                         obj=f"blob {blob_id}",
                                         remedy="restore it from an earlier backup; this vault "
                                         "cannot serve that artifact as it is")
                size, digest = _copy(source, tmp / _blob_path(blob_id))
            else:
                size, digest = vault.blobs.size(blob_id), str(ct_sha256)
            if (size, digest) != (int(ct_size), str(ct_sha256)):
                raise IntegrityError(f"blob {blob_id} of {ref} does not match its database row "
                                     f"({size} bytes, SHA-256 {digest[:16]}…)",
                                     obj=f"blob {blob_id}",
                                     remedy="run `strongroom weights verify` on that artifact "
                                     "and restore the blob before backing up")
            blobs.append({"id": blob_id, "size": size, "sha256": digest, "artifact": ref})
        for relative in _HOME_FILES:
            if (home / relative).is_file():
                _copy(home / relative, tmp / "home" / relative)
        files = file_inventory(tmp)
        statement = {
            "_type": BACKUP_TYPE,
            "backup_id": backup_id,
            "created": utc_stamp(),
            "strongroom": _version(),
            "database": database,
            "blob_store": "local" if local else "s3",
            "blobs": blobs,
            "files": files,
            "audit_size": audit_size,
            "signer": {"key_id": key_id(vault.manifest_key),
                       "public_key": _public_b64(vault.manifest_key)},
        }
        envelope = sign_statement(statement, BACKUP_TYPE,
                                  (vault.manifest_key, lambda m: vault.keys.sign("manifest", m)))
        fd = os.open(tmp / MANIFEST_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(envelope + "\n")
            f.flush()
            os.fsync(f.fileno())
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(int(f["size"]) for f in files.values())
    return BackupReport(backup_id, dest, len(files), len(blobs), total, audit_size)


def _version() -> str:
    """The installed strongroom's version (the package face would import the server's client)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strongroom")
    except PackageNotFoundError:
        return "unknown"


# -- verify ---------------------------------------------------------------------------


def _statement(src: Path, pinned: Ed25519PublicKey | None) -> dict[str, Any]:
    """The backup's statement, verified with ``pinned`` (else the key it names: integrity only)."""
    path = src / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
        payload = json.loads(base64.b64decode(json.loads(text)["payload"]))
        named = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(payload["signer"]["public_key"]))
    except FileNotFoundError:
        raise InvalidInput("not a strongroom backup: no backup.json", obj=str(src),
                           remedy="name the directory `strongroom backup create` wrote") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"malformed backup manifest ({type(exc).__name__})", obj=str(path),
                             remedy="do not use this backup") from exc
    key = pinned or named
    if pinned is not None and key_id(pinned) != key_id(named):
        raise IntegrityError(f"the backup is signed by key {key_id(named)}, not by the pinned "
                             f"manifest key {key_id(pinned)}", obj=str(path),
                             remedy="restore a backup of this vault, or pin its manifest key")
    return verify_statement(text, BACKUP_TYPE, {key_id(key): key}, obj=str(path))


def verify_backup(src: Path, pinned: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """The verified statement of the backup in ``src``; IntegrityError naming what is wrong.

    Checks the signature (with ``pinned``, the vault's manifest key, when
    given), then every file's size and SHA-256, that every blob of the
    inventory is there, and that nothing was added.
    """
    src = src.expanduser().absolute()
    statement = _statement(src, pinned)
    files: dict[str, dict[str, Any]] = statement["files"]
    owner = {_blob_path(b["id"]): f"blob {b['id']} of {b['artifact']}" for b in statement["blobs"]}
    if statement["blob_store"] == "local":
        for listed, what in owner.items():
            if listed not in files:
                raise IntegrityError(f"{what} is not in the backup's file list", obj=what,
                                     remedy="do not use this backup")
    for relative, want in files.items():
        what = owner.get(relative, relative)
        path = _inside(src, relative)
        if not path.is_file():
            raise IntegrityError(f"{what} is missing from the backup", obj=what,
                                 remedy="find the complete copy of this backup, or use another")
        size, digest = sha256_file(path)
        if (size, digest) != (want["size"], want["sha256"]):
            raise IntegrityError(f"{what} was changed: {size} bytes, SHA-256 {digest[:16]}…, the "
                                 f"signed manifest says {want['size']} bytes, "
                                 f"{want['sha256'][:16]}…", obj=what,
                                 remedy="do not restore this backup; use another copy")
    present = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {MANIFEST_NAME})
    if extra:
        raise IntegrityError(f"the backup holds {len(extra)} file(s) its manifest does not list, "
                             f"first {extra[0]}", obj=extra[0], remedy="do not use this backup")
    return statement


# -- restore --------------------------------------------------------------------------


def _sqlite_target(url: str | None, home: Path) -> Path:
    from sqlalchemy.engine import make_url

    if url is None:
        return home / "strongroom.db"
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise InvalidInput("the backup holds a SQLite database; the target is not a SQLite file",
                           obj=url, remedy="give a sqlite:///PATH URL, or none (the data "
                           "directory's strongroom.db)")
    return Path(parsed.database)


def _pg_target(url: str | None, schema: str) -> str:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    if url is None or make_url(url).get_backend_name() != "postgresql":
        raise InvalidInput("the backup holds a PostgreSQL dump; name the database to restore it "
                           "into", obj="--database-url",
                           remedy="pass --database-url postgresql+psycopg://... (an empty schema "
                           f"named {schema!r})")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            current = conn.exec_driver_sql("SELECT current_schema()").scalar_one_or_none()
            tables = conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                (schema,)).scalar_one() if current else 0
    finally:
        engine.dispose()
    if current != schema:
        raise InvalidInput(f"the dump is of schema {schema!r}; the target URL's schema is "
                           f"{current!r}", obj=url,
                           remedy=f"create schema {schema!r} (empty) and point the URL's "
                           "search_path at it")
    if tables:
        raise InvalidInput(f"schema {schema!r} of the target database is not empty ({tables} "
                           "tables)", obj=url, remedy="restore into an empty schema: a restore "
                           "never merges into a live vault")
    return url


def _pg_restore(dump: Path, url: str, scratch: Path) -> None:
    """Restore ``dump`` into ``url``'s existing, empty schema, in one transaction."""
    tool = _pg_tool("pg_restore")
    uri, env = _libpq(url)
    listing = subprocess.run([tool, "--list", str(dump)], capture_output=True, text=True,
                             check=False, env=env)
    if listing.returncode != 0:
        raise IntegrityError(f"pg_restore cannot read the dump: {listing.stderr.strip()[-300:]}",
                             obj=_PG_FILE, remedy="do not use this backup")
    # The schema exists already (it is the target): restore everything in it but its CREATE.
    keep = [line for line in listing.stdout.splitlines() if " SCHEMA - " not in line]
    entries = scratch / "restore.list"
    entries.write_text("\n".join(keep) + "\n")
    try:
        _run_tool([tool, "--exit-on-error", "--single-transaction", "--no-owner",
                   "--no-privileges", f"--use-list={entries}", f"--dbname={uri}", str(dump)],
                  env, "pg_restore")
    finally:
        entries.unlink()


def restore_backup(src: Path, home: Path, database_url: str | None,
                   pinned: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """Verify the backup in ``src``, then restore it into the new data directory ``home``.

    ``database_url``: where the database goes (default: SQLite in ``home``; a
    PostgreSQL dump needs one, an empty schema of the dumped name). The vault
    is left sealed and marked unchecked (:data:`RESTORE_MARK`). Returns the
    verified statement and ``restored_schema`` (``from``, ``to``, ``pending``:
    a backup made by older code needs ``strongroom db upgrade`` before unseal).
    A backup newer than this code is refused (:mod:`strongroom.runtime.backup_schema`).
    """
    src, home = src.expanduser().absolute(), home.expanduser().absolute()
    statement = verify_backup(src, pinned)
    refuse_newer_backup(statement)
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise InvalidInput("the target data directory is not empty", obj=str(home),
                           remedy="restore into a new directory: a restore never merges")
    database = statement["database"]
    if database["dialect"] == "sqlite":
        sqlite_path = _sqlite_target(database_url, home)
        if sqlite_path.exists():
            raise InvalidInput("the target database file exists", obj=str(sqlite_path),
                               remedy="name a new file, or move the old one away")
    else:
        pg_url = _pg_target(database_url, str(database["schema"]))
    created = not home.exists()
    try:
        make_private_dir(home)
        mark = {"backup_id": statement["backup_id"], "created": statement["created"],
                "signer": statement["signer"], "restored": utc_stamp(), "from": str(src)}
        fd = os.open(home / RESTORE_MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mark, f, indent=2)
        for relative in _HOME_FILES:
            if f"home/{relative}" in statement["files"]:
                make_private_dir((home / relative).parent)
                _copy(src / "home" / relative, home / relative)
        if statement["blob_store"] == "local":
            for blob in statement["blobs"]:
                _copy(src / _blob_path(blob["id"]), home / _blob_path(blob["id"]))
        if database["dialect"] == "sqlite":
            source = sqlite3.connect(f"file:{src / _SQLITE_FILE}?mode=ro", uri=True)
            os.close(os.open(sqlite_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            target = sqlite3.connect(sqlite_path)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
        else:
            _pg_restore(src / _PG_FILE, pg_url, home)
        state = restored_schema(f"sqlite:///{sqlite_path}" if database["dialect"] == "sqlite"
                                else pg_url, statement)
    except BaseException:
        if created:
            shutil.rmtree(home, ignore_errors=True)
        else:
            for child in home.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        if database["dialect"] == "sqlite":
            with contextlib.suppress(FileNotFoundError):
                sqlite_path.unlink()
        raise
    return {**statement, "restored_schema": {"from": sorted(state.at), "to": sorted(state.heads),
                                             "pending": state.pending}}


# -- check before serving -------------------------------------------------------------


def _check_blobs(vault: Vault) -> tuple[int, int]:
    """Every artifact's signed manifest, and each blob's size and SHA-256 against it."""
    artifacts = blobs = 0
    for summary in vault.list_artifacts():
        manifest = vault.manifest(summary.name, summary.version)
        for entry in manifest.files:
            what = f"{manifest.ref}/{entry.path} (blob {entry.blob})"
            digest, size = hashlib.sha256(), 0
            with vault.blobs.open(entry.blob) as source:
                size = len(source)
                for off in range(0, size, _STEP):
                    digest.update(source.read_at(off, min(_STEP, size - off)))
            if size != entry.ct_size or digest.hexdigest() != entry.ct_sha256:
                raise IntegrityError("the blob does not match its signed manifest", obj=what,
                                     remedy="restore it from another backup copy; do not serve")
            blobs += 1
        artifacts += 1
    return artifacts, blobs


def check_restore(vault: Vault, home: Path) -> CheckReport:
    """Verify a restored vault before it serves; on success remove :data:`RESTORE_MARK`.

    The unsealed keyring's manifest key must be the one that signed the backup;
    the audit log must verify against its checkpoints, the high-water file and
    the witnesses; every artifact's manifest must verify and every blob match it.
    """
    from strongroom.audit.highwater import HIGH_WATER_NAME, HighWater, check_extends, witness_marks

    mark_path = home / RESTORE_MARK
    mark = json.loads(mark_path.read_text()) if mark_path.is_file() else None
    if mark is not None and mark["signer"]["key_id"] != key_id(vault.manifest_key):
        raise IntegrityError(
            f"backup {mark['backup_id']} was signed by key {mark['signer']['key_id']}, but the "
            f"unsealed vault's manifest key is {key_id(vault.manifest_key)}",
            obj=f"backup {mark['backup_id']}",
            remedy="this backup is not of this vault: do not serve it; restore a genuine backup")
    log = vault.audit
    report = log.verify([])
    marks = HighWater(home / HIGH_WATER_NAME, log).marks() + witness_marks(log)
    for m in sorted(marks, key=lambda m: m.size, reverse=True):
        check_extends(log, m, (report.size, report.root))
    artifacts, blobs = _check_blobs(vault)
    backup_id = mark["backup_id"] if mark else None
    vault.record("backup.check", backup_id or str(home), "ok", artifacts=artifacts, blobs=blobs,
                 audit_size=report.size)
    if mark is not None:
        mark_path.unlink()
    return CheckReport(backup_id, report.summary(), artifacts, blobs)


def require_checked(home: Path) -> None:
    """Refuse (exit 2) a data directory restored from a backup whose check has not passed."""
    path = home / RESTORE_MARK
    if not path.exists():
        return
    try:
        backup_id = json.loads(path.read_text())["backup_id"]
    except (OSError, ValueError, KeyError, TypeError):
        backup_id = "(unreadable mark)"
    raise ConfigError(
        f"this data directory was restored from backup {backup_id} and has not passed "
        "`strongroom backup check`", obj=str(path),
        remedy="unseal it (`strongroom unseal`), run `strongroom backup check`, seal it "
        "(`strongroom seal`), then start serve")

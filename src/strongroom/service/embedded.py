"""The service on this host's data directory: :class:`EmbeddedService`.

Everything that needs the unsealed root key goes to the directory's key agent
(``<STRONGROOM_HOME>/agent.sock``); only ``unseal`` starts one (``init`` and
``serve`` are the CLI's own). The access operations live in
:mod:`strongroom.service.embedded_access`, the officer statements in
:mod:`strongroom.service.embedded_officers`. Heavy modules (SQLAlchemy, the
vault, Cedar) are imported inside the operations so that a CLI command that
needs none of them starts quickly::

    svc = EmbeddedService()
    svc.weights_ls()          # [{"name": ..., "version": ..., ...}]

:func:`open_log` (the audit log, signing through the agent) and
:func:`read_age_identities` serve the CLI's host-only commands as well.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import InvalidInput, NotFound, Sealed
from strongroom.service.access_context import open_context
from strongroom.service.embedded_access import EmbeddedAccess
from strongroom.service.embedded_officers import EmbeddedOfficers
from strongroom.service.protocol import Progress

if TYPE_CHECKING:
    from strongroom.audit.export import AuditExporter
    from strongroom.audit.log import AuditLog
    from strongroom.crypto.age import AgeIdentity
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.store.db import Store

__all__ = ["EmbeddedService", "open_log", "read_age_identities"]

Row = dict[str, Any]


def read_age_identities(path: Path) -> list[AgeIdentity]:
    """The age identities in the file at ``path`` (a custodian's, to decrypt a share)."""
    from strongroom.crypto.age import parse_identities

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("identity file not found", obj=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read identity file ({type(exc).__name__})",
                           obj=str(path)) from exc
    try:
        return list(parse_identities(text))
    except InvalidInput as exc:
        raise InvalidInput(exc.message, obj=str(path), remedy=exc.remedy) from None


@contextlib.contextmanager
def open_log() -> Iterator[AuditLog]:
    """The configured log, signing checkpoints through the key agent (vault must be unsealed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.audit.config import AuditSettings
    from strongroom.runtime.services import key_service
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    home = settings.resolved_home
    keys = key_service(home)
    public = Ed25519PublicKey.from_public_bytes(keys.public_keys()["checkpoint"])
    store = Store.open(settings.resolved_database_url, schema="current")
    try:
        log = AuditSettings().open_log(
            store,
            (public, lambda message: keys.sign("checkpoint", message)),
            anchor_path=home / "audit" / "latest-checkpoint",
        )
        try:
            yield log
        finally:
            log.close()
    finally:
        store.close()


@contextlib.contextmanager
def _store() -> Iterator[Store]:
    """The vault's database, read without the agent (refused where there is no vault)."""
    from strongroom.datadir import require_vault
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    require_vault(settings.resolved_home, settings.database_url)  # creates nothing
    store = Store.open(settings.resolved_database_url, schema="current")
    try:
        yield store
    finally:
        store.close()


def _status_without_starting() -> KeyringStatus:
    """The agent's status when it runs; else read from the store (sealed) — never start one.

    ``status`` run in the wrong directory must not create a data directory or
    leave an agent behind.
    """
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.keyring import Keyring, KeyringStatus
    from strongroom.runtime.services import key_service
    from strongroom.settings import Settings
    from strongroom.store.db import Store, is_sqlite

    svc = key_service(start=False)
    if svc.client.running():
        return svc.status()
    settings = Settings()
    keys_settings = KeysSettings()
    home = settings.resolved_home
    if not settings.database_url and not (home / "strongroom.db").exists():
        return KeyringStatus(initialized=False, sealed=True, backend=keys_settings.key_backend)
    # An empty database (a new PostgreSQL one) is reported, not given a schema; an older
    # or newer one is refused as everywhere else (`db upgrade`, or the newer release). An
    # SQLite URL is opened as a deployment does: "unchecked" would create a missing file.
    url = settings.resolved_database_url
    store = Store.open(url, schema="current" if is_sqlite(url) else "unchecked")
    try:
        state = store.schema_state()
        if state.new:
            return KeyringStatus(initialized=False, sealed=True,
                                 backend=keys_settings.key_backend)
        state.require(store.url)
        ring = Keyring(store, keys_settings)
        try:
            return ring.status()
        finally:
            ring.close()
    finally:
        store.close()


class EmbeddedService(EmbeddedAccess, EmbeddedOfficers):
    """The operations on the data directory ``STRONGROOM_HOME`` and its key agent."""

    def __init__(self) -> None:
        from strongroom.settings import Settings

        self.location = f"the vault in {Settings().resolved_home}"

    def close(self) -> None:
        """Nothing to release: each operation opens and closes what it uses."""

    # -- keys -------------------------------------------------------------------------------

    def status(self) -> Row:
        """The keyring's status, without starting an agent."""
        from strongroom import __version__

        # server_version: the strongroom whose gate answered (here, this one), as remotely
        return {**_status_without_starting().to_dict(), "server_version": __version__}

    def unseal(self, share: Path | None, identity: Path | None, *, reset: bool = False,
               hsm_pin: Callable[[], str] | None = None) -> Row:
        """Submit one share to the agent (started here: only init, unseal and serve start it)."""
        from strongroom.keys import ceremony
        from strongroom.keys.config import KeysSettings
        from strongroom.runtime.services import key_service

        svc = key_service(start=True)
        if reset:
            return {"status": svc.reset().to_dict(), "already_unsealed": False}
        status = svc.status()
        if not status.initialized:
            raise InvalidInput("the vault is not initialised", obj="keyring",
                               remedy="run `strongroom init` first")
        if status.backend == "hsm":
            pin = KeysSettings().hsm_pin or (hsm_pin() if hsm_pin else "")
            return {"status": svc.unseal_hsm(pin).to_dict(), "already_unsealed": False}
        if not status.sealed:
            return {"status": status.to_dict(), "already_unsealed": True}
        if share is None or identity is None:
            raise InvalidInput("give --share FILE and --identity IDENTITY_FILE", obj="unseal")
        content = ceremony.read_share_file(share, read_age_identities(identity))
        submitted = svc.submit_share(ceremony.build_submission(status, content, obj=str(share)))
        return {"status": submitted.to_dict(), "already_unsealed": False}

    def seal(self, *, all_hosts: bool = False) -> Row:
        """Wipe the agent's key material (it stops, unless ``serve`` owns it)."""
        from strongroom.runtime.services import key_service

        if all_hosts:
            raise InvalidInput("--all is an order to every server sharing the database, given "
                               "through one of them", obj="seal --all",
                               remedy="set STRONGROOM_URL to any server and run it as an "
                               "officer (STRONGROOM_IDENTITY)")
        svc = key_service(start=False)
        info = svc.client.ping()
        if svc.seal() is None:
            note = "no key agent is running; the vault is sealed"
        elif info and info.get("owner"):
            note = (f"sealed; the key agent of strongroom serve (pid {info['owner']}) stays up, "
                    "sealed, for the server's next unseal")
        else:
            note = "sealed; the key agent has stopped"
        return {"sealed": True, "notes": [note]}

    def public_keys(self) -> dict[str, str]:
        """The manifest and checkpoint keys of the unsealed vault."""
        from strongroom.runtime.services import key_service

        svc = key_service(start=False)
        if not svc.client.running():
            raise Sealed("the vault is sealed (no key agent is running)", obj="keyring",
                         remedy="unseal it first: `strongroom unseal`")
        raw = svc.public_keys()
        return {k: base64.b64encode(raw[k]).decode() for k in ("manifest", "checkpoint")}

    def keys_rotate(self) -> Row:
        """A new KEK version; new file keys are wrapped under it."""
        from strongroom.runtime.services import key_service

        return {"kek_version": key_service().rotate()}

    def keys_rewrap(self) -> Row:
        """Every file key wrapped under the newest KEK version (payloads untouched)."""
        from strongroom.runtime.services import key_service

        return {"rewrapped": key_service().rewrap()}

    # -- weights ----------------------------------------------------------------------------

    def weights_ls(self) -> list[Row]:
        """Every artifact version (``ArtifactOut`` rows)."""
        from strongroom.runtime.services import open_vault

        with open_vault() as vault:
            return [{"name": a.name, "version": a.version, "kind": a.kind, "files": a.files,
                     "total_size": a.total_size, "created": a.created.isoformat()}
                    for a in vault.list_artifacts()]

    def weights_show(self, name: str, version: int | None) -> Row:
        """The manifest, its signature verified."""
        from strongroom.runtime.services import open_vault

        with open_vault() as vault:
            return vault.manifest(name, version).to_json()

    def weights_verify(self, name: str, version: int | None, *,
                       progress: Progress | None = None) -> Row:
        """Every blob, chunk and hash checked against the signed manifest."""
        from strongroom.runtime.services import open_vault

        with open_vault() as vault:
            report = vault.verify(name, version, progress=progress)
        return {"ref": report.ref, "files": report.files, "bytes": report.bytes}

    def weights_import(self, path: Path, name: str, *, compartments: list[str],
                       new_version: bool, escrow: list[str], publisher_key: Path | None,
                       signature: Path | None, convert: bool,
                       progress: Progress | None = None, cipher: str | None = None) -> Row:
        """Scan, then encrypt: one age file and file key per shard (``cipher``: payload mode)."""
        from strongroom.crypto import age
        from strongroom.runtime.services import open_vault

        options: dict[str, Any] = {"compartments": compartments, "new_version": new_version,
                                   "escrow": [age.parse_recipient(r) for r in escrow],
                                   "progress": progress, "cipher": cipher}
        with open_vault() as vault:
            if publisher_key or signature or convert:
                from strongroom.supplychain.imports import import_checked

                m = import_checked(vault, path, name, publisher_key=publisher_key,
                                   signature=signature, convert=convert, **options)
            else:
                m = vault.import_weights(path, name, **options)
        return {"ref": m.ref, "files": len(m.files), "tensors": len(m.tensors),
                "bytes": m.total_size}

    def weights_export(self, name: str, to: Path, *, reason: str, version: int | None,
                       progress: Progress | None = None) -> Row:
        """A plaintext copy with the vault's model signature beside it (audited)."""
        from strongroom.runtime.services import open_vault
        from strongroom.supplychain.signing import write_export_signature

        with open_vault() as vault:
            manifest = vault.manifest(name, version)
            dest = vault.export(name, to, reason=reason, version=version, progress=progress)
            sig, pub = write_export_signature(manifest, vault.keys, dest)
        return {"ref": manifest.ref, "dest": str(dest), "signature": str(sig),
                "public_key": str(pub)}

    # -- audit, alerts, egress --------------------------------------------------------------

    def audit_tail(self, n: int) -> list[Row]:
        """The newest entries as recorded."""
        with open_log() as log:
            return [event.to_dict() for event in log.tail(n)]

    def audit_show(self, index: int) -> Row:
        """One entry as recorded."""
        with open_log() as log:
            return log.event(index).to_dict()

    def audit_prove(self, index: int) -> str:
        """An inclusion proof of entry ``index``."""
        with open_log() as log:
            return log.prove(index).to_text()

    def audit_verify(self, checkpoints: list[str]) -> Row:
        """Replay the log against its checkpoints, the high-water file and the witnesses."""
        from strongroom.runtime.listings import verify_log
        from strongroom.settings import Settings

        with open_log() as log:
            return verify_log(log, Settings().resolved_home, checkpoints)

    def audit_checkpoint(self) -> str:
        """Sign a checkpoint at the current size and push it to the witnesses."""
        with open_log() as log:
            return log.checkpoint()

    @contextlib.contextmanager
    def audit_source(self) -> Iterator[AuditExporter]:
        """The stored log, read without keys (a sealed vault host is fine)."""
        from strongroom.audit.export import AuditExporter
        from strongroom.audit.tree import StoredTree

        with _store() as store:
            tree = StoredTree(store)
            try:
                yield AuditExporter(tree)
            finally:
                tree.close()

    def alerts_ls(self, *, include_acked: bool, limit: int) -> list[Row]:
        """Alerts newest first (read from the database; no agent needed)."""
        from strongroom.monitor.alerts import AlertManager

        with _store() as store:
            return [_alert(a) for a in AlertManager(store).recent(unacked=not include_acked,
                                                                  limit=limit)]

    def alerts_ack(self, alert_id: int, *, by: str, note: str) -> Row:
        """Acknowledge an alert (audited as alert.ack)."""
        from strongroom.monitor.alerts import AlertManager

        with open_log() as log:
            return _alert(AlertManager(log.store, audit=log).ack(alert_id, by=by, note=note))

    def egress_report(self, compression: float) -> Row:
        """Budgets in force and time-to-exfiltrate per artifact."""
        from strongroom.runtime.listings import egress_report

        with _store() as store:
            return egress_report(store, compression=compression)

    # -- directory, documents, posture ------------------------------------------------------

    def people_ls(self) -> list[Row]:
        """Principals whose enrollment verifies (signed by k officers, not revoked)."""
        from strongroom.runtime.listings import people_rows

        vault, ctx = open_context()
        with vault:
            return people_rows(ctx.directory(), now=time.time())

    def compartments_ls(self) -> list[Row]:
        """Compartments: who is read in, and which labelled resources need them."""
        from strongroom.runtime.listings import compartment_rows

        vault, ctx = open_context()
        with vault:
            return compartment_rows(ctx.directory(), vault)

    def docs_ls(self) -> list[Row]:
        """Documents with classification and compartments (no content)."""
        from strongroom.runtime.listings import document_rows
        from strongroom.runtime.services import open_vault

        with open_vault() as vault:
            return document_rows(vault)

    def posture(self, declaration: Path | None) -> Row:
        """This deployment scored against RAND SL1–SL5 from live evidence."""
        from strongroom.posture.assess import assess
        from strongroom.posture.declaration import load_declaration
        from strongroom.posture.facts import collect_live
        from strongroom.posture.report import render_html
        from strongroom.settings import Settings

        declared = load_declaration(declaration) if declaration is not None else None
        settings = Settings()
        result = assess(collect_live(settings.resolved_home, settings.resolved_database_url),
                        declared)
        return {"report": result.to_json(), "html": render_html(result)}


def _alert(a: Any) -> Row:
    """A stored alert as the API sends it (``AlertOut``)."""
    return {"id": a.id, "rule": a.rule, "severity": a.severity, "subject": a.subject,
            "object": a.obj, "message": a.message, "count": a.count,
            "first_seen": a.first_seen.isoformat(), "last_seen": a.last_seen.isoformat(),
            "acked_at": a.acked_at.isoformat() if a.acked_at else None, "acked_by": a.acked_by}

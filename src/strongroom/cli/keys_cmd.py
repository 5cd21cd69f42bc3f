"""Key custody commands: ``init``, ``unseal``, ``seal``, ``status``, ``rekey`` and ``keys ...``.

Everything that needs the unsealed root key goes to the local agent
(``<STRONGROOM_HOME>/agent.sock``, started by ``unseal`` or ``serve``), so that
``strongroom unseal`` run by two custodians one after the other adds up.
Shares are decrypted here, with the custodian's own age identity, and sent to
the agent re-encrypted to the current ceremony's one-time recipient.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from strongroom.crypto.age import AgeIdentity
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.store.db import Store

# The keyring, ceremony (numpy), store (SQLAlchemy) and agent client are
# imported inside the commands so that every other command starts quickly.

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(help="KEK rotation, identities and share checks.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

CustodianOpt = Annotated[list[Path], typer.Option("--custodian", help="custodian's age public "
                                                  "key file (repeat once per custodian)")]
ThresholdOpt = Annotated[int, typer.Option("--threshold", help="shares needed to unseal (K)")]
SharesDirOpt = Annotated[Path, typer.Option("--shares-dir", help="where share files are written")]
ShareOpt = Annotated[Path | None, typer.Option("--share", help="your share file")]
IdentityOpt = Annotated[Path | None, typer.Option("--identity", help="your age identity file")]


def _read_identities(path: Path) -> list[AgeIdentity]:
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


def _show(status: KeyringStatus) -> None:
    render.keyring_status(status.to_dict(), False)


def _store() -> Store:
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    return Store.open(Settings().resolved_database_url)


def init(
    custodian: CustodianOpt,
    threshold: ThresholdOpt = 0,
    shares_dir: SharesDirOpt = Path("shares"),
    officer: Annotated[list[Path] | None, typer.Option(
        "--officer", help="security officer's Ed25519 public key file (repeatable)")] = None,
    officer_threshold: Annotated[int, typer.Option(
        "--officer-threshold", help="officer signatures needed for directory statements")] = 1,
) -> None:
    """Create the vault's root key, deal K-of-N shares to custodians, pin officers; stays sealed."""
    from strongroom.datadir import make_private_dir
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.settings import Settings

    make_private_dir(Settings().resolved_home)  # 0700 before the database is created in it
    store = _store()
    try:
        result = ceremony.init_vault(
            store, custodians=custodian or [], threshold=threshold, shares_dir=shares_dir,
            officers=officer or [], officer_threshold=officer_threshold, settings=KeysSettings())
    finally:
        store.close()
    _out.print(f"initialised vault {result.vault_id} ({result.backend}); it is sealed")
    for f in result.share_files:
        _out.print(f"  share file: {f}  (give it to its custodian; never store it with others)")
    if result.commitments_file:
        _out.print(f"  commitments (public): {result.commitments_file}")
    if result.officer_identity:
        _out.print(f"  no --officer given: created bootstrap officer identity "
                   f"{result.officer_identity} (for evaluation; set STRONGROOM_IDENTITY to it)")


def unseal(
    share: ShareOpt = None,
    identity: IdentityOpt = None,
    reset: Annotated[bool, typer.Option("--reset", help="discard progress and start over")] = False,
) -> None:
    """Submit one custodian's share (or, for an HSM vault, log in to the token)."""
    from strongroom.cli import remote

    if remote.active():
        return remote.unseal(share, identity, reset)
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.services import key_service

    svc = key_service(start=True)  # only init, unseal and serve start the agent
    if reset:
        _show(svc.reset())
        return
    status = svc.status()
    if not status.initialized:
        raise InvalidInput("the vault is not initialised", obj="keyring",
                           remedy="run `strongroom init` first")
    if status.backend == "hsm":
        pin = KeysSettings().hsm_pin or getpass.getpass("HSM user PIN: ")
        _show(svc.unseal_hsm(pin))
        return
    if not status.sealed:
        _out.print("the vault is already unsealed")
        return
    if share is None or identity is None:
        raise InvalidInput("give --share FILE and --identity IDENTITY_FILE", obj="unseal")
    content = ceremony.read_share_file(share, _read_identities(identity))
    _show(svc.submit_share(ceremony.build_submission(status, content, obj=str(share))))


def seal(
    all_hosts: Annotated[bool, typer.Option(
        "--all", help="also order every host sharing the server's database to seal "
                      "(with STRONGROOM_URL)")] = False,
) -> None:
    """Wipe key material from memory and stop the local agent (with STRONGROOM_URL: the server)."""
    from strongroom.cli import remote
    from strongroom.runtime.services import key_service

    if remote.active():
        return remote.seal(all_hosts)
    if all_hosts:
        raise InvalidInput("--all is an order to every server sharing the database, given "
                           "through one of them", obj="seal --all",
                           remedy="set STRONGROOM_URL to any server and run it as an officer "
                           "(STRONGROOM_IDENTITY)")

    svc = key_service(start=False)
    info = svc.client.ping()
    if svc.seal() is None:
        _out.print("no key agent is running; the vault is sealed")
    elif info and info.get("owner"):
        _out.print(f"sealed; the key agent of strongroom serve (pid {info['owner']}) stays up, "
                   "sealed, for the server's next unseal")
    else:
        _out.print("sealed; the key agent has stopped")


def status(json_out: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
           ) -> None:
    """Show initialised, sealed, threshold, unseal progress and KEK versions."""
    from strongroom.cli import remote

    if remote.active():
        return remote.status(json_out)
    from strongroom import __version__

    # server_version: the strongroom whose gate answered (here, this one), as remotely
    render.keyring_status({**_status_without_starting().to_dict(),
                           "server_version": __version__}, json_out)


def _status_without_starting() -> KeyringStatus:
    """The agent's status when it runs; else read from the store (sealed) — never start one.

    ``status`` run in the wrong directory must not create a data directory or
    leave an agent behind.
    """
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.keyring import Keyring
    from strongroom.keys.keyring import KeyringStatus as KeyringStatusCls
    from strongroom.runtime.services import key_service
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    svc = key_service(start=False)
    if svc.client.running():
        return svc.status()
    settings = Settings()
    keys_settings = KeysSettings()
    home = settings.resolved_home
    if not settings.database_url and not (home / "strongroom.db").exists():
        return KeyringStatusCls(initialized=False, sealed=True, backend=keys_settings.key_backend)
    store = Store.open(settings.resolved_database_url)
    try:
        ring = Keyring(store, keys_settings)
        try:
            return ring.status()
        finally:
            ring.close()
    finally:
        store.close()


def rekey(
    custodian: CustodianOpt,
    threshold: ThresholdOpt = 0,
    shares_dir: SharesDirOpt = Path("shares"),
    share: ShareOpt = None,
    identity: IdentityOpt = None,
) -> None:
    """Change custodians (N) and threshold (K): the current quorum submits shares, one per run."""
    from strongroom.keys import ceremony
    from strongroom.runtime.services import key_service

    svc = key_service()
    status = svc.status()
    if status.ceremony != "rekey":
        recipients = [ceremony.read_custodian(p) for p in custodian or []]
        status = svc.rekey_start(recipients, threshold)
        _out.print(f"rekey to {threshold} of {len(recipients)} started (ceremony {status.nonce})")
    if share is None or identity is None:
        _out.print("each of the current custodians now runs `strongroom rekey ... --share FILE "
                   "--identity IDENTITY_FILE`")
        return
    content = ceremony.read_share_file(share, _read_identities(identity))
    status, files = svc.rekey_submit(ceremony.build_submission(status, content, obj=str(share)))
    if files is None or status.nonce is None:
        _out.print(f"rekey: {status.progress} of {status.threshold} shares")
        return
    written = ceremony.write_share_files(shares_dir, files)
    final = svc.rekey_commit(status.nonce)
    _out.print(f"rekeyed: {final.threshold} of {final.shares} (generation {final.generation})")
    for path in written:
        _out.print(f"  {path}")


@keys_app.command("rotate")
def rotate() -> None:
    """Create a new KEK version; new file keys are wrapped under it."""
    from strongroom.runtime.services import key_service

    _out.print(f"KEK version {key_service().rotate()} created; run `strongroom keys rewrap`")


@keys_app.command("rewrap")
def rewrap() -> None:
    """Wrap every file key under the newest KEK version (payloads untouched)."""
    from strongroom.runtime.services import key_service

    _out.print(f"rewrapped {key_service().rewrap()} file key(s)")


@keys_app.command("retire")
def retire(version: Annotated[int, typer.Argument(help="KEK version to retire")]) -> None:
    """Retire a KEK version once no file key depends on it alone."""
    from strongroom.runtime.services import key_service

    removed = key_service().retire(version)
    _out.print(f"KEK version {version} retired ({removed} superseded wrapping(s) removed)")


@keys_app.command("new-identity")
def new_identity(
    out: Annotated[Path, typer.Option("--out", "-o", help="identity file to create (0600)")],
    name: Annotated[str | None, typer.Option("--name", help="who this identity is")] = None,
) -> None:
    """Create an Ed25519 identity file and its public key file (<out>.pub)."""
    from strongroom.keys.identity import Identity
    from strongroom.outputs import write_output

    ident = Identity.generate(name)
    ident.save(out)
    pub = out.with_name(out.name + ".pub")
    write_output(pub, ident.public.to_text().encode("utf-8"), mode=0o644)
    _out.print(f"identity: {out}\npublic key: {pub}\n{ident.public}")


@keys_app.command("public")
def public(
    manifest: Annotated[bool, typer.Option("--manifest", help="only the manifest key")] = False,
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="only the checkpoint key")
                          ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the vault's public signing keys (base64 raw Ed25519) for clients to pin.

    ``--manifest`` prints the value for ``STRONGROOM_MANIFEST_KEY``. Run it on
    the vault host (the vault must be unsealed); with ``STRONGROOM_URL`` set it
    prints what the server claims, which is worth pinning only once compared
    with the vault host's output.
    """
    import base64

    from strongroom.cli import remote
    from strongroom.errors import Sealed

    if remote.active():
        with remote.client() as c:
            claimed = c.public_keys()
        keys = {"manifest": claimed["manifest"], "checkpoint": claimed["checkpoint"]}
    else:
        from strongroom.runtime.services import key_service

        svc = key_service(start=False)
        if not svc.client.running():
            raise Sealed("the vault is sealed (no key agent is running)", obj="keyring",
                         remedy="unseal it first: `strongroom unseal`")
        raw = svc.public_keys()
        keys = {k: base64.b64encode(raw[k]).decode() for k in ("manifest", "checkpoint")}
    only = [k for k, wanted in (("manifest", manifest), ("checkpoint", checkpoint)) if wanted]
    render.public_keys(keys, only, as_json)


@keys_app.command("verify-share")
def verify_share(
    share: Annotated[Path, typer.Option("--share", help="your share file")],
    identity: Annotated[Path, typer.Option("--identity", help="your age identity file")],
    commitments: Annotated[Path | None, typer.Option(
        "--commitments", help="published commitments file (default: from the database)")] = None,
) -> None:
    """Check your share against the published commitment, without revealing it."""
    from strongroom.keys import ceremony

    if commitments is not None:
        published = ceremony.published_config(commitments.read_text(), str(commitments))
    else:
        store = _store()
        try:
            published = ceremony.published_in_store(store)
        finally:
            store.close()
    content = ceremony.verify_share_file(share, _read_identities(identity),
                                         published)
    _out.print(f"share {content.index} of vault {content.vault_id} (generation "
               f"{content.generation}) matches its published commitment")


def register(app: typer.Typer) -> None:
    """Add the key-custody commands to the ``strongroom`` app."""
    for fn in (init, unseal, seal, status, rekey):
        app.command(fn.__name__)(fn)
    app.add_typer(keys_app, name="keys")

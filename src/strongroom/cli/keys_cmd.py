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
from strongroom.cli.placement import service
from strongroom.service.embedded import read_age_identities as _read_identities

if TYPE_CHECKING:
    from strongroom.store.db import Store

# The keyring, ceremony (numpy), store (SQLAlchemy) and agent client are
# imported inside the commands so that every other command starts quickly.

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(help="KEK rotation, identities and share checks.", no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

CustodianOpt = Annotated[list[Path], typer.Option(
    "--custodian", help="custodian's public key file: age1pq1… (hybrid, from `strongroom keygen "
                        "--pq`; preferred) or age1… (repeat once per custodian)")]
ThresholdOpt = Annotated[int, typer.Option("--threshold", help="shares needed to unseal (K)")]
SharesDirOpt = Annotated[Path, typer.Option("--shares-dir", help="where share files are written")]
ShareOpt = Annotated[Path | None, typer.Option("--share", help="your share file")]
IdentityOpt = Annotated[Path | None, typer.Option("--identity", help="your age identity file")]


def _store(*, new: bool = False) -> Store:
    """The vault's database; ``new`` (``init`` only): an empty one gets the schema."""
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    return Store.open(Settings().resolved_database_url, schema="create" if new else "current")


def init(
    custodian: CustodianOpt,
    threshold: ThresholdOpt = 0,
    shares_dir: SharesDirOpt = Path("shares"),
    officer: Annotated[list[Path] | None, typer.Option(
        "--officer", help="security officer's public key file (repeatable): from `keys "
                     "new-identity --pq` (Ed25519 + ML-DSA-65, both pinned; preferred) or "
                     "without --pq (Ed25519 alone)")] = None,
    officer_threshold: Annotated[int, typer.Option(
        "--officer-threshold", help="officer signatures needed for directory statements")] = 1,
) -> None:
    """Create the vault's root key, deal K-of-N shares to custodians, pin officers; stays sealed."""
    from strongroom.datadir import make_private_dir
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.settings import Settings

    make_private_dir(Settings().resolved_home)  # 0700 before the database is created in it
    store = _store(new=True)
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
    with service() as svc:
        out = svc.unseal(share, identity, reset=reset,
                         hsm_pin=lambda: getpass.getpass("HSM user PIN: "))
    if out["already_unsealed"]:
        _out.print("the vault is already unsealed")
        return
    render.keyring_status(out["status"], False)


def seal(
    all_hosts: Annotated[bool, typer.Option(
        "--all", help="also order every host sharing the server's database to seal "
                      "(with STRONGROOM_URL)")] = False,
) -> None:
    """Wipe key material from memory and stop the local agent (with STRONGROOM_URL: the server)."""
    with service() as svc:
        out = svc.seal(all_hosts=all_hosts)
    for note in out["notes"]:
        _out.print(note, markup=False)


def status(json_out: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
           ) -> None:
    """Show initialised, sealed, threshold, unseal progress and KEK versions."""
    from strongroom import __version__

    with service() as svc:
        st = svc.status()
    server_version = str(st.get("server_version", "?"))
    if server_version != __version__:
        _err.print(f"note: {svc.location} runs strongroom {server_version}, this client "
                   f"{__version__}", markup=False)
    render.keyring_status(st, json_out)


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
    with service() as svc:
        version = svc.keys_rotate()["kek_version"]
    _out.print(f"KEK version {version} created; run `strongroom keys rewrap`")


@keys_app.command("rewrap")
def rewrap() -> None:
    """Wrap every file key under the newest KEK version (payloads untouched)."""
    with service() as svc:
        count = svc.keys_rewrap()["rewrapped"]
    _out.print(f"rewrapped {count} file key(s)")


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
    pq: Annotated[bool, typer.Option(
        "--pq", help="also an ML-DSA-65 key: approvals, Grants and transfer manifests you sign "
        "carry both signatures and stay verifiable against a quantum forger")] = False,
) -> None:
    """Create an Ed25519 identity file and its public key file (<out>.pub)."""
    from strongroom.keys.identity import Identity
    from strongroom.outputs import write_output

    ident = Identity.generate(name, pq=pq)
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
    with service() as svc:
        keys = svc.public_keys()
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

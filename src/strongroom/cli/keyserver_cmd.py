"""``strongroom keyserver``: run one threshold key server (its own home, database, keyring and log).

A key server is initialised like a vault (``STRONGROOM_HOME=/srv/ks-a strongroom init
--custodian ... --threshold K``: its own custodians and officers), then
``strongroom keyserver serve`` listens; its custodians unseal it over
``POST /v1/keyserver/unseal`` and its officers set it up and run key
generation with signed statements (docs/threshold.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]

keyserver_app = typer.Typer(help="A threshold key server (k of n release file keys).", no_args_is_help=True)


@keyserver_app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8430,
) -> None:
    """Serve this data directory's key server (status, unseal, admin, partial decryptions)."""
    import uvicorn

    from strongroom.datadir import require_vault
    from strongroom.runtime.keyserver import KeyServer
    from strongroom.runtime.keyserver_app import create_app
    from strongroom.runtime.keyserver_watch import WatchSettings, keyserver_watch
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    require_vault(settings.resolved_home, settings.database_url)
    store = Store.open(settings.resolved_database_url)
    server = KeyServer(store)
    # Compares its own release log with its peers' and alerts on a release only some recorded.
    watch = keyserver_watch(server, WatchSettings())
    if watch is not None:
        watch.start()
    typer.echo(f"key server for {settings.resolved_home} on http://{host}:{port}", err=True)
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
    finally:
        if watch is not None:
            watch.stop()
        server.svc.close()
        store.close()


@keyserver_app.command()
def admin(
    op: Annotated[str, typer.Argument(help="setup, deal, accept or retire")],
    server: Annotated[str, typer.Option("--server", help="the key server's URL")],
    identity: Annotated[Path, typer.Option("--identity", help="this key server's officer identity file")],
    body: Annotated[Path | None, typer.Option("--body", help="JSON file with the operation's fields")] = None,
) -> None:
    """Sign one administration statement with an officer identity, send it, print the result (JSON)."""
    import json

    import httpx

    from strongroom import errors
    from strongroom.keys.identity import Identity
    from strongroom.runtime.keyserver import admin_statement
    from strongroom.runtime.threshold_client import answer

    try:
        fields = json.loads(body.read_text(encoding="utf-8")) if body else {}
    except (OSError, ValueError) as exc:
        raise errors.InvalidInput(f"cannot read the fields ({type(exc).__name__})", obj=str(body),
                                  remedy="give a JSON object, e.g. {\"index\": 1, ...}") from None
    if not isinstance(fields, dict):
        raise errors.InvalidInput("the fields must be a JSON object", obj=str(body))
    envelope = admin_statement(Identity.load(identity).private_key, op, **fields)
    try:
        r = httpx.post(f"{server.rstrip('/')}/v1/keyserver/admin", json={"envelope": envelope}, timeout=60)
    except httpx.HTTPError as exc:
        raise errors.ServerError(f"no answer from the key server ({type(exc).__name__})", obj=server,
                                 remedy="check the URL and that `strongroom keyserver serve` runs") from None
    data = answer(r, server)
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


@keyserver_app.command()
def pin(
    out: Annotated[Path, typer.Option("--out", help="the commitments file to write "
                                      "(what STRONGROOM_THRESHOLD_COMMITMENTS names)")],
    servers: Annotated[str | None, typer.Option(
        "--servers", help="name=URL,... (default STRONGROOM_THRESHOLD_SERVERS)")] = None,
) -> None:
    """Pin the group: write each key server's share index and the commitments they all show.

    Run it after the key generation and again after every re-sharing (a server added, removed,
    or refreshed): the file then pins each server to its index, so a server that relays another
    one's partial is refused by its own name."""
    import httpx

    from strongroom import errors
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.threshold_client import answer
    from strongroom.runtime.threshold_keys import parse_servers, pins_from_statuses, write_pins

    spec = servers if servers is not None else KeysSettings().threshold_servers
    targets = parse_servers(spec, obj="--servers" if servers is not None else "STRONGROOM_THRESHOLD_SERVERS")
    statuses: dict[str, Any] = {}
    with httpx.Client(timeout=30) as http:
        for name, url in targets:
            try:
                r = http.get(f"{url.rstrip('/')}/v1/keyserver/status")
            except httpx.HTTPError as exc:
                raise errors.ServerError(f"no answer from the key server ({type(exc).__name__})", obj=name,
                                         remedy=f"check {url} and that `strongroom keyserver serve` runs; "
                                         "nothing was written") from None
            statuses[name] = answer(r, name)
    pins = pins_from_statuses(statuses)
    previous = write_pins(out, pins)
    if previous is not None:
        typer.echo(f"the previous group key's commitments are kept in {previous} "
                   "(for `strongroom keyserver rewrap --old-commitments`)", err=True)
    pinned = ", ".join(f"{name}={index}" for name, index in pins["indices"].items())
    typer.echo(f"pinned {len(pins['indices'])} key servers to their share indices ({pinned}) in {out}", err=True)


def _post_statements(url: str, items: list[dict[str, str]]) -> dict[str, int]:
    """Send signed statements to one key server; what it stored, by kind (one it already held: none)."""
    import httpx

    from strongroom.runtime.keyserver_sync import send

    with httpx.Client(timeout=60) as http:
        stored: dict[str, int] = send(http, url, items)["stored"]
    return stored


@keyserver_app.command()
def sync(
    server: Annotated[list[str] | None, typer.Option(
        "--server", help="NAME=URL of a key server (repeatable); default: STRONGROOM_THRESHOLD_SERVERS")] = None,
    full: Annotated[bool, typer.Option("--full", help="send every statement, not only what each server lacks")] = False,
) -> None:
    """Send each key server the vault's signed access statements it lacks (each verifies them itself)."""
    import json

    from sqlalchemy import select

    from strongroom import errors
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.keyserver import STATEMENT_KINDS
    from strongroom.runtime.keyserver_sync import sync_one
    from strongroom.runtime.services import open_vault
    from strongroom.runtime.threshold_keys import parse_servers
    from strongroom.store.tables.access import AccessStatement

    targets = parse_servers(",".join(server) if server else KeysSettings().threshold_servers)
    with open_vault() as vault, vault.store.session(readonly=True) as s:
        rows = s.execute(select(AccessStatement.kind, AccessStatement.envelope)
                         .where(AccessStatement.kind.in_(STATEMENT_KINDS)).order_by(AccessStatement.id)).all()
    items = [{"kind": str(kind), "envelope": str(env)} for kind, env in rows]
    results: dict[str, dict[str, Any]] = {}
    down: dict[str, str] = {}
    for name, url in targets:  # one server down does not stop the others
        try:
            results[name] = sync_one(url, items, full=full)
        except errors.StrongroomError as exc:
            down[name] = f"{type(exc).__name__}: {exc.message}"
    refused = {n: r["refused"] for n, r in results.items() if r["refused"]}
    out = {"statements": len(items), "sent": sum(int(str(r["sent"])) for r in results.values()),
           "sent_to": {n: r["sent"] for n, r in results.items()},
           "stored": {n: r["stored"] for n, r in results.items()},
           "held": {n: r["held"] for n, r in results.items()}, "refused": refused, "unreachable": down}
    typer.echo(json.dumps(out, indent=2, sort_keys=True))
    for name, items_refused in refused.items():
        typer.echo(f"warning: {name} refused {len(items_refused)} statement(s) not signed by a signer its "
                   "officers pinned or enrolled (see \"refused\")", err=True)
    if down:
        raise errors.ServerError(f"{len(down)} key server(s) not synced: " + "; ".join(f"{n}: {m}" for n, m in down.items()),
                                 obj="keyserver sync", remedy="run `strongroom keyserver sync` again when they are back")


@keyserver_app.command("revoke-grant")
def revoke_grant(
    grant_id: Annotated[str, typer.Argument(help="the Grant's id (`strongroom access grants`)")],
    server: Annotated[list[str], typer.Option("--server", help="a key server's URL (repeatable: give every one)")],
    identity: Annotated[Path, typer.Option("--identity", help="your identity file (requester, approver, officer)")],
    reason: Annotated[str, typer.Option("--reason", help="why, for the logs")] = "",
) -> None:
    """Sign a Grant revocation with your own key and send it to each key server directly.

    No vault is on this path, so nobody who runs the vault's database can hold it back; run
    `strongroom access revoke` too so that the vault's own gate refuses the Grant.
    """
    import json
    import time

    from strongroom.access import statements
    from strongroom.access.grants import revocation_statement
    from strongroom.keys.identity import Identity

    ident = Identity.load(identity)
    env = statements.sign("grant-revocation", revocation_statement(
        grant_id, ident.public.principal, ident.public.key_id, reason, now=time.time()), ident.private_key,
        pq=ident.mldsa_key)
    item = [{"kind": "grant-revocation", "envelope": env}]
    out = {url: _post_statements(url, item) for url in server}
    typer.echo(json.dumps({"grant": grant_id, "revocation": statements.payload_digest(env), "stored": out},
                          indent=2, sort_keys=True))


@keyserver_app.command("revoke-key")
def revoke_key(
    server: Annotated[list[str], typer.Option("--server", help="a key server's URL (repeatable: give every one)")],
    identity: Annotated[Path, typer.Option("--identity", help="your officer identity file")],
    key_id: Annotated[str | None, typer.Option("--key-id", help="the revoked principal's key id (first officer)")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why (first officer)")] = "",
    cosign: Annotated[Path | None, typer.Option(
        "--cosign", help="the revocation another officer signed (its --out file): add your signature")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the signed revocation here, for cosigners")] = None,
) -> None:
    """Sign a principal's key revocation as an officer and send it to each key server directly.

    The first officer names the key (``--key-id``); each further officer signs the same statement
    (``--cosign FILE``); each key server merges the signatures and the revocation counts once the
    officers it pinned have signed it. No vault is on this path.
    """
    import json
    import re
    import time

    from strongroom import errors
    from strongroom.access import statements
    from strongroom.access.directory import KeyRevocation
    from strongroom.keys.identity import Identity

    ident = Identity.load(identity)
    first = None
    if cosign is not None:
        try:
            first = cosign.read_text(encoding="utf-8")
            payload = statements.unverified_payload(first)
            revocation = KeyRevocation(str(payload["key_id"]), str(payload["reason"]), int(payload["issued"]))
        except (OSError, KeyError, TypeError, ValueError, errors.InvalidInput) as exc:
            raise errors.InvalidInput(f"cannot read the revocation to cosign ({type(exc).__name__})", obj=str(cosign),
                                      remedy="give the file the first officer wrote with --out") from None
    elif key_id:
        if re.fullmatch(r"[0-9a-f]{16}", key_id) is None:  # a typo must not publish a revocation of nothing
            raise errors.InvalidInput(f"{key_id!r} is not a key id (16 lowercase hex characters)",
                                      obj="keyserver revoke-key", remedy="copy it from `strongroom people ls`")
        revocation = KeyRevocation(key_id, reason, int(time.time()))
    else:
        raise errors.InvalidInput("name the key (--key-id) or the revocation to cosign (--cosign)",
                                  obj="keyserver revoke-key")
    env = revocation.sign(ident.private_key, pq=ident.mldsa_key)
    if first is not None:  # send every signature so far (each key server merges them anyway)
        env = statements.merge(first, env)
    if out is not None:
        out.write_text(env, encoding="utf-8")
    stored = {url: _post_statements(url, [{"kind": "revocation", "envelope": env}]) for url in server}
    typer.echo(json.dumps({"key_id": revocation.key_id, "revocation": statements.payload_digest(env),
                           "stored": stored}, indent=2, sort_keys=True))


@keyserver_app.command()
def rewrap(
    old_commitments: Annotated[Path, typer.Option(
        "--old-commitments", help="JSON file of the rotated-away group's commitments")],
) -> None:
    """Rewrap this vault's file keys from the old group key to the current one (after a new DKG)."""
    import json

    from strongroom import errors
    from strongroom.runtime.services import open_vault
    from strongroom.runtime.threshold_keys import ThresholdKeyService, load_commitments

    try:
        data = json.loads(old_commitments.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.InvalidInput(f"cannot read the old commitments ({type(exc).__name__})",
                                  obj=str(old_commitments), remedy="give the JSON list the key servers showed") from None
    old = load_commitments(data, obj=str(old_commitments))
    with open_vault() as vault:
        keys = vault.keys
        if not isinstance(keys, ThresholdKeyService):
            raise errors.ConfigError("this vault does not use the threshold backend", obj="STRONGROOM_FILE_KEYS",
                                     remedy="set STRONGROOM_FILE_KEYS=threshold and the new group's commitments")
        changed = keys.rewrap(old)
    typer.echo(json.dumps({"rewrapped": changed}, indent=2))


def push_restriction(kind: str, envelope: str, pushed: Any = None) -> None:
    """Best effort: a revocation just signed, to each of the vault's key servers at once, each
    server's answer printed; one not reached is named with ``keyserver sync`` as the remedy.
    ``pushed``: the answers of the key servers the server (``STRONGROOM_URL``) pushed it to
    itself; else it is sent from here (``STRONGROOM_THRESHOLD_SERVERS``). Nothing to do for a
    vault without key servers."""
    from strongroom import errors
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.keyserver_sync import push
    from strongroom.runtime.threshold_keys import parse_servers

    results: dict[str, dict[str, Any]]
    if isinstance(pushed, dict):
        results = pushed
    else:
        try:
            servers = parse_servers(KeysSettings().threshold_servers)
        except errors.StrongroomError as exc:
            typer.echo(f"warning: the {kind} was not sent to the key servers: {exc.message}; fix "
                       "STRONGROOM_THRESHOLD_SERVERS and run `strongroom keyserver sync`", err=True)
            return
        if not servers:
            return
        results = push(servers, [{"kind": kind, "envelope": envelope}])
    missed = []
    for name, result in results.items():
        if "error" in result:
            missed.append(name)
            typer.echo(f"key server {name}: NOT SENT ({result['error']})", err=True)
        else:
            typer.echo(f"key server {name}: {kind} {'stored' if result['stored'] else 'already held'}", err=True)
    if missed:
        typer.echo(f"warning: {', '.join(missed)} will honour what this {kind} revokes until they receive it: "
                   "run `strongroom keyserver sync` on the vault host when they are reachable", err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(keyserver_app, name="keyserver")

"""The CLI against a server: when ``STRONGROOM_URL`` is set, these commands go over HTTP.

Each affected command starts with ``if remote.active(): return remote.<command>(...)``;
the functions here do the same job through :class:`strongroom.server.client.Client`,
signing every request and every statement with ``STRONGROOM_IDENTITY``. Key
material never crosses the wire except a released file key, held in memory and
zeroed after use; shares are encrypted to the ceremony recipient before sending.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from strongroom.errors import AccessDenied, ApprovalRequired, IntegrityError, InvalidInput

if TYPE_CHECKING:
    from strongroom.server.client import Client

__all__ = ["active", "client"]

_out = Console(highlight=False, soft_wrap=True)


def active() -> bool:
    """True when ``STRONGROOM_URL`` names a server."""
    return bool(os.environ.get("STRONGROOM_URL"))


def client() -> Client:
    """A signing client for ``STRONGROOM_URL`` as ``STRONGROOM_IDENTITY``."""
    from strongroom.server.client import Client

    return Client.from_env()


def _me(c: Client) -> Any:
    if c.identity is None:
        raise AccessDenied("no identity to sign with", obj="STRONGROOM_IDENTITY",
                           remedy="set STRONGROOM_IDENTITY to your identity file")
    return c.identity


# -- keys ---------------------------------------------------------------------------------


def status(json_out: bool) -> None:
    """``strongroom status`` against the server (which server, and version skew, on stderr)."""
    from strongroom import __version__
    from strongroom.cli import render

    with client() as c:
        st = c.status()
        server_version = str(c.version().get("version", "?"))
    err = Console(stderr=True, highlight=False)
    err.print(f"server: strongroom {server_version} at {c.url}", markup=False)
    if server_version != __version__:
        err.print(f"note: the server runs strongroom {server_version}, this client {__version__}",
                  markup=False)
    render.keyring_status({**st, "server_version": server_version}, json_out)


def unseal(share: Path | None, identity: Path | None, reset: bool) -> None:
    """Submit one share to the server's ceremony (decrypted here, re-encrypted to its recipient)."""
    from strongroom.cli import render
    from strongroom.cli.keys_cmd import _read_identities
    from strongroom.keys import ceremony
    from strongroom.keys.keyring import KeyringStatus

    if reset:
        raise InvalidInput("--reset is not offered over the API", obj="unseal",
                           remedy="reset the ceremony on the server host")
    with client() as c:
        status = KeyringStatus.from_dict(c.status())
        if not status.initialized:
            raise InvalidInput("the vault is not initialised", obj="keyring",
                               remedy="run `strongroom init` on the server host")
        if not status.sealed:
            _out.print("the vault is already unsealed")
            return
        if share is None or identity is None:
            raise InvalidInput("give --share FILE and --identity IDENTITY_FILE", obj="unseal")
        content = ceremony.read_share_file(share, _read_identities(identity))
        submission = ceremony.build_submission(status, content, obj=str(share))
        render.keyring_status(c.unseal(submission), False)


def seal(all_hosts: bool = False) -> None:
    """``strongroom seal`` against the server: a security officer's signed seal request.

    The server answers once its gate is sealed (every worker releases through
    that one gate), so the next release it is asked for is refused.
    """
    from strongroom.keys.keyring import KeyringStatus

    with client() as c:
        _me(c)
        status = KeyringStatus.from_dict(c.seal(all_hosts=all_hosts))
    if not status.sealed:
        raise IntegrityError(f"the server at {c.url} answered but reports itself unsealed",
                             obj="seal", remedy="seal it on the vault host, and find out why")
    _out.print(f"sealed the server at {c.url}: it releases no keys until it is unsealed")
    if all_hosts:
        _out.print("ordered every host sharing its database to seal (each within its state "
                   "check interval, STRONGROOM_STATE_CHECK_INTERVAL_S)")


# -- weights ------------------------------------------------------------------------------------


def weights_ls(as_json: bool) -> None:
    """``weights ls`` against the server."""
    from strongroom.cli import render

    with client() as c:
        rows = c.weights()
    render.artifacts(rows, as_json)


def weights_import(path: Path, name: str, compartments: list[str], new_version: bool, *,
                   local_only: dict[str, bool] | None = None) -> None:
    """Stream one .safetensors file to the server, which scans and encrypts it in RAM.

    The body is signed by its SHA-256 (read once to hash, once to send). The
    returned manifest is verified with the pinned manifest key before it is shown.
    """
    from strongroom.vault.manifest import Manifest

    refused = sorted(opt for opt, given in (local_only or {}).items() if given)
    if refused:
        raise InvalidInput(f"{', '.join(refused)} is not offered over the API", obj="import",
                           remedy="run the import on the vault host, without STRONGROOM_URL")
    if path.is_dir() or path.suffix != ".safetensors" or not path.is_file():
        raise InvalidInput("over the API, import one .safetensors file", obj=str(path),
                           remedy="import each shard, or a directory on the vault host")
    with client() as c:
        out = c.import_weights(path, name, compartments=tuple(compartments),
                               new_version=new_version)
        m = Manifest.verify(str(out["envelope"]), c.manifest_key(str(out["manifest_key"])),
                            obj=name)
    if m.name != name:
        raise IntegrityError(f"the server answered with the manifest of {m.ref}", obj=name)
    from strongroom.cli import render

    render.imported(m.ref, len(m.files), len(m.tensors), m.total_size)


def weights_verify(name: str, version: int | None, purpose: str = "verify") -> None:
    """Fetch manifest and ciphertext, release each key, decrypt in memory, check every hash."""
    from strongroom.cli import render

    with client() as c:
        ref, files, nbytes = c.verify(name, version, purpose=purpose)
    render.verified(ref, files, nbytes)


# -- access ---------------------------------------------------------------------------------------


def access_request(resource: str, purpose: str, action: str, duration_s: int,
                   nbytes: int) -> None:
    """Sign a request and file it on the server; shows it as the local command does."""
    from strongroom.access.approvals import AccessRequest
    from strongroom.cli import access_render

    with client() as c:
        me = _me(c)
        who = c.get("/v1/whoami")
        req = AccessRequest.new(who["name"], who["key_id"], resource, action, purpose,
                                duration_s, nbytes, time.time())
        digest = c.post("/v1/access/requests", {"envelope": req.sign(me.private_key)})["digest"]
        filed = c.get(f"/v1/access/requests/{digest}")
    access_render.request_filed(digest, who["name"], action, resource, req.duration_s,
                                req.byte_budget, filed["rule"])


def _try_grant(c: Client, digest: str) -> None:
    from strongroom.access.grants import build_grant
    from strongroom.cli.render import stamp

    bundle = c.get(f"/v1/access/requests/{digest}")
    env = build_grant(_me(c).private_key, bundle["envelope"], bundle["approval_envelopes"],
                      now=time.time())
    try:
        g = c.post("/v1/access/grants", {"envelope": env})
    except ApprovalRequired as exc:
        _out.print(f"not yet: {exc.message}")
        return
    _out.print(f"grant {g['grant_id'][:16]} issued: {g['holder']} may {g['action']} "
               f"{g['resource']} until {stamp(g['expires'])} "
               f"(approved by {', '.join(g['approvers'])})")


def access_verdict(request_id: str, *, approve_it: bool, ttl_s: int = 24 * 3600,
                   reason: str = "") -> None:
    """Sign an approval (then try to issue the Grant) or a denial of a request on the server.

    The server refuses (HTTP 403 or 409) an approval that could not count — the
    requester's own, a second one by the same person, one after a denial, one by
    someone not enrolled — and the refusal is raised here, so the command exits
    non-zero saying why, as it does on the vault host.
    """
    from strongroom.access.approvals import approve, deny

    with client() as c:
        me = _me(c)
        who = c.get("/v1/whoami")["name"]
        req = c.get(f"/v1/access/requests/{request_id}")
        digest, env = req["digest"], req["envelope"]
        if approve_it:
            c.post(f"/v1/access/requests/{digest}/approvals",
                   {"envelope": approve(me.private_key, who, env, now=time.time(),
                                        ttl_s=ttl_s)})
            _out.print(f"{who} approved request {digest[:16]}")
            _try_grant(c, digest)
        else:
            c.post(f"/v1/access/requests/{digest}/denials",
                   {"envelope": deny(me.private_key, who, env, now=time.time(), reason=reason)})
            _out.print(f"{who} denied request {digest[:16]}: {reason}")


def access_grants(pending: bool, as_json: bool = False) -> None:
    """Grants that verify now, or open requests, from the server (rendered as locally)."""
    from strongroom.cli import access_render

    with client() as c:
        grants = c.get("/v1/access/grants")
        if pending:
            granted = {(g["holder"], g["resource"], g["action"]) for g in grants}
            access_render.requests(
                [r for r in c.get("/v1/access/requests") if not r["denied"]
                 and (r["requester"], r["resource"], r["action"]) not in granted], as_json)
            return
    access_render.grants(grants, as_json)


# -- audit and alerts ----------------------------------------------------------------------


def audit_tail(n: int, as_json: bool = False) -> None:
    """The newest entries, as recorded (the same fields and bytes as on the vault host)."""
    from strongroom.cli import render

    with client() as c:
        rows = c.get("/v1/audit/tail", params={"n": min(n, 1000)})
    render.audit_entries([render.audit_entry(e) for e in rows], as_json)


def audit_checkpoint() -> None:
    """The server signs a checkpoint at the current size; print it."""
    import typer

    with client() as c:
        typer.echo(c.post("/v1/audit/checkpoint")["checkpoint"] or "", nl=False)


def alerts_ls(all_: bool, limit: int, as_json: bool) -> None:
    """Alerts from the server."""
    with client() as c:
        rows = c.get("/v1/alerts", params={"unacked": str(not all_).lower(),
                                           "limit": min(limit, 1000)})
    from strongroom.cli import render

    render.alerts(rows, as_json)


def alerts_ack(alert_id: int, note: str) -> None:
    """Acknowledge an alert on the server (as the signing identity)."""
    with client() as c:
        a = c.post(f"/v1/alerts/{alert_id}/ack", {"note": note})
    _out.print(f"alert #{a['id']} acknowledged by {a['acked_by']}", markup=False)


# -- trust (pins of servers' manifest keys) -----------------------------------------------------


def trust_ls(as_json: bool) -> None:
    """``strongroom trust ls``: the servers whose manifest key this machine pinned."""
    from strongroom.crypto.dsse import key_id
    from strongroom.server.client import KnownServers, _decode_key

    known = KnownServers()
    pins = [{"url": url, "key": key, "key_id": key_id(_decode_key(key, url))}
            for url, key in known.pins()]
    if as_json:
        print(json.dumps(pins))
        return
    if not pins:
        _out.print(f"no server keys are pinned ({known.path})")
        return
    table = Table("server", "manifest key id", "key (base64)", title=str(known.path))
    for p in pins:
        table.add_row(p["url"], p["key_id"], p["key"])
    _out.print(table)


def trust_set(url: str, key: str | None) -> None:
    """``strongroom trust set|rm``: pin ``key`` for ``url`` in place of what was pinned, or forget it."""
    from strongroom.server.client import KnownServers, _decode_key

    known = KnownServers()
    url = url.rstrip("/")
    if key is None:
        if not known.replace(url, None):
            raise InvalidInput(f"no key is pinned for {url}", obj=str(known.path),
                               remedy="`strongroom trust ls` lists the pinned servers")
        _out.print(f"forgot {url}: its key is pinned again, with a notice, on next use")
        return
    canonical = base64.b64encode(_decode_key(key, f"{url} manifest key").public_bytes_raw())
    had = known.replace(url, canonical.decode())
    _out.print(f"{'replaced' if had else 'pinned'} {url}'s manifest key in {known.path}")

"""Seal state and identity routes (``/v1/sys/*``, ``/v1/whoami``), tag ``sys``.

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. Seal status and share submission need no signature (a share is its own
credential); sealing needs a pinned security officer and forgets cached principals.
"""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from strongroom.errors import AccessDenied, InvalidInput, StrongroomError
from strongroom.server import models as M
from strongroom.server.api_version import API_MINOR, API_VERSION
from strongroom.server.auth import PrincipalKeys, caller_of
from strongroom.server.context import ServerContext

__all__ = ["API_VERSION", "build_probes", "build_router"]


def _health(ctx: ServerContext) -> JSONResponse:
    """Initialised, sealed, standby, version and host; the status code says which."""
    from strongroom import __version__

    try:
        st = ctx.keys.status()
    except StrongroomError:  # the key agent is gone: nothing can be released
        initialized, sealed = True, True
    else:
        initialized, sealed = st.initialized, st.sealed
    code = 501 if not initialized else 503 if sealed else 200
    return JSONResponse({"initialized": initialized, "sealed": sealed, "standby": False,
                         "version": __version__, "host": ctx.settings.host_id,
                         "server_time_utc": int(time.time())}, status_code=code)


def build_probes(ctx: ServerContext) -> APIRouter:
    """``/livez`` (the process answers) and ``/readyz`` (unsealed: it can release keys)."""
    r = APIRouter(tags=["sys"])

    @r.get("/livez")
    def livez() -> JSONResponse:
        """200 while the process answers."""
        return JSONResponse({"status": "ok"})

    @r.get("/readyz")
    def readyz() -> JSONResponse:
        """200 when the gate can release keys; 503 (sealed) or 501 (not initialised) else."""
        return _health(ctx)

    return r


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``sys`` routes over ``ctx``; ``keys`` is forgotten when the vault is sealed."""
    r = APIRouter(prefix="/v1", tags=["sys"])

    @r.get("/sys/health")
    def health() -> JSONResponse:
        """Vault-style health (no signature): 200 unsealed, 503 sealed, 501 not initialised."""
        return _health(ctx)

    @r.get("/sys/version", response_model=M.VersionOut)
    def version() -> M.VersionOut:
        """The server's version and API version, so clients refuse a major skew and warn on a
        minor one (no signature needed; :mod:`strongroom.server.api_version`)."""
        from strongroom import __version__

        return M.VersionOut(version=__version__, api=API_VERSION, api_minor=API_MINOR)

    @r.get("/sys/seal-status", response_model=M.SealStatusOut)
    def seal_status() -> M.SealStatusOut:
        """Initialised, sealed, threshold and unseal progress (no signature needed)."""
        return M.SealStatusOut(**ctx.keys.status().to_dict())

    @r.post("/sys/unseal", response_model=M.SealStatusOut)
    def unseal(body: M.UnsealIn) -> M.SealStatusOut:
        """Submit one custodian's share, bound to the ceremony nonce (the share is the credential)."""
        try:
            submission = base64.b64decode(body.submission, validate=True)
        except ValueError:
            raise InvalidInput("the submission is not base64", obj="submission") from None
        submit = getattr(ctx.keys, "submit_share", None)
        if submit is None:
            raise InvalidInput("this key service takes no shares", obj="keyring")
        return M.SealStatusOut(**submit(submission).to_dict())

    @r.post("/sys/seal", response_model=M.SealStatusOut)
    def seal(request: Request, all_hosts: bool = Query(False, alias="all")
             ) -> M.SealStatusOut:
        """Wipe key material from memory (security officers only).

        ``?all=true`` first writes a seal order (``keys.seal-all``) to the shared
        audit log: every host's state guard that sees it seals that host.
        """
        caller = caller_of(request)
        if not caller.officer:
            raise AccessDenied(f"{caller.name} is not a security officer", obj="keyring",
                               remedy="a pinned security officer seals the vault")
        status = ctx.seal_host(caller.name, all_hosts=all_hosts)
        keys.forget()
        return M.SealStatusOut(**status.to_dict())

    @r.get("/sys/public-keys", response_model=M.PublicKeysOut)
    def public_keys(request: Request) -> M.PublicKeysOut:
        """The vault's manifest and checkpoint public keys (compare out of band, then pin)."""
        from strongroom.crypto.dsse import key_id

        caller_of(request)
        pub = ctx.keys.public_keys()
        return M.PublicKeysOut(
            manifest=base64.b64encode(pub["manifest"]).decode(),
            manifest_key_id=key_id(Ed25519PublicKey.from_public_bytes(pub["manifest"])),
            checkpoint=base64.b64encode(pub["checkpoint"]).decode())

    @r.get("/whoami", response_model=M.WhoAmIOut)
    def whoami(request: Request) -> M.WhoAmIOut:
        """The principal the request's signature proves."""
        c = caller_of(request)
        return M.WhoAmIOut(key_id=c.key_id, name=c.name, officer=c.officer)

    return r

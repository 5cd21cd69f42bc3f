"""Weights and documents routes (``/v1/weights/*``, ``/v1/documents``), tag ``weights``.

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes: import (the upload held in RAM only, after its signed digest matched),
listing, verified manifests, and a shard's ciphertext streamed with one ``Range``
(its manifest verified once per process: the release route's
:meth:`~strongroom.server.context.ServerContext.signed_shards`).
Key release lives in :mod:`strongroom.server.routes.keys`.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from strongroom.artifacts import ArtifactRef
from strongroom.errors import ConfigError, InvalidInput, NotFound
from strongroom.server import models as M
from strongroom.server.auth import PrincipalKeys, caller_of, require_role, upload_of
from strongroom.server.context import ServerContext
from strongroom.server.errors import RangeNotSatisfiable

if TYPE_CHECKING:
    from strongroom.vault.manifest import Manifest
    from strongroom.vault.vault import Vault

__all__ = ["build_router"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_BLOB = r"^[A-Za-z0-9_-]{8,128}$"
#: Bytes read from the blob store per piece of a streamed response (a read-ahead
#: window of a full load is at most 16 MiB: two pieces, two thread hops).
_CHUNK = 8 << 20

NameParam = Annotated[str, Path(pattern=_NAME, max_length=100)]


def _manifest_out(ctx: ServerContext, vault: Vault, m: Manifest) -> M.ManifestOut:
    env = vault.manifest_envelope(m.name, m.version)
    key = base64.b64encode(ctx.keys.public_keys()["manifest"]).decode()
    return M.ManifestOut(ref=m.ref, manifest=m.to_json(), envelope=env, manifest_key=key)


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, end)`` of a single ``Range: bytes=a-b`` (or ``a-``, ``-n``); the whole blob if None."""
    if header is None:
        return 0, size
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    try:
        if unit.strip().lower() != "bytes" or not dash or "," in spec:
            raise ValueError(header)
        if first.strip() == "":
            n = int(last)
            start, end = max(size - n, 0), size
            if n <= 0:
                raise ValueError(header)
        else:
            start = int(first)
            end = size if last.strip() == "" else min(int(last) + 1, size)
    except ValueError:
        raise RangeNotSatisfiable("the Range header must be one range: bytes=START-END",
                                  obj="Range") from None
    if start < 0 or start >= size or end <= start:
        raise RangeNotSatisfiable(f"the range lies outside the blob ({size} bytes)",
                                  obj="Range")
    return start, end


def _ram_dir() -> pathlib.Path:
    """Where an upload is held while it is scanned and encrypted: RAM (tmpfs) only."""
    # A private 0700 directory with a random name is created inside it, O_EXCL.
    root = pathlib.Path(os.environ.get("STRONGROOM_UPLOAD_DIR", "/dev/shm")).resolve()  # noqa: S108
    fstype = ""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            best = ""
            for line in mounts:
                parts = line.split()
                mount = parts[1]
                if (str(root) == mount or str(root).startswith(mount.rstrip("/") + "/")) \
                        and len(mount) >= len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        fstype = ""
    if fstype not in ("tmpfs", "ramfs") or not root.is_dir():
        raise ConfigError(f"{root} is not a RAM file system: plaintext uploads are never "
                          "written to disk", obj="STRONGROOM_UPLOAD_DIR",
                          remedy="set STRONGROOM_UPLOAD_DIR to a tmpfs directory, or import "
                          "on the server host with `strongroom weights import`")
    return root


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``weights`` and ``documents`` routes over ``ctx``."""
    r = APIRouter(prefix="/v1", tags=["weights"])
    shards = ctx.signed_shards()

    @r.post("/weights/{name}/import", response_model=M.ManifestOut, status_code=201,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
    async def import_weights(
        request: Request, name: NameParam,
        compartment: Annotated[list[str] | None, Query(max_length=16)] = None,
        new_version: bool = False,
    ) -> M.ManifestOut:
        """Import one .safetensors file streamed as the body (importers, security officers).

        The body is held in RAM (tmpfs) while it is scanned and encrypted, and
        only after its SHA-256 matched the signed Content-Digest.
        """
        import secrets
        import shutil

        from starlette.concurrency import run_in_threadpool

        caller = await run_in_threadpool(require_role, request, keys, "importers")
        upload = upload_of(request)
        work = _ram_dir() / f"strongroom-upload-{secrets.token_hex(8)}"
        work.mkdir(mode=0o700)
        try:
            path = work / f"{name}.safetensors"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
            upload.check()
            if upload.size == 0:
                raise InvalidInput("the upload is empty", obj=name)
            vault = ctx.vault(actor=caller.name)
            m = await run_in_threadpool(vault.import_weights, path, name=name,
                                        compartments=compartment or [],
                                        new_version=new_version)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return _manifest_out(ctx, vault, m)

    @r.get("/weights", response_model=list[M.ArtifactOut])
    def list_weights(request: Request) -> list[M.ArtifactOut]:
        """Every artifact version."""
        caller = caller_of(request)
        vault = ctx.vault(actor=caller.name)
        return [M.ArtifactOut(name=a.name, version=a.version, kind=a.kind, files=a.files,
                              total_size=a.total_size, created=a.created.isoformat())
                for a in vault.list_artifacts()]

    @r.get("/weights/{name}/manifest", response_model=M.ManifestOut)
    def manifest(request: Request, name: NameParam,
                 version: Annotated[int | None, Query(ge=1, le=1 << 31)] = None) -> M.ManifestOut:
        """The verified manifest of ``name`` (newest version unless ``version``)."""
        caller = caller_of(request)
        vault = ctx.vault(actor=caller.name)
        return _manifest_out(ctx, vault, vault.manifest(name, version))

    @r.get("/weights/{name}/versions/{version}/blobs/{blob}",
           response_class=StreamingResponse,
           responses={200: {"content": {"application/octet-stream": {}},
                            "description": "the blob's age ciphertext"},
                      206: {"content": {"application/octet-stream": {}},
                            "description": "the requested byte range (Range: bytes=a-b)"},
                      416: {"model": M.ErrorOut, "description": "range not satisfiable"}})
    def blob(request: Request, name: NameParam, version: Annotated[int, Path(ge=1, le=1 << 31)],
             blob: Annotated[str, Path(pattern=_BLOB)]) -> StreamingResponse:
        """A shard's ciphertext, streamed (useless without a key release); one ``Range`` allowed."""
        caller = caller_of(request)
        ctx.vault(actor=caller.name)  # Sealed while the vault is sealed, as every vault view
        m = shards.manifest(ArtifactRef(name, version))  # verified once, then cached
        if not any(f.blob == blob for f in m.files):
            raise NotFound("the blob is not part of this artifact", obj=f"{m.ref}/{blob}")
        source = ctx.blobs.open(blob)
        size = len(source)
        try:
            start, end = _byte_range(request.headers.get("range"), size)
        except BaseException:
            source.close()
            raise

        def chunks() -> Iterator[bytes]:
            try:
                for off in range(start, end, _CHUNK):
                    yield bytes(source.read_at(off, min(_CHUNK, end - off)))
            finally:
                source.close()

        headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
        if request.headers.get("range") is None:
            return StreamingResponse(chunks(), media_type="application/octet-stream",
                                     headers=headers)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(chunks(), status_code=206,
                                 media_type="application/octet-stream", headers=headers)

    @r.get("/documents", response_model=list[M.DocumentOut], tags=["documents"])
    def documents(request: Request) -> list[dict[str, Any]]:
        """Every secret document version (manifests verified; content needs a Grant)."""
        from strongroom.runtime.listings import document_rows

        caller = caller_of(request)
        return document_rows(ctx.vault(actor=caller.name))

    return r

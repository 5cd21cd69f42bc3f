"""Key release (``POST /v1/keys/release``), tag ``weights``: the hot path.

``build_router(ctx)`` returns the router and the same route as a
:class:`~strongroom.server.auth.DirectRoute` for the signing middleware, which
answers it without FastAPI's thread hops; the FastAPI route stays the schema and
the fallback. Verified manifests and blob headers are cached (both are immutable
once recorded); the release gate itself decides and audits every release.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any

from fastapi import APIRouter, Request

from strongroom.errors import IntegrityError, InvalidInput, NotFound
from strongroom.release.request import ReleaseRequest
from strongroom.server import models as M
from strongroom.server.auth import DirectRoute, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.signatures import Caller

__all__ = ["build_router"]


class _ReleaseCache:
    """Verified manifests and blob headers: both are immutable once recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._headers: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._manifests: dict[tuple[str, int], Any] = {}

    def cached(self, name: str, version: int, shard: str) -> tuple[Any, Any, tuple[Any, ...]] | None:
        """The manifest, shard entry and header stanzas when all are cached (no I/O), else None."""
        with self._lock:
            m = self._manifests.get((name, version))
            entry = None if m is None else next((f for f in m.files if f.path == shard), None)
            stanzas = None if entry is None else self._headers.get(
                (entry.blob, entry.header_sha256))
        return None if stanzas is None else (m, entry, stanzas)

    def manifest(self, ctx: ServerContext, name: str, version: int) -> Any:
        """The verified manifest of ``name@version`` (a version never changes once recorded)."""
        with self._lock:
            hit = self._manifests.get((name, version))
        if hit is not None:
            return hit
        m = ctx.vault().manifest(name, version)
        with self._lock:
            if len(self._manifests) > 10_000:
                self._manifests.clear()
            self._manifests[(name, version)] = m
        return m

    def stanzas(self, ctx: ServerContext, blob: str, header_sha256: str, obj: str) -> tuple[
            Any, ...]:
        from strongroom.crypto import age

        key = (blob, header_sha256)
        with self._lock:
            hit = self._headers.get(key)
        if hit is not None:
            return hit
        source = ctx.blobs.open(blob)
        try:
            header, head = age.read_header(source)
        finally:
            source.close()
        if hashlib.sha256(bytes(head)[: header.size]).hexdigest() != header_sha256:
            raise IntegrityError("blob header does not match the signed manifest "
                                 "(blob swapped or altered)", obj=obj)
        stanzas = tuple(header.stanzas)
        with self._lock:
            if len(self._headers) > 100_000:
                self._headers.clear()
            self._headers[key] = stanzas
        return stanzas


def build_router(ctx: ServerContext) -> tuple[APIRouter, dict[tuple[str, str], DirectRoute]]:
    """Key release: the hot path, so its router is matched first and it avoids thread hops.

    The route is ``async``: FastAPI would otherwise run a sync endpoint and then its
    response serialisation in two thread-pool hops. With the manifest and the blob
    header cached and the keys in the local agent, a release awaits the agent on the
    event loop (no thread at all); otherwise the blocking part (a cache miss, the
    in-process gate) runs in one hop.
    """
    r = APIRouter(prefix="/v1", tags=["weights"])
    cache = _ReleaseCache()

    def version_of(body: M.KeyReleaseIn) -> tuple[str, int]:
        name, _, ver = body.artifact.partition("@")
        if not ver.isdigit():
            raise InvalidInput("name the artifact as name@version", obj=body.artifact)
        return name, int(ver)

    def request_for(caller: Caller, body: M.KeyReleaseIn, host: str | None, m: Any,
                    entry: Any, stanzas: tuple[Any, ...]) -> ReleaseRequest:
        return ReleaseRequest(principal=caller.name, principal_key=caller.public_bytes,
                              artifact=m.ref, shard=entry.path, blob_id=entry.blob,
                              nbytes=entry.size, purpose=body.purpose, evidence=body.evidence,
                              stanzas=stanzas, host=host)

    def answer(m: Any, entry: Any, key: bytearray) -> M.KeyReleaseOut:
        try:
            text = base64.b64encode(bytes(key)).decode()
        finally:
            key[:] = bytes(len(key))
        return M.KeyReleaseOut(artifact=m.ref, shard=entry.path, blob=entry.blob, file_key=text)

    def release_key(caller: Caller, body: M.KeyReleaseIn, host: str | None) -> M.KeyReleaseOut:
        name, version = version_of(body)
        m = cache.manifest(ctx, name, version)
        entry = next((f for f in m.files if f.path == body.shard), None)
        if entry is None:
            raise NotFound("no such shard in the artifact", obj=f"{m.ref}/{body.shard}")
        stanzas = cache.stanzas(ctx, entry.blob, entry.header_sha256, f"{m.ref}/{entry.path}")
        key = ctx.keys.release(request_for(caller, body, host, m, entry, stanzas))
        return answer(m, entry, key)

    async def release_out(caller: Caller, body: M.KeyReleaseIn, host: str | None
                          ) -> M.KeyReleaseOut:
        from starlette.concurrency import run_in_threadpool

        from strongroom.errors import AgentUnavailable

        release_async = getattr(ctx.keys, "release_async", None)
        hit = cache.cached(*version_of(body), body.shard) if release_async else None
        if release_async is not None and hit is not None:
            m, entry, stanzas = hit
            try:
                key = await release_async(request_for(caller, body, host, m, entry, stanzas))
                return answer(m, entry, key)
            except AgentUnavailable:
                pass  # the blocking client starts the agent (sealed) and reports it
        out: M.KeyReleaseOut = await run_in_threadpool(release_key, caller, body, host)
        return out

    @r.post("/keys/release", response_model=M.KeyReleaseOut)
    async def release(request: Request, body: M.KeyReleaseIn) -> M.KeyReleaseOut:
        """Run the release gate as the caller with the caller's evidence; returns the file key."""
        caller = caller_of(request)
        host = request.client.host if request.client is not None else None
        return await release_out(caller, body, host)

    async def release_direct(scope: Any, caller: Caller, document: object
                             ) -> tuple[int, bytes] | None:
        """The same route served by the signing middleware (see auth.DirectRoute)."""
        from pydantic import ValidationError

        try:
            body = M.KeyReleaseIn.model_validate(document)
        except ValidationError:
            return None  # FastAPI's route answers with its standard 422
        client = scope.get("client")
        host = str(client[0]) if client else None
        out = await release_out(caller, body, host)
        return 200, out.model_dump_json().encode()

    return r, {("POST", "/v1/keys/release"): release_direct}

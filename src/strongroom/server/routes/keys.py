"""Key release (``POST /v1/keys/release``), tag ``weights``: the hot path.

``build_router(ctx)`` returns the router and the same route as a
:class:`~strongroom.server.auth.DirectRoute` for the signing middleware, which
answers it without FastAPI's thread hops; the FastAPI route stays the schema and
the fallback. The shard is found as the vault's release path finds it: verified
manifests and pinned header stanzas come from a
:class:`~strongroom.vault.shards.SignedShards` (both immutable once recorded, so
cached; ``ctx.signed_shards()``, shared with the blob route), and the request is
built by :func:`strongroom.release.request.build_request`; the release gate
itself decides and audits every release.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request

from strongroom.artifacts import ArtifactRef
from strongroom.crypto.age import Stanza
from strongroom.errors import InvalidInput, NotFound
from strongroom.release.request import ReleaseRequest, build_request
from strongroom.server import models as M
from strongroom.server.auth import DirectRoute, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.signatures import Caller
from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["build_router"]


def build_router(ctx: ServerContext) -> tuple[APIRouter, dict[tuple[str, str], DirectRoute]]:
    """Key release: the hot path, so its router is matched first and it avoids thread hops.

    The route is ``async``: FastAPI would otherwise run a sync endpoint and then its
    response serialisation in two thread-pool hops. With the manifest and the blob
    header cached and the keys in the local agent, a release awaits the agent on the
    event loop (no thread at all); otherwise the blocking part (a cache miss, the
    in-process gate) runs in one hop.
    """
    r = APIRouter(prefix="/v1", tags=["weights"])
    shards = ctx.signed_shards()  # shared with the blob route

    def ref_of(body: M.KeyReleaseIn) -> ArtifactRef:
        ref = ArtifactRef.parse(body.artifact)
        if ref.version is None:
            raise InvalidInput("name the artifact as name@version", obj=body.artifact)
        return ref

    def request_for(caller: Caller, body: M.KeyReleaseIn, host: str | None, m: Manifest,
                    entry: FileEntry, stanzas: tuple[Stanza, ...]) -> ReleaseRequest:
        return build_request(m.shard(entry), principal=caller.name,
                             principal_key=caller.public_bytes, purpose=body.purpose,
                             evidence=body.evidence, stanzas=stanzas, host=host)

    def answer(m: Manifest, entry: FileEntry, key: bytearray) -> M.KeyReleaseOut:
        try:
            text = base64.b64encode(bytes(key)).decode()
        finally:
            key[:] = bytes(len(key))
        return M.KeyReleaseOut(artifact=m.ref, shard=entry.path, blob=entry.blob, file_key=text)

    def release_key(caller: Caller, body: M.KeyReleaseIn, host: str | None) -> M.KeyReleaseOut:
        m = shards.manifest(ref_of(body))
        entry = next((f for f in m.files if f.path == body.shard), None)
        if entry is None:
            raise NotFound("no such shard in the artifact", obj=f"{m.ref}/{body.shard}",
                           remedy="name a shard the artifact's manifest lists")
        stanzas = shards.stanzas(ctx.blobs, entry, f"{m.ref}/{entry.path}")
        key = ctx.keys.release(request_for(caller, body, host, m, entry, stanzas))
        return answer(m, entry, key)

    async def release_out(caller: Caller, body: M.KeyReleaseIn, host: str | None
                          ) -> M.KeyReleaseOut:
        from starlette.concurrency import run_in_threadpool

        from strongroom.errors import AgentUnavailable

        release_async = getattr(ctx.keys, "release_async", None)
        hit = None
        if release_async is not None:
            try:
                hit = shards.cached(ref_of(body), body.shard)
            except InvalidInput:
                hit = None  # the blocking path reports it
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

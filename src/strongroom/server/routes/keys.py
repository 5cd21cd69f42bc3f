"""Key release (``POST /v1/keys/release``), tag ``weights``: the hot path.

Enclaves take the attested path instead: ``POST /v1/keys/attest/nonce`` for a
gate nonce, then ``POST /v1/keys/release-attested`` with the evidence, whose
answer is the file key as an age stanza to the enclave's ephemeral key
(docs/attestation.md).

``build_router(ctx)`` returns the router and the same route as a
:class:`~strongroom.server.auth.DirectRoute` for the signing middleware, which
answers it without FastAPI's thread hops; the FastAPI route stays the schema and
the fallback. The shard is found as the vault's release path finds it: verified
manifests and pinned header stanzas come from a
:class:`~strongroom.vault.shards.SignedShards` (both immutable once recorded, so
cached; ``ctx.signed_shards()``, shared with the blob route), and the request is
built by :func:`strongroom.release.request.build_request`; the release gate
itself decides and audits every release. On a threshold vault
(``STRONGROOM_FILE_KEYS=threshold``) a blob wrapped to the key servers' group
key is released by k of them instead
(:class:`~strongroom.server.threshold_release.ThresholdReleases`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from strongroom.artifacts import ArtifactRef
from strongroom.crypto.age import Stanza
from strongroom.errors import AgentUnavailable, AttestationRefused, InvalidInput, NotFound
from strongroom.release.request import ReleaseRequest, Shard, build_request
from strongroom.server import models as M
from strongroom.server.auth import DirectRoute, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.signatures import Caller
from strongroom.server.threshold_release import ThresholdReleases
from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["build_router"]

#: Entries a route's caches of derived values hold before they start again.
_CACHED = 1024
#: How a release's JSON answer with an empty file key ends (the key goes before ``"}``).
_LAST = b'"file_key":""}'


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
    threshold = ThresholdReleases(ctx)  # STRONGROOM_FILE_KEYS=threshold: through the key servers

    #: Parsed name@version references, and each released shard's Shard and the bytes of
    #: its answer around the key (all derived from immutable values; bounded).
    refs: dict[str, ArtifactRef] = {}
    framed: dict[tuple[str, str, str, int], tuple[Shard, bytes, bytes]] = {}

    def ref_of(body: M.KeyReleaseIn) -> ArtifactRef:
        ref = refs.get(body.artifact)
        if ref is not None:
            return ref
        ref = ArtifactRef.parse(body.artifact)
        if ref.version is None:
            raise InvalidInput("name the artifact as name@version", obj=body.artifact)
        if len(refs) >= _CACHED:
            refs.clear()
        refs[body.artifact] = ref
        return ref

    def frame_of(m: Manifest, entry: FileEntry) -> tuple[Shard, bytes, bytes]:
        """The shard a release names, and its JSON answer before and after the file key."""
        key = (m.ref, entry.path, entry.blob, entry.size)
        hit = framed.get(key)
        if hit is None:
            text = M.KeyReleaseOut(artifact=m.ref, shard=entry.path, blob=entry.blob,
                                   file_key="").model_dump_json().encode()
            if not text.endswith(_LAST):  # the model's last field: the key goes between quotes
                raise AssertionError("KeyReleaseOut no longer ends with file_key")
            before, after = text[:-2], text[-2:]
            if len(framed) >= _CACHED:
                framed.clear()
            hit = framed[key] = (m.shard(entry), before, after)
        return hit

    def request_for(caller: Caller, body: M.KeyReleaseIn, host: str | None, m: Manifest,
                    entry: FileEntry, stanzas: tuple[Stanza, ...]) -> ReleaseRequest:
        return build_request(frame_of(m, entry)[0], principal=caller.name,
                             principal_key=caller.public_bytes, purpose=body.purpose,
                             evidence=body.evidence, stanzas=stanzas, host=host)

    def answer(m: Manifest, entry: FileEntry, key: bytearray) -> M.KeyReleaseOut:
        try:
            text = base64.b64encode(bytes(key)).decode()
        finally:
            key[:] = bytes(len(key))
        return M.KeyReleaseOut(artifact=m.ref, shard=entry.path, blob=entry.blob, file_key=text)

    def shard_of(body: M.KeyReleaseIn) -> tuple[Manifest, FileEntry, tuple[Stanza, ...]]:
        m = shards.manifest(ref_of(body))
        entry = next((f for f in m.files if f.path == body.shard), None)
        if entry is None:
            raise NotFound("no such shard in the artifact", obj=f"{m.ref}/{body.shard}",
                           remedy="name a shard the artifact's manifest lists")
        return m, entry, shards.stanzas(ctx.blobs, entry, f"{m.ref}/{entry.path}")

    def release_key(caller: Caller, body: M.KeyReleaseIn, host: str | None) -> M.KeyReleaseOut:
        m, entry, stanzas = shard_of(body)
        request = request_for(caller, body, host, m, entry, stanzas)
        if threshold.handles(stanzas):  # wrapped to the key servers' group key: k of them release
            return answer(m, entry, threshold.release(request, caller.name))
        key = ctx.keys.release(request)
        return answer(m, entry, key)

    def answer_json(m: Manifest, entry: FileEntry, key: bytearray) -> bytes:
        """:func:`answer` as the bytes of its JSON (no model, no copy of the key but base64's)."""
        _, before, after = frame_of(m, entry)
        try:
            return before + binascii.b2a_base64(key, newline=False) + after
        finally:
            key[:] = bytes(len(key))

    async def release_out(caller: Caller, body: M.KeyReleaseIn, host: str | None
                          ) -> M.KeyReleaseOut:
        out = await release_raw(caller, body, host)
        return out if isinstance(out, M.KeyReleaseOut) else M.KeyReleaseOut.model_validate_json(out)

    async def release_raw(caller: Caller, body: M.KeyReleaseIn, host: str | None
                          ) -> M.KeyReleaseOut | bytes:
        """The answer: JSON bytes on the event-loop path, else the model."""
        release_async = getattr(ctx.keys, "release_async", None)
        hit = None
        if release_async is not None:
            try:
                hit = shards.cached(ref_of(body), body.shard)
            except InvalidInput:
                hit = None  # the blocking path reports it
        if release_async is not None and hit is not None and not threshold.handles(hit[2]):
            m, entry, stanzas = hit
            try:
                key = await release_async(request_for(caller, body, host, m, entry, stanzas))
                return answer_json(m, entry, key)
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
        try:
            body = M.KeyReleaseIn.model_validate(document)
        except ValidationError:
            return None  # FastAPI's route answers with its standard 422
        client = scope.get("client")
        host = str(client[0]) if client else None
        out = await release_raw(caller, body, host)
        return 200, out if isinstance(out, bytes) else out.model_dump_json().encode()

    def attested_keys() -> Any:
        keys = ctx.keys
        if not callable(getattr(keys, "release_attested", None)):
            raise AttestationRefused("evidence", "this server's key service releases no keys "
                                     "into enclaves", obj="release gate",
                                     remedy="ask a strongroom serve whose gate verifies evidence")
        return keys

    def release_attested(caller: Caller, body: M.AttestedReleaseIn, host: str | None
                         ) -> M.AttestedReleaseOut:
        from strongroom.runtime.attestation import claim_from_json

        keys = attested_keys()
        claim = claim_from_json({"recipient": body.recipient, "platform": body.platform,
                                 "evidence": body.report, "collateral": body.collateral,
                                 "nonce": body.nonce})
        m, entry, stanzas = shard_of(body)
        stanza: Stanza = keys.release_attested(
            request_for(caller, body, host, m, entry, stanzas), claim)
        return M.AttestedReleaseOut(artifact=m.ref, shard=entry.path, blob=entry.blob,
                                    stanza_type=stanza.type, stanza_args=list(stanza.args),
                                    stanza_body=base64.b64encode(stanza.body).decode())

    @r.post("/keys/attest/nonce", response_model=M.AttestNonceOut)
    async def attest_nonce(request: Request) -> M.AttestNonceOut:
        """A single-use nonce from the gate for one piece of enclave evidence."""
        caller_of(request)  # signed callers only
        nonce: bytes = await run_in_threadpool(lambda: attested_keys().attest_nonce())
        return M.AttestNonceOut(nonce=base64.b64encode(nonce).decode())

    @r.post("/keys/release-attested", response_model=M.AttestedReleaseOut)
    async def release_into_enclave(request: Request, body: M.AttestedReleaseIn
                                   ) -> M.AttestedReleaseOut:
        """Run the gate for an enclave: the file key comes back wrapped to its ephemeral key."""
        caller = caller_of(request)
        host = request.client.host if request.client is not None else None
        out: M.AttestedReleaseOut = await run_in_threadpool(release_attested, caller, body, host)
        return out

    return r, {("POST", "/v1/keys/release"): release_direct}

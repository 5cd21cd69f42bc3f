"""Key release (``POST /v1/keys/release``), tag ``weights``: the hot path.

A whole-model load asks for several shards at once: ``POST /v1/keys/release-many``
with one load evidence (:func:`strongroom.access.evidence.make_load_evidence`)
naming them; each shard is a release request of its own through the same gate
(which decides, charges and audits each), and the answer lists each shard's key
or its own refusal (the API's error body), in the order asked. An unknown shard
refuses the whole request (404) before anything is released.

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

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from strongroom.artifacts import ArtifactRef
from strongroom.crypto.age import Stanza
from strongroom.errors import (
    AgentUnavailable,
    AttestationRefused,
    InvalidInput,
    NotFound,
    StrongroomError,
)
from strongroom.release.request import ReleaseRequest, Shard, build_request
from strongroom.server import models as M
from strongroom.server.auth import DirectRoute, caller_of
from strongroom.server.context import ServerContext
from strongroom.server.errors import error_body
from strongroom.server.signatures import Caller
from strongroom.server.threshold_release import ThresholdReleases
from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["build_router"]

#: Entries a route's caches of derived values hold before they start again.
_CACHED = 1024
#: How a release's JSON answer with an empty file key ends (the key goes before ``"}``).
_LAST = b'"file_key":""}'
_In = TypeVar("_In", bound=BaseModel)
#: A shard of a release-many: its manifest entry and its blob's header stanzas.
_Located = tuple[FileEntry, tuple[Stanza, ...]]
#: A shard's outcome: its file key (zeroed once answered) or its own refusal.
_Result = bytearray | StrongroomError


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _zero(results: list[Any]) -> None:
    """Zero every key in ``results`` (refusals and gaps are left as they are)."""
    for out in results:
        if isinstance(out, bytearray):
            out[:] = bytes(len(out))


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

    def ref_of(body: M.KeyReleaseIn | M.KeyReleaseManyIn) -> ArtifactRef:
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

    def request_for(caller: Caller, body: M.KeyReleaseIn | M.KeyReleaseManyIn, host: str | None,
                    m: Manifest, entry: FileEntry, stanzas: tuple[Stanza, ...]
                    ) -> ReleaseRequest:
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

    def direct(model: type[_In], answer: Callable[[Caller, _In, str | None],
                                                 Awaitable[BaseModel | bytes]]) -> DirectRoute:
        """A route served by the signing middleware (see auth.DirectRoute): ``answer``
        for a body that validates as ``model``; FastAPI's route answers the others."""
        async def route(scope: Any, caller: Caller, document: object
                        ) -> tuple[int, bytes] | None:
            try:
                body = model.model_validate(document)
            except ValidationError:
                return None  # FastAPI's route answers with its standard 422
            client = scope.get("client")
            host = str(client[0]) if client else None
            out = await answer(caller, body, host)
            return 200, out if isinstance(out, bytes) else out.model_dump_json().encode()

        return route

    # -- several shards under one load evidence: POST /v1/keys/release-many ----------------

    def shards_of(body: M.KeyReleaseManyIn) -> tuple[Manifest, list[_Located]]:
        """Every named shard and its stanzas, all found before anything is released."""
        m = shards.manifest(ref_of(body))
        by_path = {f.path: f for f in m.files}
        missing = next((p for p in body.shards if p not in by_path), None)
        if missing is not None:
            raise NotFound("no such shard in the artifact", obj=f"{m.ref}/{missing}",
                           remedy="name only shards the artifact's manifest lists")
        entries = [by_path[p] for p in body.shards]
        return m, [(e, shards.stanzas(ctx.blobs, e, f"{m.ref}/{e.path}")) for e in entries]

    def cached_many(body: M.KeyReleaseManyIn) -> tuple[Manifest, list[_Located]] | None:
        """:func:`shards_of` when every part of it is cached (no I/O), else None."""
        try:
            ref = ref_of(body)
        except InvalidInput:
            return None  # the blocking path reports it
        m, located = None, []
        for path in body.shards:
            hit = shards.cached(ref, path)
            if hit is None or (m is not None and hit[0] is not m):
                return None
            m = hit[0]
            located.append((hit[1], hit[2]))
        return None if m is None else (m, located)

    def release_located(caller: Caller, body: M.KeyReleaseManyIn, host: str | None,
                        m: Manifest, located: list[_Located]) -> list[_Result]:
        """Each shard through the gate (one ``release_many`` where the key service has it);
        each its key or its own refusal. Keys already out are zeroed if this fails."""
        requests = [request_for(caller, body, host, m, e, st) for e, st in located]
        results: list[_Result | None] = [None] * len(requests)
        try:
            plain = []
            for i, (_, stanzas) in enumerate(located):
                if not threshold.handles(stanzas):
                    plain.append(i)
                    continue
                try:  # wrapped to the key servers' group key: k of them release
                    results[i] = threshold.release(requests[i], caller.name)
                except StrongroomError as exc:
                    results[i] = exc
            many = getattr(ctx.keys, "release_many", None)
            if plain and callable(many):
                for i, out in zip(plain, many([requests[i] for i in plain]), strict=True):
                    results[i] = out
            for i in plain:
                if results[i] is None:  # no release_many: one at a time
                    try:
                        results[i] = ctx.keys.release(requests[i])
                    except StrongroomError as exc:
                        results[i] = exc
        except BaseException:
            _zero(results)
            raise
        return [r for r in results if r is not None]

    def release_many_blocking(caller: Caller, body: M.KeyReleaseManyIn, host: str | None
                              ) -> bytes:
        m, located = shards_of(body)
        return many_json(m, located, release_located(caller, body, host, m, located))

    async def release_many_raw(caller: Caller, body: M.KeyReleaseManyIn, host: str | None
                               ) -> bytes:
        """The answer's JSON: the agent's releases awaited together on the event loop when the
        manifest and headers are cached (the agent client sends them as one batch), else
        one thread hop for the lot."""
        release_async = getattr(ctx.keys, "release_async", None)
        hit = cached_many(body) if release_async is not None else None
        if release_async is None or hit is None or any(threshold.handles(st)
                                                       for _, st in hit[1]):
            answer: bytes = await run_in_threadpool(release_many_blocking, caller, body, host)
            return answer
        m, located = hit
        requests = [request_for(caller, body, host, m, e, st) for e, st in located]
        outs = await asyncio.gather(*(release_async(r) for r in requests),
                                    return_exceptions=True)
        results: list[_Result] = []
        unanswered: list[int] = []
        failure: BaseException | None = None
        for i, got in enumerate(outs):
            if isinstance(got, AgentUnavailable):  # no agent answered: the blocking path starts one
                unanswered.append(i)
                results.append(got)
            elif isinstance(got, (bytearray, StrongroomError)):
                results.append(got)
            else:
                failure = failure or got
                results.append(AgentUnavailable("no answer", obj="agent"))
        if failure is not None:
            _zero(results)
            raise failure
        if unanswered:
            try:
                again = await run_in_threadpool(release_located, caller, body, host, m,
                                                [located[i] for i in unanswered])
            except BaseException:
                _zero(results)
                raise
            for i, result in zip(unanswered, again, strict=True):
                results[i] = result
        return many_json(m, located, results)

    def many_json(m: Manifest, located: list[_Located], results: list[_Result]) -> bytes:
        """The answer's JSON; every key is zeroed once encoded (or if encoding fails)."""
        parts = [b'{"artifact":', _json(m.ref), b',"keys":[']
        try:
            for i, ((entry, _), out) in enumerate(zip(located, results, strict=True)):
                parts += [b',{"shard":' if i else b'{"shard":', _json(entry.path),
                          b',"blob":', _json(entry.blob)]
                if isinstance(out, bytearray):
                    parts += [b',"file_key":"', binascii.b2a_base64(out, newline=False), b'"}']
                    out[:] = bytes(len(out))
                else:
                    parts += [b',"error":', _json(error_body(out)), b"}"]
        finally:
            _zero(results)
        parts.append(b"]}")
        return b"".join(parts)

    @r.post("/keys/release-many", response_model=M.KeyReleaseManyOut)
    async def release_many(request: Request, body: M.KeyReleaseManyIn) -> Response:
        """Release several shards of one artifact under one load evidence: each shard's file
        key, or that shard's refusal (the gate decides, charges and audits each shard)."""
        caller = caller_of(request)
        host = request.client.host if request.client is not None else None
        return Response(await release_many_raw(caller, body, host),
                        media_type="application/json")

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

    return r, {("POST", "/v1/keys/release"): direct(M.KeyReleaseIn, release_raw),
               ("POST", "/v1/keys/release-many"): direct(M.KeyReleaseManyIn, release_many_raw)}

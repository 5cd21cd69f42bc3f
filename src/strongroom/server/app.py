"""The HTTP API: ``create_app(ctx)`` builds the FastAPI app ``strongroom serve`` runs.

Every route under ``/v1/`` except seal status and share submission needs an
RFC 9421 signature (:mod:`strongroom.server.signatures`, checked by
:class:`~strongroom.server.auth.SignedRequestMiddleware`). Statements that
carry authority (requests, approvals, grants, enrollments) are DSSE envelopes
signed by the caller's own key, verified here exactly as the CLI verifies them
and checked again by the release gate; the server adds no authority of its own.
Errors are ``{"error", "object", "remedy", "type"}`` with the status
:func:`strongroom.server.errors.status_for` picks. Key releases are audited by
the gate; their responses (file keys) are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from strongroom.access.restrictions import journal_details
from strongroom.errors import (
    AccessDenied,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NotFound,
    StrongroomError,
)
from strongroom.server import models as M
from strongroom.server.auth import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_UPLOAD,
    DirectRoute,
    PrincipalKeys,
    RefusalLog,
    SignedRequestMiddleware,
    caller_of,
    require_role,
    upload_of,
)
from strongroom.server.context import ServerContext
from strongroom.server.errors import RangeNotSatisfiable, error_body, status_for
from strongroom.server.signatures import (
    Caller,
    NonceCache,
    RequestVerifier,
    default_nonce_cache,
)

__all__ = ["create_app"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_BLOB = r"^[A-Za-z0-9_-]{8,128}$"
_DIGEST = r"^[0-9a-f]{8,64}$"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": M.ErrorOut, "description": text} for code, text in (
        (400, "invalid input"), (401, "missing, invalid, stale or replayed signature"),
        (403, "access denied"), (404, "not found"), (409, "already exists"),
        (413, "body too large"), (422, "integrity or validation failure"),
        (429, "egress budget exceeded"), (503, "sealed or storage unavailable"))}
_AUDITORS = ("auditors", "security-officers")
_CHUNK = 1 << 20

NameParam = Annotated[str, Path(pattern=_NAME, max_length=100)]


def _principal_out(kid: str, e: Any, revoked: bool) -> M.PrincipalOut:
    from strongroom.access.directory import level_name

    return M.PrincipalOut(key_id=kid, name=e.name, kind=e.kind, roles=sorted(e.roles),
                          clearance=level_name(e.clearance), compartments=sorted(e.compartments),
                          vetting=e.vetting.status, vetting_expires=e.vetting.expires,
                          employment=e.employment, serial=e.serial, revoked=revoked)


def _manifest_out(ctx: ServerContext, m: Any) -> M.ManifestOut:
    from sqlalchemy import select

    from strongroom.store.tables.vault import Artifact

    with ctx.store.session() as s:
        env = s.scalars(select(Artifact.manifest_json).where(
            Artifact.name == m.name, Artifact.version == m.version)).one()
    key = base64.b64encode(ctx.keys.public_keys()["manifest"]).decode()
    return M.ManifestOut(ref=m.ref, manifest=m.to_json(), envelope=env, manifest_key=key)


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


def create_app(ctx: ServerContext, *, nonces: NonceCache | None = None,
               max_body: int = DEFAULT_MAX_BODY, max_upload: int = DEFAULT_MAX_UPLOAD,
               principal_ttl_s: float = 1.0) -> FastAPI:
    """The API (and the console, when its package is present) over ``ctx``."""
    app = FastAPI(title="strongroom", version="1", description=__doc__ or "",
                  responses=_ERRORS)
    keys = PrincipalKeys(ctx, ttl_s=principal_ttl_s)
    verifier = RequestVerifier(
        keys, nonces if nonces is not None else default_nonce_cache(ctx.store))
    app.state.ctx = ctx
    app.state.principal_keys = keys

    @app.exception_handler(StrongroomError)
    async def strongroom_error(request: Request, exc: StrongroomError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_for(exc))

    keys_router, direct = _keys_routes(ctx)
    app.include_router(keys_router)
    app.include_router(_sys_routes(ctx, keys))
    app.include_router(_directory_routes(ctx, keys))
    app.include_router(_weights_routes(ctx, keys))
    app.include_router(_access_routes(ctx, keys))
    app.include_router(_audit_routes(ctx, keys))
    build_router = _console_builder()
    if build_router is not None:
        app.include_router(build_router(ctx))
    def append_refusal(**entry: Any) -> object:
        return ctx.audit().append(**entry)  # Sealed while sealed: not recorded

    app.add_middleware(SignedRequestMiddleware, verifier=verifier, max_body=max_body,
                       max_upload=max_upload, on_refused=RefusalLog(append_refusal),
                       direct=direct)
    return app


def _console_builder() -> Any:
    """The web console's router factory, when the console package is installed."""
    import importlib

    try:
        module = importlib.import_module("strongroom.server.console")
    except ImportError:
        return None
    return getattr(module, "build_router", None)


# -- sys -------------------------------------------------------------------------------


def _sys_routes(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["sys"])

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
    def seal(request: Request) -> M.SealStatusOut:
        """Wipe key material from memory (security officers only)."""
        caller = caller_of(request)
        if not caller.officer:
            raise AccessDenied(f"{caller.name} is not a security officer", obj="keyring",
                               remedy="a pinned security officer seals the vault")
        status = ctx.keys.seal()
        ctx.forget_sealed()
        keys.forget()
        return M.SealStatusOut(**(status or ctx.keys.status()).to_dict())

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


# -- people, compartments, statements ----------------------------------------------------------


def _directory_routes(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["directory"])

    @r.get("/people", response_model=list[M.PrincipalOut])
    def people(request: Request) -> list[M.PrincipalOut]:
        """Every enrolled principal, verified against the officers' signatures."""
        caller_of(request)
        view = ctx.directory()
        return [_principal_out(kid, e, kid in view.revoked_keys)
                for kid, e in sorted(view.principals.items(), key=lambda kv: kv[1].name)]

    @r.get("/compartments", response_model=dict[str, list[str]])
    def compartments(request: Request) -> dict[str, list[str]]:
        """Each compartment and the (unrevoked) principals in it."""
        caller_of(request)
        view = ctx.directory()
        out: dict[str, list[str]] = {}
        for kid, e in view.principals.items():
            if kid in view.revoked_keys:
                continue
            for c in e.compartments:
                out.setdefault(c, []).append(e.name)
        for lab in view.labels.values():
            for c in lab.compartments:
                out.setdefault(c, [])
        return {k: sorted(v) for k, v in sorted(out.items())}

    @r.post("/statements", response_model=M.StoredOut, status_code=201)
    def publish_statement(request: Request, body: M.StatementIn) -> M.StoredOut:
        """Publish (or cosign) an enrollment, label or revocation signed by the calling officer."""
        from strongroom.access import statements
        from strongroom.access.directory import publish

        caller = caller_of(request)
        if not caller.officer:
            raise AccessDenied(f"{caller.name} is not a security officer pinned in the keyring",
                               obj=f"{body.kind} statement",
                               remedy="officer statements are signed by officers' identities")
        try:
            statements.VerifyCache().verify(body.envelope, body.kind,
                                            {caller.key_id: caller.public_key},
                                            obj=f"{body.kind} statement")
        except IntegrityError as exc:
            raise AccessDenied(f"the statement is not signed by the caller: {exc.message}",
                               obj=f"{body.kind} statement") from None
        digest = publish(ctx.store, body.kind, body.envelope)
        ctx.audit().append(actor=caller.name, action=f"people.{body.kind}",
                           obj=digest[:16], decision="allow", reason="published over the API",
                           details=journal_details(body.kind, body.envelope, subject=str(
                               statements.unverified_payload(body.envelope).get("key_id", "")))
                           if body.kind == "revocation" else None)
        if body.kind == "revocation":
            keys.forget()
        return M.StoredOut(digest=digest, kind=body.kind)

    return r


# -- weights and documents ----------------------------------------------------------------------


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


def _keys_routes(ctx: ServerContext) -> tuple[APIRouter, dict[tuple[str, str], DirectRoute]]:
    """Key release: the hot path, so its router is matched first and it avoids thread hops.

    The route is ``async``: FastAPI would otherwise run a sync endpoint and then its
    response serialisation in two thread-pool hops. With the manifest and the blob
    header cached and the keys in the local agent, a release awaits the agent on the
    event loop (no thread at all); otherwise the blocking part (a cache miss, the
    in-process gate) runs in one hop.
    """
    from strongroom.release import ReleaseRequest

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

        from strongroom.keys.agent import AgentUnavailable

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


def _weights_routes(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["weights"])

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
        return _manifest_out(ctx, m)

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
        return _manifest_out(ctx, ctx.vault(actor=caller.name).manifest(name, version))

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
        m = ctx.vault(actor=caller.name).manifest(name, version)
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
    def documents(request: Request) -> list[M.DocumentOut]:
        """Every secret document version (manifests verified; content needs a Grant)."""
        from strongroom.vault.documents import list_documents

        caller = caller_of(request)
        return [M.DocumentOut(name=d.name, version=d.version, size=d.size,
                              classification=d.classification, compartments=list(d.compartments))
                for d in list_documents(ctx.vault(actor=caller.name))]

    return r


# -- access -------------------------------------------------------------------------------------


def _verify_own(env: str, kind: str, caller: Caller) -> dict[str, Any]:
    from strongroom.access import statements

    try:
        return statements.VerifyCache().verify(env, kind, {caller.key_id: caller.public_key},
                                               obj=f"{kind} statement")
    except IntegrityError as exc:
        raise AccessDenied(f"the {kind} is not signed by the caller's key: {exc.message}",
                           obj=f"{kind} statement",
                           remedy="sign statements with the identity that signs the request"
                           ) from None


def _access_routes(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    r = APIRouter(prefix="/v1/access", tags=["access"])

    def engine() -> Any:
        from strongroom.access.policy import PolicyEngine, current_policy

        return PolicyEngine(current_policy(ctx.directory_reader())[0])

    def resource(name: str, directory: Any) -> Any:
        from strongroom.access.evidence import describe_resource

        base, _, version = name.partition("@")
        m = ctx.vault().manifest(base, int(version) if version.isdigit() else None)
        res = describe_resource(m.ref, m.kind, m.compartments, m.metadata)
        return res.labelled(directory.label(m.name))

    def request_out(env: str) -> M.RequestOut:
        from strongroom.access import statements
        from strongroom.access.grants import parse_approval

        st = statements.unverified_payload(env)
        digest = statements.payload_digest(env)
        approvals = statements.envelopes(ctx.store, "approval", subject=digest,
                                         newest_first=False)
        return M.RequestOut(
            digest=digest, requester=str(st.get("requester", "")),
            action=str(st.get("action", "")), resource=str(st.get("resource", "")),
            purpose=str(st.get("purpose", "")),
            approvals=[parse_approval(a).approver for a in approvals],
            denied=bool(statements.envelopes(ctx.store, "denial", subject=digest)),
            envelope=env, approval_envelopes=approvals)

    @r.get("/requests", response_model=list[M.RequestOut])
    def list_requests(request: Request) -> list[M.RequestOut]:
        """Stored access requests with their approvals."""
        from strongroom.access import statements

        caller_of(request)
        return [request_out(env) for env in statements.envelopes(ctx.store, "request")]

    @r.get("/requests/{digest}", response_model=M.RequestOut)
    def get_request(request: Request,
                    digest: Annotated[str, Path(pattern=_DIGEST)]) -> M.RequestOut:
        """One request (by digest or a unique prefix of at least 8 characters)."""
        caller_of(request)
        return request_out(_find_envelope(ctx, "request", digest))

    @r.post("/requests", response_model=M.StoredOut, status_code=201)
    def submit_request(request: Request, body: M.Envelope) -> M.StoredOut:
        """File a request signed by the caller; refused if policy forbids the caller outright."""
        from strongroom.access.approvals import AccessRequest
        from strongroom.access.approvals import submit_request as store_request

        caller = caller_of(request)
        req = AccessRequest.from_statement(_verify_own(body.envelope, "request", caller))
        if req.requester_key != caller.key_id or req.requester != caller.name:
            raise AccessDenied("the request names someone other than the caller",
                               obj=req.resource)
        directory = ctx.directory()
        me = directory.principal(caller.key_id)
        if me is None:
            raise AccessDenied(f"{caller.name} is not enrolled", obj=req.resource,
                               remedy="ask k security officers to sign your enrollment")
        res = resource(req.resource, directory)
        vault = ctx.vault(actor=caller.name)
        if not engine().decide(me, req.action, res, time.time()).allowed:
            vault.record("access.request", res.name, "deny", reason="policy",
                         access_action=req.action)
            raise AccessDenied(f"policy denies {me.name} {req.action} on {res.name} "
                               "(clearance, compartments or vetting)", obj=res.name,
                               remedy="ask the security officers about your enrollment")
        digest = store_request(ctx.store, body.envelope)
        vault.record("access.request", res.name, "allow", reason=req.purpose,
                     access_action=req.action, request=digest)
        return M.StoredOut(digest=digest, kind="request")

    def _submit_verdict(request: Request, digest: str, body: M.Envelope,
                        kind: str) -> M.StoredOut:
        from strongroom.access.approvals import Approval, submit_approval

        caller = caller_of(request)
        full = _find_digest(ctx, "request", digest)
        a = Approval.from_statement(_verify_own(body.envelope, kind, caller))
        if a.approver_key != caller.key_id or a.request != full:
            raise AccessDenied(f"the {kind} is not the caller's for this request",
                               obj=full[:16])
        stored = submit_approval(ctx.store, body.envelope, kind=kind, directory=ctx.directory())
        ctx.vault(actor=caller.name).record(
            "access.approve" if kind == "approval" else "access.deny", full[:16],
            "allow" if kind == "approval" else "deny", reason=a.reason or "", request=full,
            **(journal_details(kind, body.envelope, subject=full) if kind == "denial" else {}))
        return M.StoredOut(digest=stored, kind=kind)

    @r.post("/requests/{digest}/approvals", response_model=M.StoredOut, status_code=201)
    def submit_approval(request: Request, digest: Annotated[str, Path(pattern=_DIGEST)],
                        body: M.Envelope) -> M.StoredOut:
        """Store an approval the caller signed; the Grant is then signed and posted by a party."""
        return _submit_verdict(request, digest, body, "approval")

    @r.post("/requests/{digest}/denials", response_model=M.StoredOut, status_code=201)
    def submit_denial(request: Request, digest: Annotated[str, Path(pattern=_DIGEST)],
                      body: M.Envelope) -> M.StoredOut:
        """Store a denial the caller signed (no grant is issued while it stands)."""
        return _submit_verdict(request, digest, body, "denial")

    def verified_grants() -> list[Any]:
        from strongroom.access import statements
        from strongroom.access.grants import verify_grant

        directory = ctx.directory()
        eng = engine()
        now = time.time()
        out = []
        for env in statements.envelopes(ctx.store, "grant"):
            try:
                req = statements.unverified_payload(
                    str(statements.unverified_payload(env)["request"]))
                out.append(verify_grant(env, directory, eng,
                                        resource(str(req["resource"]), directory), now=now))
            except (AccessDenied, InvalidInput, NotFound, KeyError):
                continue
        return out

    def grant_out(g: Any) -> M.GrantOut:
        return M.GrantOut(grant_id=g.grant_id, holder=g.request.requester,
                          action=g.request.action, resource=g.request.resource,
                          approvers=list(g.approvers), issued=g.issued, expires=g.expires,
                          byte_budget=g.byte_budget, issuer=g.issuer)

    @r.get("/grants", response_model=list[M.GrantOut])
    def list_grants(request: Request) -> list[M.GrantOut]:
        """Grants that verify now, from their signatures."""
        caller_of(request)
        return [grant_out(g) for g in verified_grants()]

    @r.post("/grants", response_model=M.GrantOut, status_code=201)
    def submit_grant(request: Request, body: M.Envelope) -> M.GrantOut:
        """Store a Grant the caller (requester or an approver) signed, if it verifies now."""
        from strongroom.access import statements
        from strongroom.access.caps import AccessCaps, holders
        from strongroom.access.directory import base_name
        from strongroom.access.grants import verify_grant

        caller = caller_of(request)
        if caller.key_id not in statements.signer_ids(body.envelope):
            raise AccessDenied("the grant is not signed by the caller", obj="grant")
        try:
            claimed = statements.unverified_payload(
                str(statements.unverified_payload(body.envelope)["request"]))
            name = str(claimed["resource"])
        except (KeyError, InvalidInput):
            raise AccessDenied("the grant is malformed", obj="grant") from None
        directory = ctx.directory()
        res = resource(name, directory)
        g = verify_grant(body.envelope, directory, engine(), res, now=time.time())
        if statements.envelopes(ctx.store, "denial", subject=g.request_digest):
            raise AccessDenied("the request was denied", obj=g.request_digest[:16],
                               remedy="file a new request")
        counts = holders(verified_grants()).get((base_name(res.name), g.request.action), set())
        AccessCaps().check(res.name, g.request.action, counts, g.request.requester)
        statements.put(ctx.store, "grant", body.envelope, subject=g.request.requester_key,
                       resource=base_name(g.request.resource), expires=g.expires)
        ctx.vault(actor=caller.name).record(
            "access.grant", res.name, "allow", reason=g.request.purpose, grant=g.grant_id,
            approvers=list(g.approvers), access_action=g.request.action,
            requester=g.request.requester, expires=g.expires, byte_budget=g.byte_budget)
        return grant_out(g)

    @r.post("/grants/{grant_id}/revocations", response_model=M.StoredOut, status_code=201)
    def revoke(request: Request, grant_id: Annotated[str, Path(pattern=_DIGEST)],
               body: M.Envelope) -> M.StoredOut:
        """Store a grant revocation the caller signed; the gate refuses the grant from then on."""
        from strongroom.access import statements

        caller = caller_of(request)
        full = _find_digest(ctx, "grant", grant_id)
        st = _verify_own(body.envelope, "grant-revocation", caller)
        if st.get("grant") != full or st.get("by_key") != caller.key_id:
            raise AccessDenied("the revocation names another grant or signer", obj=full[:16])
        digest = statements.put(ctx.store, "grant-revocation", body.envelope, subject=full)
        ctx.vault(actor=caller.name).record(
            "access.revoke", full[:16], "allow", reason=str(st.get("reason", "")), grant=full,
            **journal_details("grant-revocation", body.envelope, subject=full))
        return M.StoredOut(digest=digest, kind="grant-revocation")

    @r.post("/break-glass", response_model=M.StoredOut, status_code=201)
    def break_glass(request: Request, body: M.Envelope) -> M.StoredOut:
        """Store a break-glass statement the caller signed: a critical alert at once."""
        from strongroom.access.breakglass import ALERT_ACTION, BreakGlass, submit_break_glass

        caller = caller_of(request)
        st = _verify_own(body.envelope, "break-glass", caller)
        from strongroom.access import statements

        bg = BreakGlass.from_statement(st, statements.payload_digest(body.envelope))
        if bg.principal != caller.name or bg.principal_key != caller.key_id:
            raise AccessDenied("the break-glass names someone other than the caller",
                               obj=bg.resource)
        digest = submit_break_glass(ctx.store, body.envelope)
        ctx.vault(actor=caller.name).record(ALERT_ACTION, bg.resource, "allow",
                                            reason=bg.reason, severity="critical",
                                            break_glass=digest)
        return M.StoredOut(digest=digest, kind="break-glass")

    return r


def _find_digest(ctx: ServerContext, kind: str, prefix: str) -> str:
    from sqlalchemy import select

    from strongroom.store.tables.access import AccessStatement

    with ctx.store.session() as s:
        found = s.scalars(select(AccessStatement.digest).where(
            AccessStatement.kind == kind, AccessStatement.digest.startswith(prefix)).limit(2)).all()
    if not found:
        raise NotFound(f"no {kind} statement {prefix}", obj=prefix)
    if len(found) > 1:
        raise InvalidInput(f"several {kind} statements match {prefix!r}", obj=prefix,
                           remedy="give more characters of the id")
    return str(found[0])


def _find_envelope(ctx: ServerContext, kind: str, prefix: str) -> str:
    from strongroom.access import statements

    env = statements.by_digest(ctx.store, _find_digest(ctx, kind, prefix))
    if env is None:
        raise NotFound(f"{kind} statement vanished while being read", obj=prefix)
    return env


# -- audit and alerts -----------------------------------------------------------------------------


def _entry_out(ev: Any) -> M.AuditEntryOut:
    return M.AuditEntryOut(index=ev.index, time=ev.time, actor=ev.actor, action=ev.action,
                           object=ev.object, decision=ev.decision, reason=ev.reason,
                           details=ev.details, shard=ev.shard, nbytes=ev.nbytes)


def _alert_out(a: Any) -> M.AlertOut:
    return M.AlertOut(id=a.id, rule=a.rule, severity=a.severity, subject=a.subject,
                      object=a.obj, message=a.message, count=a.count,
                      first_seen=a.first_seen.isoformat(), last_seen=a.last_seen.isoformat(),
                      acked_at=a.acked_at.isoformat() if a.acked_at else None,
                      acked_by=a.acked_by)


def _audit_routes(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["audit"])

    @r.get("/audit/tail", response_model=list[M.AuditEntryOut])
    def tail(request: Request, n: Annotated[int, Query(ge=1, le=1000)] = 20
             ) -> list[M.AuditEntryOut]:
        """The newest ``n`` entries (auditors, security officers)."""
        require_role(request, keys, *_AUDITORS)
        return [_entry_out(ev) for ev in ctx.audit().tail(n)]

    @r.get("/audit/entries/{index}", response_model=M.AuditEntryOut)
    def entry(request: Request, index: Annotated[int, Path(ge=0, le=1 << 62)]
              ) -> M.AuditEntryOut:
        """One entry."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if index >= log.size():
            raise NotFound(f"the log has {log.size()} entries", obj=f"entry {index}")
        return _entry_out(log.event(index))

    @r.get("/audit/entries/{index}/proof", response_model=M.ProofOut)
    def proof(request: Request, index: Annotated[int, Path(ge=0, le=1 << 62)]) -> M.ProofOut:
        """An inclusion proof of one entry against the latest signed checkpoint."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if index >= log.size():
            raise NotFound(f"the log has {log.size()} entries", obj=f"entry {index}")
        return M.ProofOut(index=index, proof=log.prove(index).to_text())

    @r.get("/audit/checkpoint", response_model=M.CheckpointOut)
    def checkpoint(request: Request) -> M.CheckpointOut:
        """The latest signed checkpoint."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        return M.CheckpointOut(size=log.size(), checkpoint=log.latest_checkpoint())

    @r.post("/audit/checkpoint", response_model=M.CheckpointOut)
    def sign_checkpoint(request: Request) -> M.CheckpointOut:
        """Sign a checkpoint at the current size and push it to the witnesses."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        note = log.checkpoint()
        return M.CheckpointOut(size=log.size(), checkpoint=note)

    @r.get("/audit/consistency", response_model=M.ConsistencyOut)
    def consistency(request: Request, old: Annotated[int, Query(ge=1, le=1 << 62)],
                    new: Annotated[int, Query(ge=1, le=1 << 62)]) -> M.ConsistencyOut:
        """Hashes proving the tree of size ``new`` extends the tree of size ``old``."""
        require_role(request, keys, *_AUDITORS)
        log = ctx.audit()
        if not old <= new <= log.size():
            raise InvalidInput(f"need 1 <= old <= new <= {log.size()}", obj="consistency")
        hashes = log.consistency(old, new)
        return M.ConsistencyOut(old=old, new=new,
                                hashes=[base64.b64encode(h).decode() for h in hashes])

    @r.get("/alerts", response_model=list[M.AlertOut], tags=["alerts"])
    def alerts(request: Request, unacked: bool = False,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[M.AlertOut]:
        """Alerts, newest first (security officers, auditors)."""
        require_role(request, keys, *_AUDITORS)
        return [_alert_out(a) for a in ctx.alerts().recent(unacked=unacked, limit=limit)]

    @r.post("/alerts/{alert_id}/ack", response_model=M.AlertOut, tags=["alerts"])
    def ack(request: Request, alert_id: Annotated[int, Path(ge=1, le=1 << 62)],
            body: M.AlertAck) -> M.AlertOut:
        """Acknowledge an alert (audited)."""
        caller = require_role(request, keys, "security-officers")
        return _alert_out(ctx.alerts().ack(alert_id, by=caller.name, note=body.note))

    return r

"""The inference gateway: weights held in memory, only ``POST /v1/embeddings`` served.

Start it from an encrypted artifact (this verifies the signed code release
first, then loads the weights through key release, locks them in RAM and
builds the model)::

    gw = start_gateway(vault, "minilm", release=envelope, code_owners=owners, threshold=2,
                       auth=SignedRequestAuth(callers), authorizer=AllowList({"ivy"}),
                       alerts=AuditAlertSink(vault.audit))
    with GatewayServer(gw, port=8700) as server:     # uvicorn on 127.0.0.1, in a thread
        ...
    gw.close()                                         # zeroes and unlocks the weights

A request is ``{"input": "text" | ["text", ...], "dimensions": 128}``, signed by
the caller (:mod:`strongroom.gateway.auth`); the answer is
``{"object": "list", "data": [{"index": 0, "embedding": [...]}], "model": ..., "dimensions": ...}``.
Every request, allowed or refused, is an audit event carrying SHA-256 digests
of the input and output, never their contents; if the audit log cannot record
it, no output is returned. Errors carry the gateway's own messages, never an
exception's text, a tensor or a text the caller sent. There is no other route:
no documentation, no health check that reveals the model, nothing returning
weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from strongroom.errors import (
    AccessDenied,
    AuditUnavailable,
    IntegrityError,
    InvalidInput,
    StrongroomError,
)
from strongroom.gateway.alerts import GatewayAlert, GatewayAlertSink
from strongroom.gateway.auth import CallerAuth, InferAuthorizer
from strongroom.gateway.codesign import CodeWatch
from strongroom.gateway.defence import (
    DetectorConfig,
    ExtractionDetector,
    Limits,
    LimitsConfig,
    OutputPolicy,
    QueryBudgetReached,
    Throttled,
)
from strongroom.gateway.memory import MemoryLock
from strongroom.gateway.models import Model
from strongroom.gateway.usage import Suspended, UsageLedger, suspension_details

if TYPE_CHECKING:
    from pathlib import Path

    from strongroom.keys.identity import PublicIdentity
    from strongroom.vault.vault import Vault

__all__ = ["EMBEDDINGS_PATH", "Gateway", "GatewayConfig", "GatewayServer", "Reply",
           "create_app", "start_gateway"]

EMBEDDINGS_PATH = "/v1/embeddings"
GATEWAY_ACTOR = "strongroom-gateway"


class AuditAppender(Protocol):
    """The part of :class:`~strongroom.audit.log.AuditLog` the gateway uses."""

    def append(self, *, actor: str, action: str, obj: str, decision: str, reason: str = "",
               request_id: str | None = None, details: Mapping[str, Any] | None = None,
               shard: str | None = None, nbytes: int | None = None) -> int:
        """Record one decision durably."""
        ...


@dataclass(frozen=True)
class GatewayConfig:
    """Output limits, rate limits and budgets, and detector thresholds."""

    output: OutputPolicy = field(default_factory=OutputPolicy)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    #: While serving, the installed modules are checked against the signed code release
    #: again before the first request after each of these intervals (0: every request).
    code_check_s: float = 60.0
    #: Charge query budgets and record suspensions in the audit log, so that they survive a
    #: restart and are shared by every gateway serving the model on the database
    #: (:mod:`strongroom.gateway.usage`). Off: in this process's memory only (tests).
    persist_usage: bool = True

    @classmethod
    def unprotected(cls) -> GatewayConfig:
        """No rounding, no limits, no detection: for red-team comparisons only, never deploy."""
        inf = 10**12
        return cls(
            OutputPolicy(precision=15, max_inputs=4096, max_response_bytes=1 << 30),
            LimitsConfig(principal_rate=1e9, principal_burst=inf, global_rate=1e9,
                         global_burst=inf, principal_budget=inf, global_budget=inf),
            DetectorConfig(random_texts=inf, duplicates=inf, probes=inf,
                           principals_per_host=inf),
        )


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status: int, kind: str, message: str, request_id: str,
           headers: Mapping[str, str] | None = None) -> Reply:
    body = json.dumps({"error": {"type": kind, "message": message, "request_id": request_id}})
    return Reply(status, body.encode(), headers or {})


def _parse(body: bytes, policy: OutputPolicy) -> tuple[list[str], int | None]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("request body is not JSON", obj="request") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object", obj="request")
    unknown = set(doc) - {"input", "dimensions", "encoding_format", "model"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {len(unknown)}", obj="request",
                           remedy="send only input, dimensions, encoding_format, model")
    raw = doc.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput("input must be a string or a non-empty list of strings", obj="input")
    if len(texts) > policy.max_inputs:
        raise InvalidInput(f"at most {policy.max_inputs} texts per request", obj="input")
    if any(len(t) > policy.max_input_chars for t in texts):
        raise InvalidInput(f"each text must be at most {policy.max_input_chars} characters",
                           obj="input")
    if doc.get("encoding_format", "float") != "float":
        raise InvalidInput("only encoding_format 'float' is served", obj="encoding_format")
    dims = doc.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool)):
        raise InvalidInput("dimensions must be an integer", obj="dimensions")
    return texts, dims


class Gateway:
    """Serves a loaded model's outputs to authenticated, authorised, metered callers."""

    def __init__(
        self,
        model: Model,
        model_ref: str,
        *,
        auth: CallerAuth,
        authorizer: InferAuthorizer,
        audit: AuditAppender,
        alerts: GatewayAlertSink,
        config: GatewayConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_close: Callable[[], None] | None = None,
        code_check: Callable[[], object] | None = None,
        usage: UsageLedger | None = None,
    ) -> None:
        """``code_check`` re-verifies the code release (raising IntegrityError naming the file
        changed); :func:`start_gateway` passes the check it made at start. ``usage`` (loaded)
        charges the query budgets and keeps suspensions in the audit log; without it they
        live in this process's memory only."""
        self.model = model
        self.model_ref = model_ref
        self.auth = auth
        self.authorizer = authorizer
        self.audit = audit
        self.alerts = alerts
        self.config = config or GatewayConfig()
        self.clock = clock
        self.limits = Limits(self.config.limits, ledger=usage)
        self.detector = ExtractionDetector(self.config.detector)
        self.memory: MemoryLock | None = None
        self.usage = usage
        self._usage_alerted = False
        self._on_close = on_close
        #: When each caller's spent budget was last alerted (one alert per caller and window).
        self._budget_alerted: dict[str, float] = {}
        # start_gateway verified the code just before: the next check is due an interval on
        self._code_watch = None if code_check is None else CodeWatch(code_check,
                                                                     checked_at=clock())

    def close(self) -> None:
        """Release the model's weights (zeroing them when they came from the vault)."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def _record(self, actor: str, decision: str, request_id: str, reason: str = "",
                **details: Any) -> None:
        self.audit.append(actor=actor, action="gateway.infer", obj=self.model_ref,
                          decision=decision, reason=reason, request_id=request_id,
                          details=details)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
               host: str) -> Reply:
        """Answer one request (never raises; every outcome is audited or refused)."""
        request_id = secrets.token_hex(8)
        try:
            return self._handle(method, path, headers, body, host, request_id)
        except AuditUnavailable:
            if self.usage is not None and self.usage.broken is not None:
                return self._usage_broken(host, request_id)
            return _error(503, "audit_unavailable",
                          "the audit log cannot record this request, so it is refused", request_id)
        except Exception as exc:  # the caller sees no internals, only a request id
            if (isinstance(exc, IntegrityError) and self.usage is not None
                    and self.usage.broken is not None):
                return self._usage_broken(host, request_id)
            with contextlib.suppress(StrongroomError):
                self._record(GATEWAY_ACTOR, "error", request_id, reason=type(exc).__name__,
                             host=host)
            return _error(500, "internal", "internal error; quote the request id to an operator",
                          request_id)

    def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                host: str, request_id: str) -> Reply:
        now = self.clock()
        in_digest = hashlib.sha256(body).hexdigest()
        lower = {k.lower(): v for k, v in headers.items()}
        if len(body) > self.config.output.max_body_bytes:
            self._record("anonymous", "deny", request_id, "body too large", host=host,
                         nbytes_in=len(body))
            return _error(413, "too_large", "request body too large", request_id)
        try:
            caller = self.auth.authenticate(method, path, lower, body, now)
        except AccessDenied as exc:
            self._record("anonymous", "deny", request_id, exc.message, host=host,
                         input_sha256=in_digest)
            return _error(401, "unauthenticated", str(exc), request_id)
        who = caller.principal
        try:
            self.authorizer.check(who, "infer", self.model_ref)
        except AccessDenied as exc:
            self._record(who, "deny", request_id, exc.message, host=host, input_sha256=in_digest)
            return _error(403, "forbidden", str(exc), request_id)
        changed = self.check_code(who, host, now)
        if changed is not None:
            self._record(who, "deny", request_id, f"code changed since the gateway started: "
                         f"{changed}", host=host, input_sha256=in_digest)
            return _error(503, "code_changed", "the gateway's code changed since it started; "
                          "an operator must restore the signed release", request_id)
        wait = self.detector.suspended(who, host, now)
        if self.usage is not None:
            wait = max(wait, self.usage.suspended(who, host, now))
        if wait > 0:
            self._record(who, "throttle", request_id, "suspended after an extraction alert",
                         host=host, input_sha256=in_digest)
            return _error(429, "suspended", "suspended after an extraction alert; an operator "
                          "will review", request_id, {"Retry-After": str(int(wait) + 1)})
        try:
            texts, requested = _parse(body, self.config.output)
            dims = self.config.output.dimensions(self.model.dimension, requested)
        except InvalidInput as exc:
            self._record(who, "deny", request_id, exc.message, host=host, input_sha256=in_digest)
            return _error(400, "invalid_request", str(exc), request_id)
        try:
            pending = self.limits.admit(who, len(texts), now)
        except Suspended:
            return self._suspended(who, host, request_id, in_digest)
        except Throttled as exc:
            self._record(who, "throttle", request_id, exc.message, host=host,
                         input_sha256=in_digest, texts=len(texts))
            if isinstance(exc, QueryBudgetReached):
                self._alert_budget(who, host, exc, now)
            return _error(429, "throttled", str(exc), request_id,
                          {"Retry-After": str(int(exc.retry_after) + 1)})
        alerts = self.detector.observe(who, host, texts, now)
        for alert in alerts:
            self.alerts.emit(alert)
        if any(_suspends(a) for a in alerts):
            subjects = [f"h:{host}" if a.kind == "many-principals-one-host" else f"p:{who}"
                        for a in alerts if _suspends(a)]
            self._record(who, "throttle", request_id, "extraction pattern detected: "
                         + ", ".join(a.kind for a in alerts), host=host,
                         input_sha256=in_digest, texts=len(texts),
                         suspend=suspension_details(subjects,
                                                    now + self.config.detector.suspend_s))
            return _error(429, "suspended", "suspended after an extraction alert; an operator "
                          "will review", request_id,
                          {"Retry-After": str(int(self.config.detector.suspend_s))})
        vectors = self.config.output.shape(self.model.embed(texts), dims)
        out = json.dumps({
            "object": "list",
            "model": self.model_ref,
            "dimensions": dims,
            "data": [{"object": "embedding", "index": i, "embedding": row}
                     for i, row in enumerate(vectors.tolist())],
        }, separators=(",", ":")).encode()
        if len(out) > self.config.output.max_response_bytes:
            self._record(who, "deny", request_id, "response over the size cap", host=host,
                         input_sha256=in_digest, texts=len(texts))
            return _error(413, "too_large", "response would exceed the size cap; send fewer "
                          "texts or ask for fewer dimensions", request_id)
        details: dict[str, Any] = {"host": host, "input_sha256": in_digest,
                   "output_sha256": hashlib.sha256(out).hexdigest(), "texts": len(texts),
                   "dimensions": dims}
        if pending is None or self.usage is None:  # budgets charged in memory (or none)
            self._record(who, "allow", request_id, **details)
            return Reply(200, out, {"X-Request-Id": request_id})
        try:  # the charge and the allow entry commit together, before the answer leaves
            self.usage.charge(who, host, pending.texts, now, {
                "actor": who, "action": "gateway.infer", "obj": self.model_ref,
                "decision": "allow", "reason": "", "request_id": request_id,
                "details": details})
        except Suspended:
            return self._suspended(who, host, request_id, in_digest)
        except QueryBudgetReached as exc:
            self._record(who, "throttle", request_id, exc.message, host=host,
                         input_sha256=in_digest, texts=len(texts))
            self._alert_budget(who, host, exc, now)
            return _error(429, "throttled", str(exc), request_id,
                          {"Retry-After": str(int(exc.retry_after) + 1)})
        return Reply(200, out, {"X-Request-Id": request_id})

    def _suspended(self, who: str, host: str, request_id: str, in_digest: str) -> Reply:
        """Refuse a caller (or host) another gateway process suspended."""
        self._record(who, "throttle", request_id, "suspended after an extraction alert",
                     host=host, input_sha256=in_digest)
        return _error(429, "suspended", "suspended after an extraction alert; an operator "
                      "will review", request_id,
                      {"Retry-After": str(int(self.config.detector.suspend_s))})

    def _usage_broken(self, host: str, request_id: str) -> Reply:
        """Refuse: the usage evidence was found deleted or altered (alerted once)."""
        assert self.usage is not None and self.usage.broken is not None
        if not self._usage_alerted:
            self._usage_alerted = True
            with contextlib.suppress(StrongroomError):
                self.alerts.emit(GatewayAlert(
                    "usage-evidence", "critical", GATEWAY_ACTOR, host,
                    f"the gateway's query-budget evidence was tampered with: "
                    f"{self.usage.broken.message}; every request is refused", self.clock(),
                    {"model": self.model_ref}))
        return _error(503, "usage_evidence", "the gateway cannot prove what its callers already "
                      "used, so it refuses; an operator must restore the audit log", request_id)


    def check_code(self, who: str, host: str, now: float) -> str | None:
        """Re-verify the installed code against the signed release when due; what changed.

        A module changed on disk does not change the code already imported, but it runs at
        the next import or restart; found, it is alerted (``code-modified``, critical) once
        and every later request is refused until an operator restarts from signed code.
        """
        if self._code_watch is None:
            return None
        changed, found = self._code_watch.poll(now, self.config.code_check_s)
        if found:
            self.alerts.emit(GatewayAlert(
                "code-modified", "critical", who, host,
                f"the gateway's installed code changed while serving: {changed}",
                now, {"file": self._code_watch.file}))
        return changed

    @property
    def code_changed(self) -> str | None:
        """What changed in the code since start (then every request is refused), else None."""
        return None if self._code_watch is None else self._code_watch.changed

    def _alert_budget(self, who: str, host: str, exc: QueryBudgetReached, now: float) -> None:
        """A ``query-budget`` alert, once per caller (or for all callers) and budget window."""
        key = "all callers" if exc.everyone else who
        last = self._budget_alerted.get(key)
        if last is not None and now - last < exc.window_s:
            return
        self._budget_alerted[key] = now
        self.alerts.emit(GatewayAlert(
            "query-budget", "high", who, host,
            f"{key} spent the query budget of {exc.budget} texts per {exc.window_s:.0f} s: "
            "answers in that volume can distil the model", now,
            {"budget": exc.budget, "window_s": int(exc.window_s), "all_callers": exc.everyone}))


def _suspends(alert: GatewayAlert) -> bool:
    return "suspended_s" in alert.details


def create_app(gateway: Gateway) -> FastAPI:
    """The HTTP face: ``POST /v1/embeddings`` and nothing else."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    cap = gateway.config.output.max_body_bytes

    @app.post(EMBEDDINGS_PATH)
    async def embeddings(request: Request) -> Response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                body = b"x" * (cap + 1)  # only its length matters: refused as too large
                break
            chunks.append(chunk)
        else:
            body = b"".join(chunks)
        host = request.client.host if request.client else "unknown"
        reply = await run_in_threadpool(gateway.handle, "POST", EMBEDDINGS_PATH,
                                        dict(request.headers), body, host)
        return Response(reply.body, status_code=reply.status, media_type="application/json",
                        headers=dict(reply.headers))

    return app


def start_gateway(
    vault: Vault,
    artifact: str,
    *,
    release: str,
    code_owners: Sequence[PublicIdentity],
    threshold: int,
    auth: CallerAuth,
    authorizer: InferAuthorizer,
    alerts: GatewayAlertSink,
    config: GatewayConfig | None = None,
    version: int | None = None,
    blas_threads: int | None = 1,
    code_root: Path | None = None,
) -> Gateway:
    """Verify the code release, load ``artifact`` through key release, lock it, build the model.

    ``blas_threads`` sets numpy's BLAS threads process-wide (one forward pass per
    request thread; None leaves it alone). The release is checked again while serving
    (:meth:`Gateway.check_code`). ``code_root``: the package directory to check (default:
    the installed one, whose imported modules are checked too).
    """
    from strongroom.gateway.codesign import verify_release
    from strongroom.gateway.minilm import limit_blas_threads
    from strongroom.gateway.models import load_model

    try:
        signed = verify_release(release, code_owners, threshold, code_root)
    except StrongroomError as exc:
        with contextlib.suppress(StrongroomError):
            vault.record("gateway.start", artifact, "deny", reason=exc.message)
        raise
    if blas_threads is not None:
        limit_blas_threads(blas_threads)
    config = config or GatewayConfig()
    weights = vault.open_weights(artifact, version)
    lock: MemoryLock | None = None
    usage: UsageLedger | None = None
    try:
        model = load_model(weights, weights.file_bytes)
        lock = MemoryLock.lock(model.arrays())
        extra: dict[str, Any] = {}
        if config.persist_usage:
            usage = _load_usage(vault, weights.manifest.ref, config, alerts)
            extra["usage_entries_replayed"] = usage.replayed
        vault.record("gateway.start", weights.manifest.ref, "allow",
                     release_signers=list(signed.signers), modules=len(signed.files),
                     memory_locked=lock.locked, memory=lock.describe(), **extra)
    except BaseException:
        if lock is not None:
            lock.release()
        weights.close()
        raise

    def close() -> None:
        assert lock is not None
        lock.release()
        weights.close()

    gateway = Gateway(model, weights.manifest.ref, auth=auth, authorizer=authorizer,
                      audit=vault.audit, alerts=alerts, config=config, on_close=close,
                      code_check=lambda: verify_release(release, code_owners, threshold,
                                                        code_root), usage=usage)
    gateway.memory = lock
    return gateway


def _load_usage(vault: Vault, model_ref: str, config: GatewayConfig,
                alerts: GatewayAlertSink) -> UsageLedger:
    """The model's query usage and suspensions replayed from the audit log; refuses (alerted,
    audited) to start when that evidence was deleted or altered."""
    usage = UsageLedger(vault.audit, model_ref, config.limits,
                        suspend_s=config.detector.suspend_s)
    now = time.time()
    try:
        usage.load(now)
    except IntegrityError as exc:
        with contextlib.suppress(StrongroomError):
            alerts.emit(GatewayAlert(
                "usage-evidence", "critical", GATEWAY_ACTOR, "-",
                f"the gateway's query-budget evidence was tampered with: {exc.message}; "
                "the gateway refused to start", now, {"model": model_ref}))
        with contextlib.suppress(StrongroomError):
            vault.record("gateway.start", model_ref, "deny", reason=exc.message)
        raise
    return usage


class GatewayServer:
    """Runs a gateway's app under uvicorn in a background thread (loopback by default)."""

    def __init__(self, gateway: Gateway, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(create_app(gateway), host=host, port=port,
                                     log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> GatewayServer:
        """Start serving; returns once the socket is listening."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InvalidInput("the gateway server did not start", obj=f"{self.host}:{self.port}",
                                   remedy="choose a free --port")
            time.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

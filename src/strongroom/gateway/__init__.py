"""The hardened inference gateway: callers get a model's outputs, never its weights.

Start one from an encrypted artifact and serve it on loopback::

    from strongroom.gateway import (AllowList, AuditAlertSink, GatewayServer,
                                    SignedRequestAuth, start_gateway)
    gw = start_gateway(vault, "minilm", release=envelope, code_owners=owners, threshold=2,
                       auth=SignedRequestAuth(callers), authorizer=AllowList({"ivy"}),
                       alerts=AuditAlertSink(vault.audit))
    with GatewayServer(gw):
        ...
    gw.close()

Pieces: :mod:`.codesign` (k-of-n signed code releases, checked before start),
:mod:`.memory` (mlock), :mod:`.models` / :mod:`.minilm` / :mod:`.tokenizer` (the
numpy encoder), :mod:`.auth` (signed requests, the ``infer`` check),
:mod:`.defence` (output limits, rate limits, budgets, extraction detectors),
:mod:`.alerts` (the sink protocol), :mod:`.server` (the gateway and its HTTP app).
Do not add routes that return tensors, configuration or model files.
"""

from __future__ import annotations

from strongroom.gateway.alerts import (
    AuditAlertSink,
    FanOutSink,
    GatewayAlert,
    GatewayAlertSink,
    MemoryAlertSink,
)
from strongroom.gateway.auth import (
    AllowList,
    Caller,
    CallerAuth,
    InferAuthorizer,
    SignedRequestAuth,
    sign_request,
)
from strongroom.gateway.codesign import add_signature, sign_release, verify_release
from strongroom.gateway.defence import (
    DetectorConfig,
    ExtractionDetector,
    Limits,
    LimitsConfig,
    OutputPolicy,
    Throttled,
)
from strongroom.gateway.memory import MemoryLock
from strongroom.gateway.models import Model, load_model, register_family
from strongroom.gateway.server import (
    EMBEDDINGS_PATH,
    Gateway,
    GatewayConfig,
    GatewayServer,
    create_app,
    start_gateway,
)

__all__ = [
    "EMBEDDINGS_PATH",
    "AllowList",
    "AuditAlertSink",
    "Caller",
    "CallerAuth",
    "DetectorConfig",
    "ExtractionDetector",
    "FanOutSink",
    "Gateway",
    "GatewayAlert",
    "GatewayAlertSink",
    "GatewayConfig",
    "GatewayServer",
    "InferAuthorizer",
    "Limits",
    "LimitsConfig",
    "MemoryAlertSink",
    "MemoryLock",
    "Model",
    "OutputPolicy",
    "SignedRequestAuth",
    "Throttled",
    "add_signature",
    "create_app",
    "load_model",
    "register_family",
    "sign_release",
    "sign_request",
    "start_gateway",
    "verify_release",
]

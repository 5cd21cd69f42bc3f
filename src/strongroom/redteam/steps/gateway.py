"""Steps against the inference gateway: starting it from unsigned code, an extraction attack."""

from __future__ import annotations

import json
from typing import Any

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import attempt, step
from strongroom.redteam.target import ARTIFACT


def _gateway(ctx: RunContext, release: str, owners: list[Any], callers: list[Any]) -> Any:
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.auth import AllowList, SignedRequestAuth
    from strongroom.gateway.server import start_gateway

    t = ctx.target
    svc = t.vault_as(t.people["gateway-svc"])
    return start_gateway(svc, ARTIFACT, release=release, code_owners=[o.public for o in owners],
                         threshold=2, auth=SignedRequestAuth([c.public for c in callers]),
                         authorizer=AllowList({c.name for c in callers}),
                         alerts=AuditAlertSink(t.audit))


@step("start_gateway_unsigned")
def start_gateway_unsigned(ctx: RunContext) -> None:
    """Start the gateway with a release the code owners did not sign (an attacker's key)."""
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.keys.identity import Identity

    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    attacker = Identity.generate(ctx.actor("attacker"))
    forged = add_signature(sign_release([attacker]), owners[0])
    t = ctx.target
    svc = t.vault_as(t.people["gateway-svc"])
    svc.actor = ctx.actor("gateway")
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.auth import AllowList, SignedRequestAuth
    from strongroom.gateway.server import start_gateway

    def go() -> None:
        gw = start_gateway(svc, ARTIFACT, release=forged, code_owners=[o.public for o in owners],
                           threshold=2, auth=SignedRequestAuth([]), authorizer=AllowList(()),
                           alerts=AuditAlertSink(t.audit))
        gw.close()

    attempt(ctx, "gateway start with 1 owner + attacker signature", go)


@step("extraction_attack")
def extraction_attack(ctx: RunContext, batches: int = 6, batch: int = 24) -> None:
    """An ``infer``-only caller sends batches of near-random strings (output-space extraction)."""
    import random
    import string

    from strongroom.gateway.auth import sign_request
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.gateway.server import EMBEDDINGS_PATH
    from strongroom.keys.identity import Identity

    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    release = add_signature(sign_release([owners[0]]), owners[1])
    caller = Identity.generate(ctx.actor("extractor"))
    gw = _gateway(ctx, release, owners, [caller])
    rng = random.Random(ctx.marker)  # noqa: S311 - attack inputs, not secrets
    codes = []
    try:
        for _ in range(batches):
            texts = ["".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
                     for _ in range(batch)]
            body = json.dumps({"input": texts}).encode()
            headers = sign_request(caller, "POST", EMBEDDINGS_PATH, body)
            codes.append(gw.handle("POST", EMBEDDINGS_PATH, headers, body, "10.9.8.7").status)
    finally:
        gw.close()
    ctx.saw(f"extraction batches answered with HTTP {codes}")


@step("probe_output_precision")
def probe_output_precision(ctx: RunContext, texts: int = 6) -> None:
    """An ``infer``-only caller sends ordinary texts and keeps every answer, to read more
    precision out of the vectors than the gateway's rounding allows (an output-side channel)."""
    from strongroom.gateway.auth import sign_request
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.gateway.server import EMBEDDINGS_PATH
    from strongroom.keys.identity import Identity

    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    release = add_signature(sign_release([owners[0]]), owners[1])
    caller = Identity.generate(ctx.actor("prober"))
    gw = _gateway(ctx, release, owners, [caller])
    replies = []
    try:
        for i in range(texts):
            body = json.dumps({"input": [f"the weather report for day {i} is mild"]}).encode()
            headers = sign_request(caller, "POST", EMBEDDINGS_PATH, body)
            reply = gw.handle("POST", EMBEDDINGS_PATH, headers, body, "10.9.8.8")
            replies.append((reply.status, reply.body))
    finally:
        gw.close()
    ctx.vars["gateway_replies"] = replies
    ctx.saw(f"precision probes answered with HTTP {[s for s, _ in replies]}")

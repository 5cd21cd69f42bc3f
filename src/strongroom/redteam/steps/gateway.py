"""Steps against the inference gateway: starting it from unsigned code, an extraction attack,
distillation under the detectors, an output-side channel.

The caller-side steps (extraction, distillation, the precision probe) attack an
in-process gateway the step starts on the embedded target, or, on a live
target, the running gateway (``--gateway``) as the next unused caller the
operator lent (``--gateway-caller``): the same requests, signed the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import attempt, step
from strongroom.redteam.target import ARTIFACT


def _gateway(ctx: RunContext, release: str, owners: list[Any], callers: list[Any],
             config: Any = None, code_root: Any = None) -> Any:
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.auth import AllowList, SignedRequestAuth
    from strongroom.gateway.server import start_gateway

    t = ctx.target
    svc = t.vault_as(t.people["gateway-svc"])
    return start_gateway(svc, ARTIFACT, release=release, code_owners=[o.public for o in owners],
                         threshold=2, auth=SignedRequestAuth([c.public for c in callers]),
                         authorizer=AllowList({c.name for c in callers}),
                         alerts=AuditAlertSink(t.audit), config=config, code_root=code_root)


#: Sends one request body to the gateway as the scenario's caller: (HTTP status, body).
Send = Callable[[bytes], tuple[int, bytes]]


@contextlib.contextmanager
def _caller(ctx: RunContext, role: str, host: str, config: Any = None) -> Iterator[Send]:
    """The scenario's caller in ``role``: a live target's next lent caller against its running
    gateway, or a marked caller of a gateway started here (``config``) and closed afterwards."""
    from strongroom.gateway.auth import sign_request
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.gateway.server import EMBEDDINGS_PATH
    from strongroom.keys.identity import Identity

    t: Any = ctx.target
    if getattr(t, "kind", "") == "live":
        lent = t.gateway_caller(ctx.marker, role)
        yield lambda body: t.gateway_post(lent, EMBEDDINGS_PATH, body)
        return
    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    release = add_signature(sign_release([owners[0]]), owners[1])
    caller = Identity.generate(ctx.actor(role))
    gw = _gateway(ctx, release, owners, [caller], config)

    def send(body: bytes) -> tuple[int, bytes]:
        reply = gw.handle("POST", EMBEDDINGS_PATH,
                          sign_request(caller, "POST", EMBEDDINGS_PATH, body), body, host)
        return reply.status, reply.body

    try:
        yield send
    finally:
        gw.close()


def _start_unsigned_on_host(ctx: RunContext) -> None:
    """Live (``host-shell``): on the serving host, as the red-team identity, start the gateway
    as ``strongroom gateway serve`` does (the code owners the officers pinned, callers from the
    directory) with a release two attacker keys signed."""
    from strongroom.gateway.access import DirectoryCallers, GrantAuthorizer, directory_reader
    from strongroom.gateway.alerts import AuditAlertSink
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.gateway.owners import require_owners
    from strongroom.gateway.server import start_gateway
    from strongroom.keys.identity import Identity
    from strongroom.redteam.live import LiveTarget

    live = ctx.target
    assert isinstance(live, LiveTarget) and live.host is not None and live.identity is not None
    attackers = [Identity.generate(f"{ctx.marker}-attacker{i}") for i in range(2)]
    forged = add_signature(sign_release([attackers[0]]), attackers[1])
    artifact = live.resource_name(ARTIFACT)
    with live.host.vault(live.identity) as vault:
        reader = directory_reader(vault.store, vault.keys.public_keys(),
                                  vault.keys.status().officer_threshold)
        manifest = vault.manifest(artifact)

        def go() -> None:
            owners, threshold = require_owners(reader)
            gw = start_gateway(vault, artifact, release=forged, code_owners=owners,
                               threshold=threshold, auth=DirectoryCallers(reader),
                               authorizer=GrantAuthorizer(vault.store, reader, manifest),
                               alerts=AuditAlertSink(vault.audit), blas_threads=None)
            gw.close()

        attempt(ctx, "gateway start on the serving host with two attacker signatures", go)


@step("start_gateway_unsigned")
def start_gateway_unsigned(ctx: RunContext) -> None:
    """Start the gateway with a release the code owners did not sign (an attacker's key)."""
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.keys.identity import Identity

    if getattr(ctx.target, "kind", "") == "live":
        _start_unsigned_on_host(ctx)
        return
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

    rng = random.Random(ctx.marker)  # noqa: S311 - attack inputs, not secrets
    codes = []
    with _caller(ctx, "extractor", "10.9.8.7") as send:
        for _ in range(batches):
            texts = ["".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
                     for _ in range(batch)]
            codes.append(send(json.dumps({"input": texts}).encode())[0])
    ctx.saw(f"extraction batches answered with HTTP {codes}")


@step("probe_output_precision")
def probe_output_precision(ctx: RunContext, texts: int = 6) -> None:
    """An ``infer``-only caller sends ordinary texts and keeps every answer, to read more
    precision out of the vectors than the gateway's rounding allows (an output-side channel)."""
    replies = []
    with _caller(ctx, "prober", "10.9.8.8") as send:
        for i in range(texts):
            replies.append(send(json.dumps(
                {"input": [f"the weather report for day {i} is mild"]}).encode()))
    ctx.vars["gateway_replies"] = replies
    ctx.saw(f"precision probes answered with HTTP {[s for s, _ in replies]}")


#: Questions a distiller words differently each time (no pattern for the detectors to see).
_TOPICS = ("tides", "photosynthesis", "inflation", "volcanoes", "jazz", "glaciers", "vaccines",
           "bridges", "comets", "bees", "tariffs", "sleep", "rivers", "printing")
_FORMS = ("explain {} to a new colleague", "what actually drives {}", "an overview of {} please",
          "why would anyone study {}", "the short history of {}", "how I would teach {}")


@step("distill_in_budget")
def distill_in_budget(ctx: RunContext, budget: int = 48, batch: int = 8,
                      batches: int = 12) -> None:
    """An ``infer``-only caller asks ordinary, differently worded questions in small batches,
    under the rate limits and the detectors, to collect answers for distilling the model.
    The embedded target's gateway runs with a per-caller daily budget of ``budget`` texts; a
    live gateway is graded against the same ``budget`` (``gateway serve --query-budget``): one
    that serves more than ``budget`` texts to the caller is a miss."""
    from strongroom.gateway.defence import LimitsConfig
    from strongroom.gateway.server import GatewayConfig

    config = GatewayConfig(limits=LimitsConfig(principal_budget=budget))
    answered, codes = 0, []
    with _caller(ctx, "distiller", "10.9.8.9", config) as send:
        for b in range(batches):
            texts = [_FORMS[(b * batch + i) % len(_FORMS)].format(
                _TOPICS[(b * 3 + i * 5) % len(_TOPICS)]) + f", part {b}.{i}"
                for i in range(batch)]
            status, body = send(json.dumps({"input": texts}).encode())
            codes.append(status)
            if status == 200:
                answered += len(json.loads(body)["data"])
    ctx.vars["distilled"] = (answered, budget)
    ctx.saw(f"{batches} batches of {batch} paraphrases answered with HTTP {codes}: "
            f"{answered} answers collected")


def _host_copy(ctx: RunContext) -> Any:
    """Where the scenario's serving host has strongroom installed: a copy of the package
    (the suite never edits the installation it runs from)."""
    return ctx.target.root / f"host-{ctx.marker}" / "strongroom"


@step("modify_module_while_serving")
def modify_module_while_serving(ctx: RunContext, module: str = "gateway/server.py") -> None:
    """A gateway serves from a signed release; someone with a shell on its host then edits
    one of its installed modules (a hook that runs at the next import or restart), and the
    caller keeps asking."""
    import shutil

    from strongroom.gateway.auth import sign_request
    from strongroom.gateway.codesign import add_signature, package_root, sign_release
    from strongroom.gateway.server import EMBEDDINGS_PATH, GatewayConfig
    from strongroom.keys.identity import Identity

    root = _host_copy(ctx)
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    owners = [Identity.generate(f"owner{i}") for i in range(3)]
    release = add_signature(sign_release([owners[0]], root), owners[1], root)
    caller = Identity.generate(ctx.actor("caller"))
    gw = _gateway(ctx, release, owners, [caller], GatewayConfig(code_check_s=0.0), root)
    codes = []
    try:
        for i in range(3):
            if i == 1:
                with open(root / module, "a", encoding="utf-8") as f:
                    f.write(f"\nimport os  # {ctx.marker}: sends what it serves elsewhere\n")
                ctx.saw(f"edited {module} on the serving host")
            body = json.dumps({"input": [f"a fair question number {i}"]}).encode()
            reply = gw.handle("POST", EMBEDDINGS_PATH, sign_request(caller, "POST",
                                                                    EMBEDDINGS_PATH, body),
                              body, "10.9.8.10")
            codes.append(reply.status)
    finally:
        gw.close()
    ctx.saw(f"requests before and after the edit answered with HTTP {codes}")


@step("remove_host_copy")
def remove_host_copy(ctx: RunContext) -> None:
    """Cleanup: delete the serving host's copy of the package."""
    import shutil

    shutil.rmtree(_host_copy(ctx).parent, ignore_errors=True)

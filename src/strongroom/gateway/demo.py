"""The gateway part of ``make demo``: output-only access to the encrypted MiniLM.

Call it with an unsealed vault that already holds the ``minilm`` artifact::

    from strongroom.gateway.demo import demo_gateway
    demo_gateway(vault, console)

It signs a code release with two of three code owners, starts the gateway on
loopback from the encrypted weights, serves embeddings to ``ivy`` (who holds
``infer`` only, and is refused when she tries to load the weights herself),
then shows ``mallory``'s extraction attempt (batches of random strings)
being throttled and alerted, and stops the server. It uses throw-away
identities; never reuse them.
"""

from __future__ import annotations

import json
import random
import string
from typing import TYPE_CHECKING

import httpx
import numpy as np

from strongroom.errors import AccessDenied
from strongroom.gateway.alerts import AuditAlertSink, FanOutSink, MemoryAlertSink
from strongroom.gateway.auth import AllowList, SignedRequestAuth, sign_request
from strongroom.gateway.codesign import add_signature, sign_release
from strongroom.gateway.server import EMBEDDINGS_PATH, GatewayServer, start_gateway
from strongroom.keys.identity import Identity

if TYPE_CHECKING:
    from rich.console import Console

    from strongroom.vault.vault import Vault

__all__ = ["demo_gateway"]


def _post(client: httpx.Client, who: Identity, texts: list[str]) -> httpx.Response:
    body = json.dumps({"input": texts}).encode()
    return client.post(EMBEDDINGS_PATH, content=body,
                       headers=sign_request(who, "POST", EMBEDDINGS_PATH, body))


def demo_gateway(vault: Vault, console: Console, artifact: str = "minilm") -> None:
    """Serve the encrypted model's embeddings to an infer-only caller; throttle an extractor."""
    from strongroom.vault.vault import Vault as VaultClass

    owners = [Identity.generate(n) for n in ("olga", "omar", "oren")]
    release = add_signature(sign_release([owners[0]]), owners[1])
    console.print("code owners olga and omar sign a release of every strongroom module (2 of 3)")
    ivy, mallory = Identity.generate("ivy"), Identity.generate("mallory")
    as_ivy = VaultClass(vault.settings, vault.store, vault.blobs, vault.keys, vault.audit,
                        identity=ivy)
    try:
        as_ivy.open_weights(artifact)
        console.print("[red]ivy loaded the weights: she should hold infer only[/]")
        raise SystemExit(1)
    except AccessDenied as exc:
        console.print(f"ivy (infer only) asks for the weights themselves -> [yellow]refused[/]: {exc}")
    alerts = MemoryAlertSink()
    gw = start_gateway(vault, artifact, release=release,
                       code_owners=[o.public for o in owners], threshold=2,
                       auth=SignedRequestAuth([ivy.public, mallory.public]),
                       authorizer=AllowList({"ivy", "mallory"}),
                       alerts=FanOutSink([AuditAlertSink(vault.audit), alerts]))
    try:
        assert gw.memory is not None
        console.print(f"gateway loaded {gw.model_ref} through key release, as {vault.actor}; "
                      + gw.memory.describe())
        with GatewayServer(gw) as server, httpx.Client(base_url=server.url) as client:
            console.print(f"serving POST {EMBEDDINGS_PATH} only, on {server.url}")
            texts = ["Model weights stay encrypted at rest.",
                     "The weights are kept encrypted when stored.",
                     "The cat sat on the mat."]
            reply = _post(client, ivy, texts)
            vec = np.array([d["embedding"] for d in reply.json()["data"]])
            console.print(f"ivy: HTTP {reply.status_code}, {vec.shape[0]} embeddings of "
                          f"{vec.shape[1]} dims, rounded to {gw.config.output.precision} decimals; "
                          f"similarity {vec[0] @ vec[1]:.3f} (paraphrase) vs {vec[0] @ vec[2]:.3f}")
            rng = random.Random(0)  # noqa: S311 - demo inputs, not secrets
            console.print("mallory sends batches of random strings (the query pattern of "
                          "output-space extraction):")
            for attempt in range(3):
                noise = ["".join(rng.choice(string.ascii_letters + string.digits)
                                 for _ in range(32)) for _ in range(24)]
                r = _post(client, mallory, noise)
                console.print(f"  batch {attempt + 1}: HTTP {r.status_code} "
                              f"{r.json().get('error', {}).get('message', 'served')}")
            for alert in alerts.alerts:
                console.print(f"  [bold red]alert[/] {alert.kind} ({alert.severity}) for "
                              f"{alert.principal}: {alert.message}")
            again = _post(client, ivy, ["ivy is still served"])
            console.print(f"ivy meanwhile: HTTP {again.status_code}")
        console.print("gateway stopped")
    finally:
        gw.close()
    served = [e for e in vault.audit.tail(50) if e.action == "gateway.infer"]
    console.print(f"{len(served)} gateway requests in the audit log (SHA-256 of input and "
                  "output, never the texts); decisions: "
                  + ", ".join(sorted({e.decision for e in served})))
    if not alerts.alerts or reply.status_code != 200:
        raise SystemExit(1)

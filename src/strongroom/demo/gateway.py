"""The gateway part of ``make demo``: output-only access to the encrypted MiniLM.

Call it with an unsealed vault that already holds the ``minilm`` artifact::

    from strongroom.demo.gateway import demo_gateway
    demo_gateway(vault, console)

The vault must act as a security officer (the demo's bootstrap officer). It
signs a code release with two of three code owners; enrolls a service
principal that obtains a ``load`` Grant and starts the gateway on loopback
from the encrypted weights as that service; gives ``ivy`` and ``mallory`` an
``infer`` Grant each (callers are enrolled principals, checked by Cedar and
their Grant); serves embeddings to ``ivy`` (refused when she tries to load
the weights herself, and ``eve``, enrolled but without a Grant, is refused
by the gateway); then shows ``mallory``'s extraction attempt (batches of
random strings) throttled and alerted, and stops the server. It uses
throw-away identities under ``<home>-people``; never reuse them.
"""

from __future__ import annotations

import json
import random
import string
import time
from typing import TYPE_CHECKING

import httpx
import numpy as np

from strongroom.errors import AccessDenied
from strongroom.gateway.access import DirectoryCallers, GrantAuthorizer, directory_reader
from strongroom.gateway.alerts import AuditAlertSink, FanOutSink, MemoryAlertSink
from strongroom.gateway.auth import sign_request
from strongroom.gateway.codesign import add_signature, sign_release
from strongroom.gateway.owners import CodeOwners, pinned_owners, publish_owners, require_owners
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
    from strongroom.demo.access import demo_grant
    from strongroom.vault.vault import Vault as VaultClass

    def acting_as(ident: Identity) -> Vault:
        return VaultClass(vault.settings, vault.store, vault.blobs, vault.keys, vault.audit,
                          identity=ident)

    home = vault.settings.resolved_home
    people = home.parent / (home.name + "-people")
    officer = vault.identity
    owners = [Identity.generate(n) for n in ("olga", "omar", "oren")]
    reader = directory_reader(vault.store, vault.keys.public_keys(), 1)
    current = pinned_owners(reader)
    publish_owners(vault.store, CodeOwners(tuple(o.public for o in owners), 2,
                                           serial=current.serial + 1 if current else 1,
                                           issued=int(time.time())).sign(officer.private_key,
                                                                         pq=officer.mldsa_key))
    pinned, need = require_owners(reader)
    console.print(f"the security officer pins the gateway's code owners: {need} of "
                  + ", ".join(o.principal for o in pinned))
    release = add_signature(sign_release([owners[0]]), owners[1])
    console.print("code owners olga and omar sign a release of every strongroom module (2 of 3)")
    service = Identity.generate(f"gateway-{artifact}")
    demo_grant(vault, officer, service, artifact, ("load",), people, kind="service",
               purpose="serve embeddings")
    ivy, mallory, eve = (Identity.generate(n) for n in ("ivy", "mallory", "eve"))
    for who in (ivy, mallory):
        demo_grant(vault, officer, who, artifact, ("infer",), people, purpose="embeddings")
    demo_grant(vault, officer, eve, artifact, (), people)  # enrolled, no grant
    console.print(f"service principal {service.public.principal} holds a load Grant; ivy and "
                  "mallory hold an infer Grant each (1 approver); eve is enrolled with none")
    try:
        acting_as(ivy).open_weights(artifact)
        console.print("[red]ivy loaded the weights: she should hold infer only[/]")
        raise SystemExit(1)
    except AccessDenied as exc:
        console.print(f"ivy (infer only) asks for the weights themselves -> [yellow]refused[/]: {exc}")
    alerts = MemoryAlertSink()
    as_service = acting_as(service)
    gw = start_gateway(as_service, artifact, release=release,
                       code_owners=pinned, threshold=need,
                       auth=DirectoryCallers(reader),
                       authorizer=GrantAuthorizer(vault.store, reader, vault.manifest(artifact)),
                       alerts=FanOutSink([AuditAlertSink(vault.audit), alerts]))
    try:
        assert gw.memory is not None
        console.print(f"gateway loaded {gw.model_ref} through key release, as {as_service.actor}; "
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
            denied = _post(client, eve, texts[:1])
            console.print(f"eve (enrolled, no infer Grant): HTTP {denied.status_code} "
                          f"{denied.json().get('error', {}).get('message', '')}")
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
    if not alerts.alerts or reply.status_code != 200 or denied.status_code != 403:
        raise SystemExit(1)

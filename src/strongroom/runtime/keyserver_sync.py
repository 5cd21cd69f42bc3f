"""Sending signed access statements to key servers: only what each lacks, and revocations at once.

``strongroom keyserver sync`` asks each key server what it holds
(``GET /v1/keyserver/statements``) and sends only the statements it lacks, or
whose cosignatures it lacks; a second run sends nothing. ``people revoke``,
``people cosign`` (of a revocation) and ``access revoke`` push their new
revocation to every key server of a threshold vault straight away
(:func:`push`), best effort: each server's answer comes back by name, and a
server that cannot be reached is named with the remedy ``keyserver sync``.
Each key server still verifies every statement itself
(:mod:`strongroom.runtime.keyserver_intake`, then the Grant rule at use)::

    report = sync_one("ks-a", "https://ks-a:8430", items)       # {"sent", "stored", "held", "refused"}
    results = push(servers, [{"kind": "revocation", "envelope": env}])
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx

from strongroom import errors
from strongroom.access import statements
from strongroom.runtime.keyserver_intake import OFFICER_KINDS
from strongroom.runtime.threshold_client import answer

__all__ = ["MAX_BATCH_BYTES", "lacking_items", "push", "send", "sync_one"]

#: Statements per request, and bytes per request (the key server refuses bodies over 1 MiB).
MAX_BATCH = 200
MAX_BATCH_BYTES = 768 * 1024
#: A batch the key server's rate limit refused (429) is resent after its Retry-After, this
#: many tries in all, waiting at most this long each time.
_THROTTLED_TRIES = 6
_THROTTLED_WAIT_S = 5.0
_RUNS = "check the URL and that `strongroom keyserver serve` runs"


def _unreachable(url: str, exc: Exception) -> errors.ServerError:
    return errors.ServerError(
        f"no answer from the key server ({type(exc).__name__})", obj=url, remedy=_RUNS
    )


def held(http: httpx.Client, url: str) -> dict[str, frozenset[str]] | None:
    """What the key server at ``url`` holds (digest -> signer key ids of officer statements);
    None from a key server too old to say (everything is sent to it)."""
    try:
        r = http.get(f"{url.rstrip('/')}/v1/keyserver/statements")
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    if r.status_code in (404, 405):
        return None
    data = answer(r, url).get("statements", {})
    if not isinstance(data, dict):
        raise errors.ServerError(
            "the key server's list of statements is malformed",
            obj=url,
            remedy="upgrade the key server to this version",
        )
    return {
        str(d): frozenset(str(k) for k in kids)
        for d, kids in data.items()
        if isinstance(kids, list)
    }


def lacking_items(
    items: Sequence[dict[str, str]], have: dict[str, frozenset[str]] | None
) -> list[dict[str, str]]:
    """The items a server holding ``have`` lacks: new statements, or officer statements whose
    signatures it has not all got (None: all of them)."""
    if have is None:
        return list(items)
    out = []
    for item in items:
        digest = statements.payload_digest(item["envelope"])
        cosigned = (
            item["kind"] in OFFICER_KINDS
            and digest in have
            and not set(statements.signer_ids(item["envelope"])) <= have[digest]
        )
        if digest not in have or cosigned:
            out.append(item)
    return out


def _batches(items: Sequence[dict[str, str]]) -> list[list[dict[str, str]]]:
    out: list[list[dict[str, str]]] = [[]]
    size = 0
    for item in items:
        n = len(item["envelope"]) + len(item["kind"]) + 32
        if out[-1] and (len(out[-1]) >= MAX_BATCH or size + n > MAX_BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return [b for b in out if b]


def send(
    http: httpx.Client, url: str, items: Sequence[dict[str, str]], *, skip_refused: bool = False
) -> dict[str, Any]:
    """Post ``items`` to one key server in batches; ``{"stored": {kind: n}, "held": n, "refused": [...]}``."""
    stored: dict[str, int] = {}
    out: dict[str, Any] = {"stored": stored, "held": 0, "refused": []}
    done = 0
    for batch in _batches(items):
        body = {"statements": batch, **({"skip_refused": True} if skip_refused else {})}
        for attempt in range(_THROTTLED_TRIES):
            try:
                r = http.post(
                    f"{url.rstrip('/')}/v1/keyserver/statements",
                    content=json.dumps(body),
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise _unreachable(url, exc) from None
            if r.status_code != 429 or attempt == _THROTTLED_TRIES - 1:
                break
            wait = r.headers.get("retry-after", "1")  # the key server's rate limit: wait it out
            time.sleep(min(float(wait) if wait.isdigit() else 1.0, _THROTTLED_WAIT_S))
        data = answer(r, url)
        for kind, n in data.get("stored", {}).items():
            stored[kind] = stored.get(kind, 0) + int(n)
        out["held"] += int(data.get("held", 0))
        out["refused"] += [
            {**x, "statement": int(x.get("statement", 0)) + done}
            for x in data.get("refused", [])
            if isinstance(x, dict)
        ]
        done += len(batch)
    return out


def sync_one(url: str, items: Sequence[dict[str, str]], *, full: bool = False) -> dict[str, Any]:
    """Send one key server what it lacks of ``items`` (everything with ``full``); statements it
    refuses (a signer its officers did not let in) are reported, the rest stored."""
    with httpx.Client(timeout=60) as http:
        todo = list(items) if full else lacking_items(items, held(http, url))
        result = (
            send(http, url, todo, skip_refused=True)
            if todo
            else {"stored": {}, "held": 0, "refused": []}
        )
    return {"sent": len(todo), **result}


def push(
    servers: Sequence[tuple[str, str]], items: Sequence[dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """Best effort: ``items`` to every server; by name, its answer or ``{"error", "remedy"}``."""
    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=15) as http:
        for name, url in servers:
            try:
                out[name] = send(http, url, items)
            except errors.StrongroomError as exc:
                out[name] = {
                    "error": f"{type(exc).__name__}: {exc.message}",
                    "remedy": exc.remedy or "",
                }
    return out

"""The floor under a key release over HTTP: what the Python HTTP stack costs before any check.

    .venv/bin/python bench/release_floor.py [--requests 4000] [--rounds 3] [--threads 8]

Beside the OpenBao figure (``bench/peers.py --only openbao``) this says how
much of the machine's cores a request costs before strongroom checks
anything. Three servers, each started the way ``strongroom serve`` starts
uvicorn (``--workers 2``, httptools, uvloop where installed, no access log),
answer a POST the size of a real release (the same JSON body and RFC 9421
headers ``bench/server.py`` sends, signed before timing) with a fixed small
JSON answer:

* **bare**: a plain ASGI app that reads the body and answers;
* **verify**: the same plus one Ed25519 verification of the request's
  signature over the body (as each worker verifies the caller's);
* **fastapi**: a FastAPI route (the framework strongroom's server uses) that
  reads the body, verifies the same signature and answers JSON.

All three are driven by the raw keep-alive client and closed-loop threads of
``bench/server.py`` (what ``bench/peers.py`` uses for both strongroom and
OpenBao), interleaved round by round; each prints the median and best
requests/s, the p50, and the CPU per request of the client and of the server
(its uvicorn processes, from ``/proc``), with the load average after each
round. The machine's reference figures come first (``bench/machine.py``).
Whatever strongroom spends per release above the **fastapi** line is its own
work (caller lookup, evidence, gate, audit, unwrap, the agent hop).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from fastapi import FastAPI, Request, Response  # noqa: E402

from machine import bench_module, describe, interleave, loadavg, summary  # noqa: E402

#: The server's mode and the verifying public key reach uvicorn's worker processes here.
MODE_ENV, KEY_ENV = "RELEASE_FLOOR_MODE", "RELEASE_FLOOR_KEY"
PATH = "/v1/keys/release"
SIG_HEADER = "x-floor-signature"
#: The answer: about the size of a release's (artifact, shard, blob, a 32-byte key in base64).
ANSWER = json.dumps({"artifact": "minilm@1", "shard": "model.safetensors",
                     "blob": "b" * 32, "file_key": base64.b64encode(bytes(32)).decode()}
                    ).encode()

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# -- the servers (run in uvicorn's worker processes) --------------------------------------


def app() -> Any:
    """The ASGI app of this process's mode (uvicorn's ``factory=True``)."""
    mode = os.environ[MODE_ENV]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(os.environ[KEY_ENV]))
    if mode == "fastapi":
        return _fastapi(public)
    verify = mode == "verify"
    answer_headers = [(b"content-type", b"application/json"),
                      (b"content-length", str(len(ANSWER)).encode())]

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if verify:
            sig = next(v for k, v in scope["headers"] if k == SIG_HEADER.encode())
            public.verify(base64.b64decode(sig), body)  # raises on a bad one: the run fails
        await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
        await send({"type": "http.response.body", "body": ANSWER})

    return bare


def _fastapi(public: Any) -> FastAPI:
    api = FastAPI()

    @api.post(PATH)
    async def release(request: Request) -> Response:
        body = await request.body()
        public.verify(base64.b64decode(request.headers[SIG_HEADER]), body)
        return Response(ANSWER, media_type="application/json")

    return api


def serve(port: int, workers: int) -> None:
    """What ``strongroom serve`` runs, with this module's app instead of strongroom's."""
    import importlib.util

    import uvicorn

    fast = importlib.util.find_spec("httptools") is not None
    uvicorn.run("release_floor:app", factory=True, host="127.0.0.1", port=port,
                workers=workers, http="httptools" if fast else "h11", log_level="warning",
                access_log=False, server_header=False, proxy_headers=False)


# -- the client -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(mode: str, key_hex: str, workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A floor server of ``mode`` on a free port; stopped (its whole group) on exit."""
    port = _free_port()
    env = {**os.environ, MODE_ENV: mode, KEY_ENV: key_hex,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    code = f"from release_floor import serve; serve({port}, {workers})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=HERE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the {mode} floor server did not start") from None
                time.sleep(0.2)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def requests_like_releases(n: int) -> tuple[list[tuple[bytes, dict[str, str]]], str]:
    """``n`` POST bodies and headers shaped as ``bench/server.py``'s releases, each signed;
    and the signer's public key (hex)."""
    from strongroom.access.evidence import make_evidence
    from strongroom.keys.identity import Identity
    from strongroom.server.signatures import sign_request

    alice = Identity.generate("alice")
    out = []
    for _ in range(n):
        ev = make_evidence(alice.private_key, artifact="minilm@1", shard="model.safetensors",
                           blob_id="b" * 32, purpose="load", ttl_s=600)
        body = json.dumps({"artifact": "minilm@1", "shard": "model.safetensors",
                           "purpose": "load", "evidence": ev}).encode()
        headers = sign_request(alice.private_key, "POST", PATH, body)
        headers["content-type"] = "application/json"
        headers[SIG_HEADER] = base64.b64encode(alice.private_key.sign(body)).decode()
        out.append((body, headers))
    return out, alice.public.public_bytes.hex()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests a round to each")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = ap.parse_args()
    server_bench = bench_module("server")
    print(describe())
    prepared, key_hex = requests_like_releases(args.requests)
    body, headers = prepared[0]
    size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
    print(f"\n== the HTTP floor: {args.threads} closed-loop clients, {args.requests} POSTs a "
          f"round of a release's size (body {len(body)} B, ~{size} B with headers), "
          f"uvicorn --workers {args.workers}")
    modes = ("bare", "verify", "fastapi")
    with contextlib.ExitStack() as stack:
        servers = {m: stack.enter_context(started(m, key_hex, args.workers)) for m in modes}
        cpu: dict[str, dict[str, float]] = {m: {"client": 0.0, "server": 0.0} for m in modes}
        p50: dict[str, list[float]] = {m: [] for m in modes}

        def subject(mode: str) -> Callable[[int], float]:
            port, proc = servers[mode]
            send = server_bench.RawClient("127.0.0.1", port).send

            def one(item: tuple[bytes, dict[str, str]]) -> None:
                send("POST", PATH, item[0], item[1])

            server_bench._run(4, prepared[:200], one)  # warm-up: connections, imports

            def run(_: int) -> float:
                tree = server_bench._tree(proc.pid)
                before = (server_bench._cpu(os.getpid()),
                          sum(server_bench._cpu(p) for p in tree))
                lat, elapsed = server_bench._run(args.threads, prepared, one)
                cpu[mode]["client"] += server_bench._cpu(os.getpid()) - before[0]
                cpu[mode]["server"] += sum(server_bench._cpu(p) for p in tree) - before[1]
                p50[mode].append(statistics.median(lat) * 1000)
                return float(len(lat) / elapsed)

            return run

        rounds = interleave(args.rounds, {m: subject(m) for m in modes})
        n = args.requests * args.rounds
        cores = os.cpu_count() or 1
        for m in modes:
            per = {k: v / n * 1e6 for k, v in cpu[m].items()}
            total = per["client"] + per["server"]
            print(summary(m, rounds[m], "req/s") + f"; p50 median {statistics.median(p50[m]):.2f}"
                  f" ms; CPU per request: client {per['client']:,.0f} us, server "
                  f"{per['server']:,.0f} us, total {total:,.0f} us (all {cores} cores: "
                  f"<= {cores / max(total, 1e-3) * 1e6:,.0f}/s)")
        print(f"  (load {loadavg()}; the cap is the CPU bound alone, before any waiting, with "
              "the machine to itself)")


if __name__ == "__main__":
    main()

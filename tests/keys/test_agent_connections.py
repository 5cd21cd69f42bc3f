"""The agent protocol on kept-open connections: reuse, a restarted agent, the asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.crypto.age import Stanza
from strongroom.errors import AccessDenied, InvalidInput, Sealed
from strongroom.release import ReleaseRequest
from strongroom.runtime.agent import (
    LOCK_NAME,
    SOCKET_NAME,
    AgentClient,
    AgentUnavailable,
    _encode_answers,
    decode_release_answers,
    decode_release_many,
    encode_release_many,
)
from strongroom.runtime.agent_async import AsyncAgentClient
from strongroom.store.db import Store


def _pid(home: Path) -> int | None:
    try:
        lines = (home / LOCK_NAME).read_text().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None


def _exited(pid: int, seconds: float) -> bool:
    """Whether the agent ``pid`` is gone within ``seconds`` (reaped when it is our child)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True  # our child (AgentClient spawned it here): reaped
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _stop(home: Path) -> None:
    pid = _pid(home)
    if AgentClient(home, start=False).running():
        AgentClient(home, start=False).call("shutdown")
    if pid and not _exited(pid, 10):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    h = Path(f"/tmp/sra-{os.urandom(4).hex()}")
    h.mkdir(mode=0o700)
    monkeypatch.setenv("STRONGROOM_HOME", str(h))
    url = f"sqlite:///{tmp_path / 'sr.db'}"
    monkeypatch.setenv("STRONGROOM_DATABASE_URL", url)
    Store.open(url).close()  # what `strongroom init` does first: an agent refuses an empty database
    try:
        yield h
    finally:
        _stop(h)
        shutil.rmtree(h, ignore_errors=True)


def test_calls_reuse_one_connection(home: Path) -> None:
    client = AgentClient(home)
    pid = client.call("ping")["pid"]
    first = client._idle[-1].fileno()
    for _ in range(20):
        assert client.call("ping")["pid"] == pid
    assert len(client._idle) == 1 and client._idle[-1].fileno() == first


def test_an_error_reply_leaves_the_connection_usable(home: Path) -> None:
    client = AgentClient(home)
    client.call("ping")
    with pytest.raises(InvalidInput, match="unknown agent operation"):
        client.call("no-such-op")
    assert len(client._idle) == 1
    assert client.call("ping")["pid"] == _pid(home)


def test_a_restarted_agent_is_reached_on_a_fresh_connection(home: Path) -> None:
    client = AgentClient(home)
    old = client.call("ping")["pid"]
    _stop(home)  # the kept connection is now closed at the far end
    assert client.call("ping")["pid"] != old  # retried once on a new connection (new agent)


def test_requests_in_sequence_on_one_raw_connection(home: Path) -> None:
    AgentClient(home).call("ping")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(home / SOCKET_NAME))
        for _ in range(3):
            data = b'{"op": "ping", "args": {}}'
            sock.sendall(struct.pack(">I", len(data)) + data)
            (n,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
            assert b'"ok": true' in sock.recv(n, socket.MSG_WAITALL)


def test_the_asyncio_client(home: Path) -> None:
    pid = AgentClient(home).call("ping")["pid"]
    client = AsyncAgentClient(home)

    async def run() -> list[int]:
        out = [(await client.call("ping"))["pid"] for _ in range(5)]
        out += [r["pid"] for r in await asyncio.gather(*(client.call("ping") for _ in range(8)))]
        with pytest.raises(InvalidInput):
            await client.call("no-such-op")
        return out

    assert set(asyncio.run(run())) == {pid}
    assert 1 <= len(client._idle) <= 8


def test_the_asyncio_client_never_starts_an_agent(home: Path) -> None:
    client = AsyncAgentClient(home)
    with pytest.raises(AgentUnavailable):
        asyncio.run(client.call("ping"))
    assert not AgentClient(home, start=False).running()


def test_the_asyncio_client_after_a_restart(home: Path) -> None:
    AgentClient(home).call("ping")
    client = AsyncAgentClient(home)

    async def run() -> tuple[int, int]:
        first = (await client.call("ping"))["pid"]
        _stop(home)
        AgentClient(home).call("ping")  # a new agent
        return first, (await client.call("ping"))["pid"]

    first, second = asyncio.run(run())
    assert first != second


def test_the_asyncio_client_bounds_its_calls_in_flight(home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    AgentClient(home).call("ping")
    monkeypatch.setattr(AsyncAgentClient, "POOL_SIZE", 3)
    client = AsyncAgentClient(home)
    opened = 0
    real_open = client._open

    async def counting_open(*args: Any) -> Any:
        nonlocal opened
        opened += 1
        return await real_open(*args)

    client._open = counting_open  # type: ignore[method-assign]

    async def run() -> None:
        await asyncio.gather(*(client.call("ping") for _ in range(50)))

    asyncio.run(run())
    assert opened <= 3 and len(client._idle) <= 3  # 50 calls over at most 3 connections


def test_a_cancelled_call_does_not_return_its_connection(home: Path) -> None:
    AgentClient(home).call("ping")
    client = AsyncAgentClient(home)

    async def run() -> None:
        await client.call("ping")
        assert len(client._idle) == 1
        task = asyncio.ensure_future(client.call("ping"))
        await asyncio.sleep(0)  # started: it holds the pooled connection
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._idle == []  # closed, not pooled with a reply still in flight
        assert (await client.call("ping"))["pid"] == _pid(home)

    asyncio.run(run())


def _requests() -> list[ReleaseRequest]:
    return [
        ReleaseRequest(principal="alice", principal_key=os.urandom(32), artifact="m@1",
                       shard="model.safetensors", blob_id="b" * 64, nbytes=1 << 40,
                       purpose="load", evidence='{"payload": "x"}',
                       stanzas=(Stanza("strongroom-kek", ("vault-1", "2"), os.urandom(60)),
                                Stanza("X25519", (), b"")), host="ws-9"),
        ReleaseRequest(principal="bøb", principal_key=b"", artifact="m@1", shard="dir/ü.bin",
                       blob_id="c", nbytes=0, purpose="load", evidence="", host=None),
    ]


def test_the_compact_release_batch_round_trips() -> None:
    requests = _requests()
    message = encode_release_many(requests)
    assert message[0] == 0x01 and b"base64" not in message
    assert decode_release_many(message) == requests
    assert decode_release_many(encode_release_many([])) == []
    key = bytearray(os.urandom(32))
    frame = _encode_answers([key, AccessDenied("no", obj="m@1/x", remedy="ask")])
    (n,) = struct.unpack(">I", frame[:4])
    answers = decode_release_answers(bytes(frame[4:]), 2)
    assert n == len(frame) - 4 and answers[0] == bytes(key)
    assert isinstance(answers[1], AccessDenied) and answers[1].remedy == "ask"


def test_requests_for_one_blob_share_their_parsed_stanzas() -> None:
    # The stanzas are the blob's public age header: parsed once per distinct bytes (in one
    # batch or the next), equal to what was sent; different bytes are parsed on their own.
    requests = _requests()
    same = [requests[0], dataclasses.replace(requests[1], stanzas=requests[0].stanzas)]
    first = decode_release_many(encode_release_many(same))
    again = decode_release_many(encode_release_many(same[:1]))
    assert first == same and first[0].stanzas is first[1].stanzas is again[0].stanzas
    other = decode_release_many(encode_release_many(requests))
    assert other == requests and other[1].stanzas == requests[1].stanzas


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 40, -1])
def test_a_truncated_or_padded_compact_batch_is_refused(cut: int) -> None:
    message = encode_release_many(_requests())
    with pytest.raises(ValueError):
        decode_release_many(message[:cut])
    with pytest.raises(ValueError):
        decode_release_many(message + b"\x00")
    answer = bytes(_encode_answers([bytearray(32)])[4:])
    with pytest.raises(ValueError):
        decode_release_answers(answer[:min(cut, 30)], 1)
    with pytest.raises(ValueError):
        decode_release_answers(answer + b"\x00", 1)


def test_the_agent_answers_a_compact_batch_in_kind(home: Path) -> None:
    AgentClient(home).call("ping")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(home / SOCKET_NAME))

        def exchange(data: bytes) -> bytes:
            sock.sendall(struct.pack(">I", len(data)) + data)
            (n,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
            return sock.recv(n, socket.MSG_WAITALL)

        answers = decode_release_answers(exchange(encode_release_many(_requests())), 2)
        assert all(isinstance(a, Sealed) for a in answers)  # each its own refusal
        # A message it cannot parse: one JSON error for the batch; the connection stays usable.
        with pytest.raises(InvalidInput, match="malformed release batch"):
            decode_release_answers(exchange(b"\x01\x00\x01garbage"), 1)
        assert b'"ok": true' in exchange(b'{"op": "ping", "args": {}}')


def test_the_asyncio_client_releases_in_compact_batches(home: Path) -> None:
    AgentClient(home).call("ping")
    client = AsyncAgentClient(home)

    async def run() -> list[Any]:
        return await asyncio.gather(*(client.release(r) for r in _requests() * 3),
                                    return_exceptions=True)

    out = asyncio.run(run())
    assert len(out) == 6 and all(isinstance(o, Sealed) for o in out)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # serve's workers run uvloop
def test_the_asyncio_release_after_a_restart_and_without_an_agent(home: Path, loop: str) -> None:
    run_on = pytest.importorskip("uvloop").run if loop == "uvloop" else asyncio.run
    AgentClient(home).call("ping")
    client = AsyncAgentClient(home)

    async def run() -> None:
        with pytest.raises(Sealed):
            await client.release(_requests()[0])
        _stop(home)
        AgentClient(home).call("ping")  # a new agent: the kept connection is closed
        with pytest.raises(Sealed):
            await client.release(_requests()[0])  # retried once on a fresh connection
        _stop(home)
        await asyncio.sleep(0.05)
        with pytest.raises(AgentUnavailable):  # the caller falls back to the blocking client
            await client.release(_requests()[0])

    run_on(run())
    assert not AgentClient(home, start=False).running()


def _fake_agent(path: str, answer: Any) -> Any:
    """A server on this loop that reads one frame per exchange and lets ``answer`` reply."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                await answer(await reader.readexactly(n), writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return asyncio.start_unix_server(handle, path)


def _answers(*outcomes: Any) -> bytes:
    return bytes(_encode_answers(list(outcomes)))


def test_each_caller_of_a_batch_gets_its_own_key_and_a_cancelled_one_none(
        tmp_path: Path) -> None:
    home = Path(f"/tmp/sra-{os.urandom(4).hex()}")
    home.mkdir(mode=0o700)
    path = str(home / SOCKET_NAME)
    sizes: list[int] = []
    keys = [bytearray(os.urandom(32)) for _ in range(6)]

    async def answer(data: bytes, writer: asyncio.StreamWriter) -> None:
        n = len(decode_release_many(data))
        sizes.append(n)
        await asyncio.sleep(0.01)
        frame = _encode_answers([AccessDenied("no", obj="x") if i == 1 else keys[i]
                                 for i in range(n)])
        writer.write(bytes(frame))

    async def run() -> list[Any]:
        server = await _fake_agent(path, answer)
        client = AsyncAgentClient(home)
        try:
            await client.release(_requests()[0])  # connected
            first = asyncio.ensure_future(client.release(_requests()[0]))
            await asyncio.sleep(0)  # the first batch (one release) is out
            rest = [asyncio.ensure_future(client.release(r)) for r in _requests() * 2]
            await asyncio.sleep(0)
            rest[2].cancel()  # cancelled while queued for the next batch
            out = await asyncio.gather(first, *rest, return_exceptions=True)
            assert client._state is not None and not client._state.sending
            return out
        finally:
            client.close()
            server.close()

    try:
        out = asyncio.run(run())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert sizes == [1, 1, 3]  # the cancelled one never went
    assert out[0] == keys[0] and isinstance(out[0], bytearray)
    assert out[1] == keys[0] and isinstance(out[2], AccessDenied)
    assert isinstance(out[3], asyncio.CancelledError) and out[4] == keys[2]


@pytest.mark.parametrize("reply", ["close", "too-large", "trailing", "garbage"])
def test_a_transport_failure_fails_its_batch_and_the_next_goes_on(reply: str) -> None:
    home = Path(f"/tmp/sra-{os.urandom(4).hex()}")
    home.mkdir(mode=0o700)
    path = str(home / SOCKET_NAME)
    calls = 0
    key = bytearray(os.urandom(32))

    async def answer(data: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            writer.write(_answers(*[key] * len(decode_release_many(data))))
        elif reply == "close":
            writer.write(b"\x00\x00")  # half a length, then gone
            writer.close()
        elif reply == "too-large":
            writer.write(struct.pack(">I", (16 << 20) + 1))
        elif reply == "trailing":
            frame = _encode_answers([key] * len(decode_release_many(data)))
            writer.write(bytes(frame) + b"\x00")
        else:
            writer.write(struct.pack(">I", 3) + b"\x01\x07\x07")

    async def run() -> list[Any]:
        server = await _fake_agent(path, answer)
        client = AsyncAgentClient(home)
        try:
            failed = await asyncio.gather(client.release(_requests()[0]),
                                          return_exceptions=True)
            ok = await client.release(_requests()[0])
            return [*failed, ok]
        finally:
            client.close()
            server.close()

    try:
        failed, ok = asyncio.run(run())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert type(failed).__name__ == "StrongroomError" and ok == key
    assert key.hex() not in str(failed)


def test_a_burst_of_signals_stops_the_agent(home: Path) -> None:
    # The handler once called Event.set: a second signal arriving inside the first handler's
    # set waited forever on the lock that set held, and the agent hung, unsealed, after its
    # serve was gone (seen after a clean-clone run). Now it only sets a flag.
    pid = AgentClient(home).call("ping")["pid"]
    for _ in range(300):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    if not _exited(pid, 10):
        pytest.fail(f"the agent ({pid}) did not exit after a burst of signals")
    assert not (home / SOCKET_NAME).exists()


def test_the_signal_handler_takes_no_lock(tmp_path: Path) -> None:
    # Deterministic half of the test above: a handler runs between two bytecodes of the
    # main thread, possibly inside another handler's Event.set, which holds the event's
    # lock; a handler that took that lock again would wait forever.
    import threading

    from strongroom.runtime.agent import AgentServer

    server = AgentServer(tmp_path)

    def interrupted_inside_set() -> None:
        with server._stop._cond:  # type: ignore[attr-defined]  # what Event.set holds while it runs
            server._on_signal(signal.SIGTERM, None)

    t = threading.Thread(target=interrupted_inside_set, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "the signal handler blocked on a lock"
    assert server._signalled

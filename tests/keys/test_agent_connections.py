"""The agent protocol on kept-open connections: reuse, a restarted agent, the asyncio client."""

from __future__ import annotations

import asyncio
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
    AsyncAgentClient,
    _encode_answers,
    decode_release_answers,
    decode_release_many,
    encode_release_many,
)
from strongroom.store.db import Store


def _pid(home: Path) -> int | None:
    try:
        lines = (home / LOCK_NAME).read_text().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None


def _stop(home: Path) -> None:
    pid = _pid(home)
    if AgentClient(home, start=False).running():
        AgentClient(home, start=False).call("shutdown")
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return  # our child (AgentClient spawned it here): reaped
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    if pid:
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

    async def counting_open() -> Any:
        nonlocal opened
        opened += 1
        return await real_open()

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

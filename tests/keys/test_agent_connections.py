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

from strongroom.errors import InvalidInput
from strongroom.runtime.agent import (
    LOCK_NAME,
    SOCKET_NAME,
    AgentClient,
    AgentUnavailable,
    AsyncAgentClient,
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

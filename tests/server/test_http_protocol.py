"""Each response's headers and body leave in one write (strongroom.server.http_protocol)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from strongroom.cli.serve_cmd import FAST_HTTP
from strongroom.server.http_protocol import MAX_HELD, CoalescingHttpTools, CoalescingTransport


class Recorder(asyncio.Transport):
    """A transport that records each write (and close/abort) in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8200)}.get(
            name, default)

    def pause_reading(self) -> None:
        self.events.append("pause_reading")

    def resume_reading(self) -> None:
        self.events.append("resume_reading")


async def _step() -> None:
    """Let the loop run what ``call_soon`` scheduled."""
    await asyncio.sleep(0)


def test_writes_of_one_step_leave_together_in_order() -> None:
    async def main() -> None:
        raw = Recorder()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n")
        t.write(memoryview(b"content-length: 2\r\n\r\n"))
        t.write(b"")
        t.writelines([b"o", b"k"])
        assert raw.writes == [] and t.get_write_buffer_size() == 40
        await _step()
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        t.write(b"next")  # a later step: its own write
        await _step()
        assert raw.writes[1:] == [b"next"]

    asyncio.run(main())


def test_large_writes_close_and_abort_keep_order_and_flow() -> None:
    async def main() -> None:
        raw = Recorder()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        big = b"x" * MAX_HELD
        t.write(b"head")
        t.write(big)  # past the bound: what is held goes first, then the big write, now
        assert raw.writes == [b"head", big]
        t.write(b"tail")
        t.close()  # held bytes are sent before the close
        assert raw.events == ["write", "write", "write", "close"] and raw.writes[-1] == b"tail"
        await _step()  # the scheduled end of step finds nothing to send
        assert len(raw.writes) == 3

        raw2 = Recorder()
        t2 = CoalescingTransport(raw2, asyncio.get_running_loop())
        t2.write(b"dropped")
        t2.abort()
        await _step()
        assert raw2.writes == [] and raw2.events == ["abort"]

        raw3 = Recorder()
        t3 = CoalescingTransport(raw3, asyncio.get_running_loop())
        t3.write(b"lost")
        raw3.closing = True  # the peer went away before the step ended
        await _step()
        assert raw3.writes == []

    asyncio.run(main())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await receive()
    body = b'{"file_key":"AAAA"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("requests", [1, 3])
def test_serve_protocol_answers_each_request_with_one_write(requests: int) -> None:
    """The protocol ``strongroom serve`` names, driven as uvicorn drives it: each response
    (status line, headers and body) reaches the socket in a single write."""

    async def main() -> list[bytes]:
        module, _, name = FAST_HTTP.partition(":")
        assert (module, name) == (CoalescingHttpTools.__module__, CoalescingHttpTools.__name__)
        config = Config(app=_app, http=FAST_HTTP, lifespan="off", access_log=False,
                        server_header=False, date_header=False)
        config.load()
        assert config.http_protocol_class is CoalescingHttpTools
        proto = CoalescingHttpTools(config, ServerState(), {}, asyncio.get_running_loop())
        raw = Recorder()
        proto.connection_made(raw)
        for i in range(requests):
            proto.data_received(b"POST /v1/keys/release HTTP/1.1\r\nhost: x\r\n"
                                b"content-length: 2\r\n\r\n{}")
            for _ in range(50):
                await _step()
                if len(raw.writes) > i:
                    break
        for _ in range(5):
            await _step()
        proto.connection_lost(None)
        return raw.writes

    writes = asyncio.run(main())
    assert len(writes) == requests
    for w in writes:
        assert w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b'\r\n\r\n{"file_key":"AAAA"}')

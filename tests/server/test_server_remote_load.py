"""open_weights against a server: full and lazy loads, keys from the server's gate, ranged reads."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world

import strongroom
from strongroom.crypto.age import ENCRYPTED_CHUNK_SIZE
from strongroom.errors import AccessDenied, IntegrityError
from strongroom.server.client import Client, KnownServers
from strongroom.server.remote_vault import RemoteVault

from vault_fixtures import make_model

BIG = "tiny-big"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        for w in build_world(tmp_path_factory.mktemp("remote-load"), http_factory=server):
            path = w.tmp / "big.safetensors"
            w.model.update({f"big:{k}": v for k, v in make_model(path, big=True, seed=7).items()})
            w.ctx.vault(identity=w.officer).import_weights(path, name=BIG, compartments=["atlas"])
            path.unlink()
            yield w
    finally:
        server.stop()


def _remote(world: ServerWorld, who: str = "alice") -> RemoteVault:
    client = Client(str(world.http.base_url), world.people[who],
                    known_servers=KnownServers(world.tmp / f"{who}.known_servers"))
    return RemoteVault(client)


def _count_ranges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every ranged request the clients make from now on."""
    fetched: list[int] = []
    real = Client.byte_range

    def counting(self: Client, path: str, start: int, end: int, total: int) -> bytes:
        fetched.append(end - start)
        return real(self, path, start, end, total)

    monkeypatch.setattr(Client, "byte_range", counting)
    return fetched


def test_full_and_lazy_loads_match_the_model(world: ServerWorld) -> None:
    world.grant_load("alice")
    with _remote(world) as rv:
        with rv.open_weights(ARTIFACT) as w:
            assert set(w) == {k for k in world.model if not k.startswith("big:")}
            for name in w:
                np.testing.assert_array_equal(w[name], world.model[name])
        with rv.open_weights(ARTIFACT, lazy=True) as w:
            np.testing.assert_array_equal(w["layer.0.w"], world.model["layer.0.w"])


def test_a_lazy_tensor_reads_its_chunks_and_little_else(world: ServerWorld,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    world.grant_load("alice", resource=BIG)
    fetched = _count_ranges(monkeypatch)
    with _remote(world) as rv, rv.open_weights(BIG, lazy=True) as w:
        blob = rv.manifest(BIG).files[0].ct_size
        small = w["layer.0.w"]
        np.testing.assert_array_equal(small, world.model["big:layer.0.w"])
    chunks = -(-small.nbytes // (64 << 10)) + 1  # a tensor may straddle a chunk boundary
    assert blob > 10 * ENCRYPTED_CHUNK_SIZE
    assert sum(fetched) <= (chunks + 2) * ENCRYPTED_CHUNK_SIZE, (fetched, blob)


def test_no_grant_is_refused_as_locally(world: ServerWorld) -> None:
    with _remote(world, "bob") as rv, pytest.raises(AccessDenied):
        rv.open_weights(ARTIFACT)


def test_open_weights_follows_strongroom_url(world: ServerWorld, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    world.grant_load("alice")
    ident = tmp_path / "alice.identity"
    world.people["alice"].save(ident)
    for k in [k for k in os.environ if k.startswith("STRONGROOM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("STRONGROOM_URL", str(world.http.base_url))
    monkeypatch.setenv("STRONGROOM_IDENTITY", str(ident))
    monkeypatch.setenv("STRONGROOM_KNOWN_SERVERS", str(tmp_path / "pins"))
    monkeypatch.setenv("STRONGROOM_HOME", str(tmp_path / "no-home"))
    with strongroom.open_weights(ARTIFACT) as w:
        np.testing.assert_array_equal(w["embed.weight"], world.model["embed.weight"])
    assert not (tmp_path / "no-home").exists()


def test_a_full_load_reads_ahead_in_fewer_requests(world: ServerWorld,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each load thread's in-order reads are served from windows 4x their size."""
    import strongroom.crypto.stream as stream
    import strongroom.server.remote_vault as remote_vault

    world.grant_load("alice", resource=BIG)
    monkeypatch.setattr(stream, "FETCH_CHUNKS", 2)  # 128 KiB asks
    monkeypatch.setattr(remote_vault, "READ_AHEAD", 6 * ENCRYPTED_CHUNK_SIZE)
    fetched = _count_ranges(monkeypatch)
    with _remote(world) as rv, rv.open_weights(BIG) as w:
        blob = rv.manifest(BIG).files[0].ct_size
        for name in w:
            np.testing.assert_array_equal(w[name], world.model[f"big:{name}"])
    asks = -(-blob // (2 * ENCRYPTED_CHUNK_SIZE))  # requests without read-ahead
    assert len(fetched) <= asks // 2, (fetched, blob)
    # a thread over-reads at most one window beyond its part (two threads by default)
    assert sum(fetched) <= blob + 2 * 6 * ENCRYPTED_CHUNK_SIZE, (fetched, blob)


# -- the http.client fetch path (Client.byte_range when the client owns its transport) --------

class _Fake(http.server.BaseHTTPRequestHandler):
    """Answers every GET as ``answer`` says; records the request headers."""

    protocol_version = "HTTP/1.1"
    answer: Callable[[_Fake, int, int], None]
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
        type(self).answer(self, int(first), int(last) + 1)

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


BLOB = bytes(range(256)) * 64  # 16 KiB
PATH = "/v1/weights/m/versions/1/blobs/abcdefgh"


@pytest.fixture
def fake(world: ServerWorld) -> Iterator[tuple[type[_Fake], Client]]:
    handler = type("Handler", (_Fake,), {"seen": [], "answer": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = Client(f"http://127.0.0.1:{server.server_address[1]}", world.people["alice"],
                    known_servers=KnownServers(world.tmp / "fake.known_servers"))
    try:
        yield handler, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def _good(h: _Fake, start: int, end: int) -> None:
    h.send(206, BLOB[start:end], {"Content-Range": f"bytes {start}-{end - 1}/{len(BLOB)}"})


def test_the_fetch_path_signs_and_reuses_its_connection(
        fake: tuple[type[_Fake], Client]) -> None:
    handler, client = fake
    handler.answer = _good
    connections: list[object] = []
    real = http.client.HTTPConnection.connect

    def connect(self: http.client.HTTPConnection) -> None:
        connections.append(self)
        real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(http.client.HTTPConnection, "connect", connect)
        assert client.byte_range(PATH, 0, 100, len(BLOB)) == BLOB[:100]
        assert client.byte_range(PATH, 100, len(BLOB), len(BLOB)) == BLOB[100:]
    assert len(connections) == 1  # keep-alive
    first, second = handler.seen
    for seen in (first, second):
        assert 'tag="strongroom"' in seen["Signature-Input"] and seen["Signature"]
        assert seen["Content-Digest"].startswith("sha-256=")
    assert first["Signature"] != second["Signature"]  # a fresh nonce each request


@pytest.mark.parametrize("answer", [
    pytest.param(lambda h, s, e: h.send(206, BLOB[s:e], {
        "Content-Range": f"bytes {s + 1}-{e}/{len(BLOB)}"}), id="wrong Content-Range"),
    pytest.param(lambda h, s, e: h.send(206, BLOB[s:e], {
        "Content-Range": f"bytes {s}-{e - 1}/{len(BLOB) + 1}"}), id="wrong total"),
    pytest.param(lambda h, s, e: h.send(200, BLOB, {}), id="200 with the whole blob"),
    pytest.param(lambda h, s, e: h.send(206, BLOB[s:e - 1], {
        "Content-Range": f"bytes {s}-{e - 1}/{len(BLOB)}"}), id="short body"),
    pytest.param(lambda h, s, e: h.send(206, BLOB[s:e + 1], {
        "Content-Range": f"bytes {s}-{e - 1}/{len(BLOB)}"}), id="long body"),
    pytest.param(lambda h, s, e: (h.send(206, b"", {
        "Content-Range": f"bytes {s}-{e - 1}/{len(BLOB)}", "Content-Length": str(e - s)}),
        h.wfile.write(BLOB[s:e - 7]), h.wfile.flush(),
        h.connection.shutdown(socket.SHUT_RDWR)),
        id="connection closed mid-body"),
])
def test_the_fetch_path_refuses_a_wrong_range(fake: tuple[type[_Fake], Client],
                                              answer: Callable[[_Fake, int, int], None]) -> None:
    handler, client = fake
    handler.answer = answer
    with pytest.raises(IntegrityError, match="did not return the byte range asked for"):
        client.byte_range(PATH, 10, 1000, len(BLOB))
    handler.answer = _good  # the refused connection is not reused for the next request
    assert client.byte_range(PATH, 10, 1000, len(BLOB)) == BLOB[10:1000]


def test_the_fetch_path_raises_the_servers_error(fake: tuple[type[_Fake], Client]) -> None:
    handler, client = fake
    body = json.dumps({"error": "no Grant", "type": "AccessDenied", "object": "m@1",
                       "remedy": "ask"}).encode()
    handler.answer = lambda h, s, e: h.send(403, body, {"Content-Type": "application/json"})
    with pytest.raises(AccessDenied, match="no Grant") as info:
        client.byte_range(PATH, 0, 10, len(BLOB))
    assert info.value.remedy == "ask"


def test_the_fetch_path_reconnects_when_the_server_closed_an_idle_connection(
        fake: tuple[type[_Fake], Client]) -> None:
    handler, client = fake

    def then_close(h: _Fake, start: int, end: int) -> None:
        _good(h, start, end)
        h.close_connection = True  # without saying "Connection: close"

    handler.answer = then_close
    assert client.byte_range(PATH, 0, 10, len(BLOB)) == BLOB[:10]
    time.sleep(0.1)
    assert client.byte_range(PATH, 10, 20, len(BLOB)) == BLOB[10:20]
    assert len({s["Signature"] for s in handler.seen}) == len(handler.seen)


def test_an_injected_transport_keeps_httpx(world: ServerWorld) -> None:
    client = Client(str(world.http.base_url), world.people["alice"], http=world.http,
                    known_servers=KnownServers(world.tmp / "alice.known_servers"))
    assert client._fetcher is None
    m = client.verified_manifest(ARTIFACT)
    entry = m.files[0]
    world.grant_load("alice")
    data = client.byte_range(f"/v1/weights/{m.name}/versions/{m.version}/blobs/{entry.blob}",
                             0, 100, entry.ct_size)
    assert len(data) == 100

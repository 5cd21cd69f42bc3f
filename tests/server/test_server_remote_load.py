"""open_weights against a server: full and lazy loads, keys from the server's gate, ranged reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world

import strongroom
from strongroom.crypto.age import ENCRYPTED_CHUNK_SIZE
from strongroom.errors import AccessDenied
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

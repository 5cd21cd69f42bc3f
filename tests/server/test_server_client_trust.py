"""The client trusts manifests only under a pinned key, and reads shards by range."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_kit import ARTIFACT, ServerWorld, build_world

from strongroom.errors import IntegrityError
from strongroom.server.client import Client, KnownServers, ServerKeyChanged
from strongroom.vault.manifest import Manifest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("trust"))


@pytest.fixture(scope="module")
def grant(world: ServerWorld) -> str:
    return world.grant_load()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _vault_key(world: ServerWorld) -> str:
    return _b64(world.ctx.keys.public_keys()["manifest"])


class ForgingClient(Client):
    """A client whose server is compromised: it forges the manifest response."""

    forge: Any = None

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        out = super().manifest(name, version)
        return dict(self.forge(out)) if self.forge is not None else out


def _client(world: ServerWorld, tmp: Path, cls: type[Client] = Client, **kw: Any) -> Any:
    return cls(str(world.http.base_url), world.people["alice"], http=world.http,
               known_servers=KnownServers(tmp / "known_servers"), **kw)


def test_first_use_pins_the_key_and_a_changed_key_is_refused(world: ServerWorld, grant: str,
                                                             tmp_path: Path) -> None:
    client = _client(world, tmp_path)
    assert client.verify(ARTIFACT, purpose="load")[0] == f"{ARTIFACT}@1"
    line = (tmp_path / "known_servers").read_text().split()
    assert line == [str(world.http.base_url), "ed25519", _vault_key(world)]
    assert (tmp_path / "known_servers").stat().st_mode & 0o077 == 0
    # the same server again: accepted without a new line
    _client(world, tmp_path).verified_manifest(ARTIFACT)
    assert len((tmp_path / "known_servers").read_text().splitlines()) == 1

    forger = Ed25519PrivateKey.generate()

    def forge(out: dict[str, Any]) -> dict[str, Any]:
        m = Manifest.verify(out["envelope"], _pub(world), obj="genuine")
        return {**out, "envelope": m.sign(forger),
                "manifest_key": _b64(forger.public_key().public_bytes_raw())}

    forging = _client(world, tmp_path, ForgingClient)
    forging.forge = forge
    before = world.audit_size()
    with pytest.raises(ServerKeyChanged, match="changed since it was first seen") as err:
        forging.verify(ARTIFACT, purpose="load")
    assert "known_servers" in str(err.value.obj) and err.value.remedy
    assert world.audit_size() == before  # refused before any key was asked for


def _pub(world: ServerWorld) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(world.ctx.keys.public_keys()["manifest"])


def test_a_tampered_manifest_fails_its_signature(world: ServerWorld, grant: str,
                                                 tmp_path: Path) -> None:
    import json

    def tamper(out: dict[str, Any]) -> dict[str, Any]:
        env = json.loads(out["envelope"])
        payload = json.loads(base64.b64decode(env["payload"]))
        payload["files"][0]["sha256"] = "0" * 64
        env["payload"] = _b64(json.dumps(payload).encode())
        return {**out, "envelope": json.dumps(env)}

    forging = _client(world, tmp_path, ForgingClient)
    forging.forge = tamper
    with pytest.raises(IntegrityError):
        forging.verify(ARTIFACT, purpose="load")


def test_pinned_key_from_the_environment(world: ServerWorld, grant: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    other = _b64(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    monkeypatch.setenv("STRONGROOM_MANIFEST_KEY", other)
    with pytest.raises(IntegrityError, match="not signed by the pinned manifest key"):
        _client(world, tmp_path).verified_manifest(ARTIFACT)
    assert not (tmp_path / "known_servers").exists()  # a pinned key skips trust on first use
    monkeypatch.setenv("STRONGROOM_MANIFEST_KEY", _vault_key(world))
    assert _client(world, tmp_path).verified_manifest(ARTIFACT).name == ARTIFACT
    assert world.client("alice").get("/v1/sys/public-keys").json()["manifest"] == \
        _vault_key(world)


def test_verify_reads_the_shard_in_ranges(world: ServerWorld, grant: str,
                                          tmp_path: Path) -> None:
    ranges: list[str] = []

    def spy(request: httpx.Request) -> None:
        if "/blobs/" in request.url.path:
            ranges.append(request.headers.get("range", "whole"))

    world.http.event_hooks["request"].append(spy)
    try:
        client = _client(world, tmp_path)
        client.range_size = 4096
        _ref, _files, nbytes = client.verify(ARTIFACT, purpose="load")
    finally:
        world.http.event_hooks["request"].remove(spy)
    m = client.verified_manifest(ARTIFACT)
    ct_size = m.files[0].ct_size
    assert nbytes == m.files[0].size and ct_size > 3 * 4096
    assert "whole" not in ranges and len(ranges) == -(-ct_size // 4096)
    assert ranges[0] == "bytes=0-4095"


def test_blob_ranges_on_the_server(world: ServerWorld) -> None:
    m = world.client("alice").get(f"/v1/weights/{ARTIFACT}/manifest").json()["manifest"]
    f = m["files"][0]
    path = f"/v1/weights/{ARTIFACT}/versions/1/blobs/{f['blob']}"
    whole = world.client("alice").get(path)
    assert whole.status_code == 200 and len(whole.content) == f["ct_size"]
    part = world.client("alice").get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{f['ct_size']}"
    tail = world.client("alice").get(path, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole.content[-5:]
    for bad in (f"bytes={f['ct_size']}-", "bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=x"):
        r = world.client("alice").get(path, headers={"Range": bad})
        assert r.status_code == 416, (bad, r.text)
        assert "Range" in (r.json()["object"] or "")

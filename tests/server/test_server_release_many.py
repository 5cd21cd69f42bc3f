"""``POST /v1/keys/release-many``: every shard of a model under one load evidence, over a
real uvicorn socket; each shard released, refused, charged and audited on its own."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from server_kit import ServerWorld, UvicornThread, build_world, server_db  # noqa: F401

from strongroom.access.evidence import make_evidence, make_load_evidence
from strongroom.errors import AccessDenied, NotFound, ServerError
from strongroom.server.client import Client, KnownServers
from strongroom.server.models import KeyReleaseManyOut
from strongroom.server.remote_vault import RemoteVault

from vault_fixtures import make_model

MULTI = "multi"
SHARDS = 3


def _with_multi(worlds: Iterator[ServerWorld]) -> Iterator[ServerWorld]:
    """Each world with the artifact MULTI of SHARDS shards imported too."""
    for w in worlds:
        src = w.tmp / "multi"
        src.mkdir()
        for i in range(SHARDS):
            w.model.update(make_model(src / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors",
                                      seed=i, prefix=f"s{i}."))
        w.ctx.vault(identity=w.officer).import_weights(src, name=MULTI, compartments=["atlas"])
        yield w


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from _with_multi(build_world(tmp_path_factory.mktemp("release-many"),
                                           http_factory=server, db_url=server_db))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agent_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    """The worker layout: keys in the local key agent (see test_server_workers)."""
    tmp = tmp_path_factory.mktemp("release-many-agent")
    server = UvicornThread()
    with pytest.MonkeyPatch.context() as mp:  # the agent finds the world's home and database
        for name, value in (("STRONGROOM_HOME", tmp / "home"),
                            ("STRONGROOM_DATABASE_URL", f"sqlite:///{tmp / 'sr.db'}")):
            mp.setenv(name, str(value))
        mp.delenv("STRONGROOM_IDENTITY", raising=False)
        try:
            yield from _with_multi(build_world(tmp, http_factory=server, agent=True))
        finally:
            server.stop()


def _client(world: ServerWorld, who: str = "alice") -> Client:
    return Client(str(world.http.base_url), world.people[who],
                  known_servers=KnownServers(world.tmp / f"{who}.known_servers"))


def _shards(world: ServerWorld) -> tuple[str, list[tuple[str, str]]]:
    """The multi-shard artifact's ref and its (shard path, blob id) pairs."""
    with _client(world) as c:
        m = c.verified_manifest(MULTI)
    assert len(m.files) == SHARDS
    return m.ref, [(f.path, f.blob) for f in m.files]


def _release_many(world: ServerWorld, ref: str, paths: list[str], evidence: str,
                  who: str = "alice") -> Any:
    return world.client(who).post("/v1/keys/release-many", {
        "artifact": ref, "shards": paths, "purpose": "load", "evidence": evidence})


def _load_evidence(world: ServerWorld, ref: str, shards: list[tuple[str, str]],
                   who: str = "alice") -> str:
    return make_load_evidence(world.people[who].private_key, artifact=ref, shards=shards,
                              purpose="load")


def _releases(world: ServerWorld, since: int) -> list[Any]:
    return [e for e in world.ctx.audit().events(since) if e.action == "key.release"]


def _count_posts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every POST the clients make from now on."""
    posted: list[str] = []
    real = Client.post

    def counting(self: Client, path: str, body: Any = None, **kw: Any) -> Any:
        posted.append(path)
        return real(self, path, body, **kw)

    monkeypatch.setattr(Client, "post", counting)
    return posted


def test_every_shard_of_a_model_in_one_request_each_audited(world: ServerWorld) -> None:
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    before = world.audit_size()
    r = _release_many(world, ref, [p for p, _ in reversed(shards)],
                      _load_evidence(world, ref, shards))
    assert r.status_code == 200, r.text
    out = KeyReleaseManyOut.model_validate_json(r.content)
    assert out.artifact == ref
    assert [(k.shard, k.blob) for k in out.keys] == list(reversed(shards))  # in request order
    assert all(k.error is None and k.file_key for k in out.keys)
    assert len({k.file_key for k in out.keys}) == SHARDS  # one file key per shard
    allowed = [e for e in _releases(world, before) if e.decision == "allow"]
    assert sorted(e.shard for e in allowed) == sorted(p for p, _ in shards)
    assert {e.actor for e in allowed} == {"alice"}
    assert all(e.object.startswith(ref) for e in allowed)


def test_each_key_decrypts_its_own_shard(world: ServerWorld) -> None:
    world.grant_load("alice", resource=MULTI)
    with _client(world) as c:
        m = c.verified_manifest(MULTI)
        keys = c.release_many(m.ref, [(f.path, f.blob) for f in m.files], "load")
        assert len(keys) == SHARDS
        for entry, key in zip(m.files, keys, strict=True):
            with c.open_reader(m, entry, "load", file_key=key) as reader:
                digest = hashlib.sha256()
                for i in range(reader.num_chunks):
                    digest.update(reader.decrypt_chunk(i))
            assert digest.hexdigest() == entry.sha256
            assert not any(key)  # zeroed once the reader held it


def test_the_same_evidence_again_is_refused_per_shard(world: ServerWorld) -> None:
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    evidence = _load_evidence(world, ref, shards)
    paths = [p for p, _ in shards]
    assert _release_many(world, ref, paths, evidence).status_code == 200
    before = world.audit_size()
    again = _release_many(world, ref, paths, evidence)
    assert again.status_code == 200, again.text
    items = again.json()["keys"]
    assert [i["shard"] for i in items] == paths
    for item in items:
        assert item.get("file_key") is None
        assert item["error"]["type"] == "AccessDenied" and "replay" in item["error"]["error"]
        assert set(item["error"]) == {"error", "object", "remedy", "type"}
    denied = [e for e in _releases(world, before) if e.decision == "deny"]
    assert sorted(e.shard for e in denied) == sorted(paths)


def test_a_shard_released_alone_is_refused_in_the_batch(world: ServerWorld) -> None:
    """One evidence for A and B: A through /keys/release, then A and B together."""
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    (a, _), (b, _) = shards[0], shards[1]
    evidence = _load_evidence(world, ref, shards[:2])
    alone = world.client("alice").post("/v1/keys/release", {
        "artifact": ref, "shard": a, "purpose": "load", "evidence": evidence})
    assert alone.status_code == 200, alone.text
    r = _release_many(world, ref, [a, b], evidence)
    assert r.status_code == 200, r.text
    first, second = r.json()["keys"]
    assert first["shard"] == a and "replay" in first["error"]["error"]
    assert first.get("file_key") is None
    assert second["shard"] == b and second.get("error") is None and second["file_key"]


def test_a_shard_the_evidence_does_not_name_is_refused(world: ServerWorld) -> None:
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    (a, _), (b, _) = shards[0], shards[1]
    r = _release_many(world, ref, [a, b], _load_evidence(world, ref, shards[:1]))
    assert r.status_code == 200, r.text
    first, second = r.json()["keys"]
    assert first["file_key"] and first.get("error") is None
    assert second.get("file_key") is None and second["error"]["type"] == "AccessDenied"
    # per-shard evidence for A does not release B either
    single = make_evidence(world.people["alice"].private_key, artifact=ref, shard=a,
                           blob_id=shards[0][1], purpose="load")
    r = _release_many(world, ref, [b], single)
    assert r.json()["keys"][0]["error"]["type"] == "AccessDenied"


def test_an_unknown_shard_refuses_the_request_before_any_release(world: ServerWorld) -> None:
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    evidence = _load_evidence(world, ref, shards)
    before = world.audit_size()
    r = _release_many(world, ref, [shards[0][0], "no-such.safetensors"], evidence)
    assert r.status_code == 404, r.text
    assert r.json()["type"] == "NotFound" and "no-such.safetensors" in r.json()["object"]
    assert _releases(world, before) == []  # nothing decided, nothing audited
    # nothing was spent: the same evidence still releases the shard
    ok = _release_many(world, ref, [shards[0][0]], evidence)
    assert ok.json()["keys"][0]["file_key"]


def test_malformed_bodies_are_refused_like_the_other_routes(world: ServerWorld) -> None:
    ref, shards = _shards(world)
    evidence = _load_evidence(world, ref, shards)
    a = shards[0][0]
    for paths in ([], [a, a], [""]):
        r = _release_many(world, ref, paths, evidence)
        assert r.status_code == 422, (paths, r.text)
    r = world.client("alice").post("/v1/keys/release-many", {"artifact": ref, "shards": [a]})
    assert r.status_code == 422
    r = _release_many(world, MULTI, [a], evidence)  # no version
    assert r.status_code == 400 and r.json()["type"] == "InvalidInput"
    unsigned = world.client(None).post("/v1/keys/release-many", {
        "artifact": ref, "shards": [a], "purpose": "load", "evidence": evidence})
    assert unsigned.status_code == 401


def test_each_shard_is_charged_to_the_grant(world: ServerWorld) -> None:
    """A byte budget for two of the shards: the third is refused, the others released."""
    ref, shards = _shards(world)
    with _client(world) as c:
        sizes = [f.size for f in c.verified_manifest(MULTI).files]
    world.enroll("frank", ("requesters",))  # his only Grant: the one below
    world.grant_load("frank", resource=MULTI, byte_budget=sizes[0] + sizes[1])
    r = _release_many(world, ref, [p for p, _ in shards],
                      _load_evidence(world, ref, shards, who="frank"), who="frank")
    assert r.status_code == 200, r.text
    first, second, third = r.json()["keys"]
    assert first["file_key"] and second["file_key"]
    assert third.get("file_key") is None
    assert third["error"]["type"] == "GrantBudgetSpent", third  # the Grant's bytes, per shard


def test_the_client_raises_a_shards_refusal_and_keeps_no_key(
        world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.grant_load("alice", resource=MULTI)
    _, shards = _shards(world)
    handed: list[bytearray] = []
    real = bytearray

    with _client(world) as c:
        m = c.verified_manifest(MULTI)
        evidence_for = make_load_evidence

        def narrow(key: Any, **kw: Any) -> str:  # names only the first shard
            return evidence_for(key, **{**kw, "shards": kw["shards"][:1]})

        monkeypatch.setattr("strongroom.access.evidence.make_load_evidence", narrow)
        import strongroom.server.client as client_module

        def keep(*a: Any) -> bytearray:
            out = real(*a)
            handed.append(out)
            return out

        monkeypatch.setattr(client_module, "bytearray", keep, raising=False)
        with pytest.raises(AccessDenied):
            c.release_many(m.ref, shards, "load")
    assert handed and all(not any(k) for k in handed)  # the first shard's key was zeroed


def test_a_full_remote_load_asks_once_and_a_lazy_one_per_shard(
        world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.grant_load("alice", resource=MULTI)
    posted = _count_posts(monkeypatch)
    before = world.audit_size()
    with RemoteVault(_client(world)) as rv, rv.open_weights(MULTI) as w:
        assert set(w) == {k for k in world.model if k[:3] in ("s0.", "s1.", "s2.")}
        for name in w:
            np.testing.assert_array_equal(w[name], world.model[name])
    assert posted == ["/v1/keys/release-many"]
    assert len([e for e in _releases(world, before) if e.decision == "allow"]) == SHARDS
    posted.clear()
    with RemoteVault(_client(world)) as rv, rv.open_weights(MULTI, lazy=True) as w:
        np.testing.assert_array_equal(w["s1.layer.0.w"], world.model["s1.layer.0.w"])
    assert posted == ["/v1/keys/release"]


def test_a_full_load_from_a_server_without_the_route_goes_shard_by_shard(
        world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.grant_load("alice", resource=MULTI)
    real = Client.post
    with _client(world) as c, pytest.raises(ServerError, match="HTTP 404"):
        real(c, "/v1/keys/no-such-route", {})  # what an older server answers
    posted: list[str] = []

    def older(self: Client, path: str, body: Any = None, **kw: Any) -> Any:
        posted.append(path)
        if path == "/v1/keys/release-many":
            path = "/v1/keys/no-such-route"
        return real(self, path, body, **kw)

    monkeypatch.setattr(Client, "post", older)
    with RemoteVault(_client(world)) as rv, rv.open_weights(MULTI) as w:
        np.testing.assert_array_equal(w["s2.embed.weight"], world.model["s2.embed.weight"])
    assert posted == ["/v1/keys/release-many"] + ["/v1/keys/release"] * SHARDS
    with _client(world) as c, pytest.raises(NotFound, match="release-many"):
        c.release_many(*_shards(world), "load")


def test_a_full_load_refused_by_the_gate_raises_its_error(
        world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """eve has no Grant: one request, every shard refused, its error raised as its class."""
    posted = _count_posts(monkeypatch)
    with RemoteVault(_client(world, "eve")) as rv, pytest.raises(AccessDenied):
        rv.open_weights(MULTI)
    assert posted == ["/v1/keys/release-many"]


def test_cached_shards_are_released_together_on_the_event_loop(
        agent_world: ServerWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the manifest and headers cached, the agent's releases are awaited together
    (one release_many to the agent); replaying the evidence is refused per shard there."""
    from strongroom.runtime.agent_async import AsyncAgentClient

    world = agent_world
    assert not world.ctx.in_process
    world.grant_load("alice", resource=MULTI)
    ref, shards = _shards(world)
    paths = [p for p, _ in shards]
    first = _release_many(world, ref, paths, _load_evidence(world, ref, shards))  # fills caches
    assert first.status_code == 200, first.text
    batches: list[int] = []
    real = AsyncAgentClient._next

    def counting(self: AsyncAgentClient, state: Any) -> None:
        batches.append(len(state.queued))
        real(self, state)

    monkeypatch.setattr(AsyncAgentClient, "_next", counting)
    world.ctx.keys._async = None  # type: ignore[union-attr]
    evidence = _load_evidence(world, ref, shards)
    r = _release_many(world, ref, paths, evidence)
    assert r.status_code == 200, r.text
    assert world.ctx.keys._async is not None  # type: ignore[union-attr]  # the event-loop path
    assert SHARDS in batches  # the shards went to the agent as one batch
    keys = [k["file_key"] for k in r.json()["keys"]]
    assert keys == [k["file_key"] for k in first.json()["keys"]]  # each shard's own key
    assert len(set(keys)) == SHARDS
    again = _release_many(world, ref, paths, evidence)
    assert again.status_code == 200
    assert all("replay" in k["error"]["error"] for k in again.json()["keys"])

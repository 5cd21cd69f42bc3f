"""The database nonce cache (table ``server_nonces``) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from strongroom.errors import InvalidInput
from strongroom.server.nonce_table import SharedNonceTable
from strongroom.server.signatures import MemoryNonceCache, default_nonce_cache
from strongroom.store.db import Store
from strongroom.store.nonces import StoreNonceCache
from strongroom.store.tables.server import ServerNonce

N = "n" * 24


def _rows(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(ServerNonce)) or 0)


def test_spent_once_until_the_window_closes(store: Store) -> None:
    cache = StoreNonceCache(store)
    other_host = StoreNonceCache(store)
    assert cache.spend("k1", N, expires=100.0, now=50.0)
    assert not other_host.spend("k1", N, expires=100.0, now=60.0)
    assert not cache.spend("k1", N, expires=100.0, now=99.0)
    assert other_host.spend("k2", N, expires=100.0, now=60.0)  # another signer's nonce
    assert other_host.spend("k1", N, expires=300.0, now=200.0)  # the old window closed
    assert not cache.spend("k1", N, expires=300.0, now=201.0)
    cache.close()
    other_host.close()


def test_expired_rows_are_pruned(store: Store) -> None:
    cache = StoreNonceCache(store, prune_every_s=10.0)
    for i in range(5):
        assert cache.spend("k", f"{N}{i}", expires=100.0, now=50.0)
    assert _rows(store) == 5
    assert cache.spend("k", N + "late", expires=300.0, now=200.0)
    assert _rows(store) == 1
    cache.close()


def test_default_cache_follows_the_database(store: Store, tmp_path: object,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.delenv("STRONGROOM_SERVER_NONCES", raising=False)
    host_file = Path(str(tmp_path)) / "n.map"
    if store.dialect == "postgresql":
        assert isinstance(default_nonce_cache(store), StoreNonceCache)
        assert isinstance(default_nonce_cache(store, shared_host=host_file), StoreNonceCache)
    else:
        assert isinstance(default_nonce_cache(store), MemoryNonceCache)
        assert isinstance(default_nonce_cache(store, shared_host=host_file), SharedNonceTable)
    monkeypatch.setenv("STRONGROOM_SERVER_NONCES", "database")
    assert isinstance(default_nonce_cache(store), StoreNonceCache)
    monkeypatch.setenv("STRONGROOM_SERVER_NONCES", "host")
    with pytest.raises(InvalidInput, match="several workers"):
        default_nonce_cache(store)
    monkeypatch.setenv("STRONGROOM_SERVER_NONCES", "redis")
    with pytest.raises(InvalidInput, match="unknown nonce cache"):
        default_nonce_cache(store)


def test_only_local_caches_with_a_cached_caller_verify_on_the_event_loop(store: Store) -> None:
    from strongroom.server.signatures import RequestVerifier

    class Lookup:
        def __init__(self) -> None:
            self.known: set[str] = set()

        def __call__(self, kid: str) -> object:
            raise AssertionError("not called")

        def cached(self, kid: str) -> bool:
            return kid in self.known

    lookup = Lookup()
    local = RequestVerifier(lookup, MemoryNonceCache())  # type: ignore[arg-type]
    shared = RequestVerifier(lookup, StoreNonceCache(store))  # type: ignore[arg-type]
    assert not local.inline_ok("k1")  # a lookup would reach the directory
    lookup.known.add("k1")
    assert local.inline_ok("k1") and not local.inline_ok("")
    assert not shared.inline_ok("k1")  # a database round trip stays off the event loop


# -- PostgreSQL: the cache's own connections, and spend_async on a server's event loop ------


def _postgres(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("spend_async and the cache's own connections are PostgreSQL's")


def test_sqlite_offers_no_async_spend(store: Store) -> None:
    import asyncio

    if store.dialect != "sqlite":
        pytest.skip("the SQLite side")
    cache = StoreNonceCache(store)
    assert not cache.asynchronous
    with pytest.raises(InvalidInput, match="PostgreSQL"):
        asyncio.run(cache.spend_async("k1", N, expires=100.0, now=50.0))


def test_async_spends_once_across_hosts_and_with_the_blocking_path(store: Store) -> None:
    import asyncio

    _postgres(store)
    cache, other_host = StoreNonceCache(store), StoreNonceCache(store)
    assert cache.asynchronous

    async def run() -> None:
        assert await cache.spend_async("k1", N, expires=100.0, now=50.0)
        assert not await other_host.spend_async("k1", N, expires=100.0, now=60.0)
        assert not other_host.spend("k1", N, expires=100.0, now=61.0)  # the blocking path too
        assert other_host.spend("k1", N + "x", expires=100.0, now=61.0)
        assert not await cache.spend_async("k1", N + "x", expires=100.0, now=62.0)
        assert await cache.spend_async("k2", N, expires=100.0, now=62.0)  # another signer's
        assert await cache.spend_async("k1", N, expires=300.0, now=200.0)  # the window closed
        assert not await other_host.spend_async("k1", N, expires=300.0, now=201.0)
        await cache.aclose()
        await other_host.aclose()

    asyncio.run(run())
    asyncio.run(run_again(cache))  # a new event loop: new connections, the same table
    cache.close()
    other_host.close()


async def run_again(cache: StoreNonceCache) -> None:
    assert not await cache.spend_async("k1", N, expires=300.0, now=202.0)
    await cache.aclose()


def test_async_spend_prunes_expired_rows(store: Store) -> None:
    import asyncio

    _postgres(store)
    cache = StoreNonceCache(store, prune_every_s=10.0)

    async def run() -> None:
        for i in range(5):
            assert await cache.spend_async("k", f"{N}{i}", expires=100.0, now=50.0)
        assert _rows(store) == 5
        assert await cache.spend_async("k", N + "late", expires=300.0, now=200.0)
        assert _rows(store) == 1
        await cache.aclose()

    asyncio.run(run())


def test_an_async_spend_finishes_when_its_caller_is_cancelled(store: Store) -> None:
    import asyncio

    _postgres(store)
    cache = StoreNonceCache(store)

    async def run() -> None:
        task = asyncio.ensure_future(cache.spend_async("k", N, expires=100.0, now=50.0))
        await asyncio.sleep(0)  # it has started: the shielded spend is under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the spend goes on without its caller
            if _rows(store) == 1:
                break
            await asyncio.sleep(0.01)
        assert not await cache.spend_async("k", N, expires=100.0, now=51.0)
        await cache.aclose()

    asyncio.run(run())


def test_nonce_connections_commit_without_waiting_for_the_wal_flush(store: Store) -> None:
    """The documented trade (store/nonces.py): only these connections, not the store's."""
    import asyncio

    from sqlalchemy import text

    _postgres(store)
    cache = StoreNonceCache(store)
    assert cache.spend("k", N, expires=100.0, now=50.0)
    assert cache._idle[0].execute("SHOW synchronous_commit").fetchone() == ("off",)

    async def run() -> None:
        assert await cache.spend_async("k", N + "a", expires=100.0, now=50.0)
        assert cache._loop is not None and cache._loop.conn is not None
        cur = await cache._loop.conn.execute("SHOW synchronous_commit")
        assert await cur.fetchone() == ("off",)
        await cache.aclose()

    asyncio.run(run())
    with store.engine.connect() as conn:  # the audit log's and everything else's: untouched
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    cache.close()
    assert not cache._idle


def test_an_unreachable_database_is_a_storage_error(store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from strongroom.errors import StorageError

    from cli_fixtures import free_port

    _postgres(store)
    cache = StoreNonceCache(store)
    args = dict(cache._connect_args(), port=free_port(), connect_timeout=2)
    monkeypatch.setattr(cache, "_connect_args", lambda: args)
    with pytest.raises(StorageError, match="request nonce") as refused:
        cache.spend("k", N, expires=100.0, now=50.0)
    assert refused.value.obj == "server_nonces"
    with pytest.raises(StorageError, match="request nonce"):
        asyncio.run(cache.spend_async("k", N, expires=100.0, now=50.0))
    assert _rows(store) == 0 and not cache._idle
    cache.close()


def test_a_replay_to_another_host_is_refused_on_the_event_loop(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers' middleware on one PostgreSQL database, each with its own cache: the
    second refuses the first's request; the spend is awaited on the loop (no thread)."""
    from fastapi.testclient import TestClient
    from starlette.types import Receive, Scope, Send

    from strongroom.crypto.dsse import key_id
    from strongroom.keys.identity import Identity
    from strongroom.server.auth import SignedRequestMiddleware
    from strongroom.server.signatures import Caller, RequestVerifier, sign_request

    _postgres(store)
    me = Identity.generate("alice")
    caller = Caller(key_id(me.public.public_key), "alice", me.public.public_key)

    class Lookup:
        def __call__(self, kid: str) -> Caller:
            assert kid == caller.key_id
            return caller

        def cached(self, kid: str) -> bool:
            return kid == caller.key_id

    async def whoami(scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["state"]["caller"].name.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name})

    def blocking(*_: object) -> bool:
        raise AssertionError("the blocking spend was used")

    hosts, caches = [], []
    for _ in range(2):
        cache = StoreNonceCache(store)
        caches.append(cache)
        monkeypatch.setattr(cache, "spend", blocking)
        hosts.append(TestClient(SignedRequestMiddleware(whoami,
                                                        RequestVerifier(Lookup(), cache))))
    headers = sign_request(me.private_key, "GET", "/v1/whoami")
    first = hosts[0].get("/v1/whoami", headers=headers)
    assert first.status_code == 200 and first.text == "alice"
    again = hosts[1].get("/v1/whoami", headers=headers)
    assert again.status_code == 401 and "replayed" in again.json()["error"]
    assert hosts[0].get("/v1/whoami", headers=headers).status_code == 401
    fresh = sign_request(me.private_key, "GET", "/v1/whoami")
    assert hosts[1].get("/v1/whoami", headers=fresh).status_code == 200
    for cache in caches:
        cache.close()


def test_concurrent_async_spends_share_a_round_trip_and_keep_their_answers(
        store: Store) -> None:
    """Spends asked for while a batch is out go together; a nonce twice in one batch is
    spent by the first, and each caller gets its own answer."""
    import asyncio

    _postgres(store)
    cache = StoreNonceCache(store)
    assert cache.spend("k", N + "old", expires=100.0, now=50.0)
    batches: list[int] = []
    run_batch = cache._run

    async def counted(state: object, spends: list[tuple[str, str, float, float]]
                      ) -> list[bool]:
        batches.append(len(spends))
        return await run_batch(state, spends)  # type: ignore[arg-type]

    cache._run = counted  # type: ignore[method-assign]

    async def run() -> list[bool]:
        names = [N + "a", N + "b", N + "a", N + "old", N + "c"] * 2
        try:
            return list(await asyncio.gather(*(cache.spend_async("k", n, expires=100.0,
                                                                 now=60.0) for n in names)))
        finally:
            await cache.aclose()

    assert asyncio.run(run()) == [True, True, False, False, True] + [False] * 5
    assert batches == [10]  # all asked for in one turn of the loop: one round trip
    assert _rows(store) == 4
    cache.close()

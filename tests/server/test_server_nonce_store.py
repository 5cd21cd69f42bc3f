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


def test_expired_rows_are_pruned(store: Store) -> None:
    cache = StoreNonceCache(store, prune_every_s=10.0)
    for i in range(5):
        assert cache.spend("k", f"{N}{i}", expires=100.0, now=50.0)
    assert _rows(store) == 5
    assert cache.spend("k", N + "late", expires=300.0, now=200.0)
    assert _rows(store) == 1


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

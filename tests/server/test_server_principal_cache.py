"""The caller cache of signed requests: one lookup per expiry, and forget() wins over a lookup in flight.

When a caller's cached entry expires, every request in flight for that key
misses at once; each used to read and verify the directory itself (about 8 ms
of CPU each on the evaluation machine). Now one looks up and the others take
its answer. A revocation published while a lookup runs (``forget()``) must not
be undone by that lookup filling the cache with the caller it read before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto.dsse import key_id
from strongroom.server.auth import PrincipalKeys
from strongroom.server.errors import Unauthenticated
from strongroom.server.signatures import Caller

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY.public_key())


class _Keys(PrincipalKeys):
    """PrincipalKeys whose directory lookup is counted and can be held open."""

    def __init__(self, *, revoked: bool = False, ttl_s: float = 60.0) -> None:
        super().__init__(ctx=None, ttl_s=ttl_s)  # type: ignore[arg-type]  # _lookup is ours
        self.lookups = 0
        self.revoked = revoked
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def _lookup(self, kid: str) -> Caller:
        self.lookups += 1
        self.entered.set()
        self.release.wait(10)
        if self.revoked:
            raise Unauthenticated(f"key {kid} has been revoked", obj=f"key {kid}")
        time.sleep(0.05)  # long enough for the other threads to miss too
        return Caller(kid, "alice", KEY.public_key())


def _in_threads(n: int, fn: Any) -> list[Any]:
    out: list[Any] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            r = fn()
        except Exception as exc:  # collected: the test checks each outcome
            r = exc
        with lock:
            out.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_concurrent_misses_share_one_lookup() -> None:
    keys = _Keys()
    results = _in_threads(8, lambda: keys(KID))
    assert [r.name for r in results] == ["alice"] * 8
    assert keys.lookups == 1
    assert keys.cached(KID)


def test_refusals_are_not_cached_and_each_waiter_asks_again() -> None:
    keys = _Keys(revoked=True)
    results = _in_threads(4, lambda: keys(KID))
    assert all(isinstance(r, Unauthenticated) for r in results)
    assert keys.lookups == 4  # a refusal is never shared as a cached caller
    assert not keys.cached(KID)


def test_forget_during_a_lookup_keeps_its_answer_out_of_the_cache() -> None:
    keys = _Keys()
    keys.release.clear()
    worker = threading.Thread(target=lambda: keys(KID))
    worker.start()
    assert keys.entered.wait(10)
    keys.forget()  # a revocation is published while the lookup reads the old directory
    keys.release.set()
    worker.join(10)
    assert not keys.cached(KID)  # the next request looks the caller up again
    keys.revoked = True
    try:
        keys(KID)
    except Unauthenticated:
        pass
    else:
        raise AssertionError("the revoked key was accepted from a stale cache entry")
    assert keys.lookups == 2


def test_expired_entry_is_looked_up_again() -> None:
    keys = _Keys(ttl_s=0.0)
    keys(KID)
    keys(KID)
    assert keys.lookups == 2


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_hit_late_in_its_entry_renews_it_in_the_background() -> None:
    keys = _Keys(ttl_s=2.0)
    keys(KID)
    expires = keys._cache[KID][0]
    time.sleep(1.1)  # past RENEW_AFTER of the entry's time
    assert keys(KID).name == "alice"  # served from the cache, not waiting for the lookup
    _wait_for(lambda: keys._cache[KID][0] > expires)
    assert keys.lookups == 2
    assert keys.cached(KID)  # requests keep verifying on the event loop


def test_a_renewal_that_finds_the_key_revoked_drops_the_entry() -> None:
    keys = _Keys(ttl_s=2.0)
    keys(KID)
    keys.revoked = True
    time.sleep(1.1)
    keys(KID)  # still within its time: served, and renewal asked for
    _wait_for(lambda: KID not in keys._cache)
    assert not keys.cached(KID)
    try:
        keys(KID)
    except Unauthenticated:
        pass
    else:
        raise AssertionError("the revoked key was accepted after its renewal failed")


def test_forget_during_a_renewal_keeps_its_answer_out_of_the_cache() -> None:
    keys = _Keys(ttl_s=2.0)
    keys(KID)
    time.sleep(1.1)
    keys.entered.clear()
    keys.release.clear()
    keys(KID)
    assert keys.entered.wait(10)  # the renewal reads the old directory...
    keys.forget()  # ...while a revocation is published
    keys.release.set()
    _wait_for(lambda: not keys._renewing)
    assert not keys.cached(KID)


def test_the_renewal_thread_ends_when_idle_and_a_later_renewal_starts_another() -> None:
    keys = _Keys(ttl_s=2.0)
    keys.RENEWER_IDLE_S = 0.1
    for _ in range(2):
        keys(KID)
        time.sleep(1.1)
        keys(KID)  # renews: starts the thread when none runs
        _wait_for(lambda: keys._renewals is None)  # done, idle, ended
    assert keys.lookups == 3  # the first, and one renewal by each thread
    assert keys.cached(KID)

"""Gate nonces for attested releases: MAC'd by the gate, spent once in a shared ledger.

A nonce is 32 bytes the gate makes and the enclave binds into its report data::

    random (12) | expires, Unix milliseconds (8, big-endian) | HMAC-SHA256(key, first 20)[:12]

The MAC key is a secret only unsealed gates hold (the runtime seals it in the
keyring's barrier), so every gate of a deployment checks any gate's nonce, and
nobody without the key can make one. Spending a nonce
(:meth:`SignedNonces.spend`) checks, in order:

1. its MAC (a nonce the gate did not make, e.g. a row a DBA invented, is refused
   before the ledger is read: **derived, never trusted**);
2. its expiry, from the MAC'd bytes (not from a row a DBA can edit);
3. the ledger: the row written at issue must be there, unspent, and is marked
   spent in one atomic statement (:class:`NonceLedger`). A deleted row, a
   second spend, or a spend racing another host: refused (fail closed).

:class:`MemoryLedger` serves one process (tests, a single agent); the
database's ledger (``strongroom.store.nonces.StoreAttestNonces``) lets
evidence come back to any host on the database, after a restart too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from strongroom.attest.evidence import refuse

__all__ = ["MAC_KEY_SIZE", "MemoryLedger", "NonceLedger", "SignedNonces"]

#: Bytes of the nonce's MAC key.
MAC_KEY_SIZE = 32
_RANDOM = 12
_MAC = 12
_OBJ = "attested release"


class NonceLedger(Protocol):
    """Where issued nonces wait to be spent: one row each, marked spent at most once."""

    def record(self, nonce_id: str, expires: float, now: float) -> None:
        """Remember an issued nonce until ``expires`` (and prune rows long past theirs)."""

    def spend(self, nonce_id: str, now: float) -> bool:
        """Mark the nonce spent atomically; False when its row is absent or already spent."""


class MemoryLedger:
    """A ledger in this process only (evidence must come back to the issuing process)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._rows: OrderedDict[str, float] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def record(self, nonce_id: str, expires: float, now: float) -> None:
        with self._lock:
            self._rows[nonce_id] = expires
            while len(self._rows) > self._limit:
                self._rows.popitem(last=False)

    def spend(self, nonce_id: str, now: float) -> bool:
        with self._lock:
            return self._rows.pop(nonce_id, None) is not None


class SignedNonces:
    """Issues nonces MAC'd under ``key`` and spends each once through ``ledger``.

    ``key`` may be a callable (read when first needed, re-read once when a
    MAC fails, so gates that raced to create the deployment's key converge).
    """

    def __init__(
        self,
        key: bytes | Callable[[], bytes],
        ledger: NonceLedger,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = key
        self._key: bytes | None = key if isinstance(key, bytes) else None
        self.ledger = ledger
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac_key(self, *, fresh: bool = False) -> bytes:
        if self._key is None or (fresh and callable(self._source)):
            key = self._source() if callable(self._source) else self._source
            if len(key) < 16:
                raise ValueError("a nonce MAC key is at least 16 bytes")
            self._key = key
        return self._key

    def _mac(self, body: bytes, key: bytes) -> bytes:
        return hmac.new(key, b"strongroom attest nonce v1\0" + body, hashlib.sha256).digest()[:_MAC]

    def issue(self) -> bytes:
        """A fresh nonce, recorded in the ledger, valid ``ttl_s`` seconds."""
        now = self._clock()
        expires = now + self.ttl_s
        body = os.urandom(_RANDOM) + struct.pack(">Q", int(expires * 1000))
        nonce = body + self._mac(body, self._mac_key())
        self.ledger.record(body[:_RANDOM].hex(), expires, now)
        return nonce

    def spend(self, nonce: bytes) -> None:
        """Spend ``nonce`` once, or refuse it naming the ``nonce`` check."""
        if len(nonce) != _RANDOM + 8 + _MAC:
            raise refuse("nonce", f"a nonce is {_RANDOM + 8 + _MAC} bytes", obj=_OBJ)
        body, mac = nonce[:-_MAC], nonce[-_MAC:]
        if not hmac.compare_digest(
            mac, self._mac(body, self._mac_key())
        ) and not hmac.compare_digest(mac, self._mac(body, self._mac_key(fresh=True))):
            raise refuse(
                "nonce",
                "the nonce was not issued by this deployment's gates (its MAC does not verify)",
                obj=_OBJ,
            )
        now = self._clock()
        (expires_ms,) = struct.unpack(">Q", body[_RANDOM:])
        if now * 1000 > expires_ms:
            raise refuse("nonce", f"the nonce is stale (older than {self.ttl_s:.0f} s)", obj=_OBJ)
        if not self.ledger.spend(body[:_RANDOM].hex(), now):
            raise refuse("nonce", "the nonce was already used (or its record is gone)", obj=_OBJ)

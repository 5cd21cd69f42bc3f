"""Who is calling the gateway, and may they run inference: Ed25519-signed requests.

A caller signs each request with their identity; the gateway checks the
signature, the clock skew and a nonce it has not seen, then asks an
:class:`InferAuthorizer` whether that principal holds ``infer``::

    headers = sign_request(alice, "POST", "/v1/embeddings", body)      # client side
    auth = SignedRequestAuth([alice.public])                            # gateway side
    caller = auth.authenticate("POST", "/v1/embeddings", headers, body, now=time.time())
    AllowList({"alice"}).check(caller.principal, "infer", "minilm@1")

The signed message is ``strongroom-gateway-v1`` followed by the method, the
path, the SHA-256 of the body, the timestamp and the nonce, one per line. A
request outside the replay window or with a nonce already used is refused.
Holding ``infer`` never implies ``load``: the gateway has no route that returns
weights. Deployments use :class:`strongroom.gateway.access.DirectoryCallers`
(keys from the officer-signed directory) and
:class:`strongroom.gateway.access.GrantAuthorizer` (Cedar ``infer`` plus an
``infer`` Grant); :class:`SignedRequestAuth` with a fixed key list and
:class:`AllowList` remain for tests and benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity, PublicIdentity

__all__ = [
    "AllowList",
    "Caller",
    "CallerAuth",
    "InferAuthorizer",
    "SignedRequestAuth",
    "sign_request",
    "signing_message",
]

CONTEXT = b"strongroom-gateway-v1"
H_KEY = "x-strongroom-key"
H_TIME = "x-strongroom-timestamp"
H_NONCE = "x-strongroom-nonce"
H_SIG = "x-strongroom-signature"
#: Seconds a signed request stays valid either side of the gateway's clock.
REPLAY_WINDOW_S = 60
_MAX_NONCE = 64


@dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    principal: str
    key_id: str


class CallerAuth(Protocol):
    """Turns a request into an authenticated :class:`Caller` or raises AccessDenied."""

    def authenticate(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                     now: float) -> Caller:
        """Authenticate one request."""
        ...


class InferAuthorizer(Protocol):
    """Decides whether a principal may perform an action on a model."""

    def check(self, principal: str, action: str, resource: str) -> None:
        """Return if allowed; raise AccessDenied otherwise."""
        ...


def signing_message(method: str, path: str, body: bytes, timestamp: str, nonce: str) -> bytes:
    """The bytes a caller signs for one request."""
    digest = hashlib.sha256(body).hexdigest()
    return b"\n".join([CONTEXT, method.upper().encode(), path.encode(), digest.encode(),
                       timestamp.encode(), nonce.encode()])


def sign_request(identity: Identity, method: str, path: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    """Headers that authenticate ``body`` sent to ``method path`` as ``identity``."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    signature = identity.private_key.sign(signing_message(method, path, body, timestamp, nonce))
    return {
        H_KEY: identity.public.key_id,
        H_TIME: timestamp,
        H_NONCE: nonce,
        H_SIG: base64.b64encode(signature).decode("ascii"),
    }


class SignedRequestAuth:
    """Checks Ed25519 request signatures from a fixed set of registered caller keys."""

    def __init__(self, callers: Iterable[PublicIdentity], *,
                 window_s: int = REPLAY_WINDOW_S) -> None:
        self.callers = {c.key_id: c for c in callers}
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def lookup(self, kid: str) -> PublicIdentity | None:
        """The registered caller holding key ``kid`` (subclasses look elsewhere)."""
        return self.callers.get(kid)

    def authenticate(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                     now: float) -> Caller:
        """The caller whose registered key signed this request within the window."""
        fields = [headers.get(h) for h in (H_KEY, H_TIME, H_NONCE, H_SIG)]
        if any(f is None for f in fields):
            raise AccessDenied("request is not signed", obj="gateway",
                               remedy="sign requests with your identity (X-Strongroom-* headers)")
        kid, stamp, nonce, sig = (str(f) for f in fields)
        caller = self.lookup(kid)
        if caller is None:
            raise AccessDenied("unknown caller key", obj=f"key {kid[:16]!r}",
                               remedy="ask an operator to register your public key")
        try:
            ts = int(stamp)
            signature = base64.b64decode(sig, validate=True)
        except ValueError:
            raise AccessDenied("malformed request signature", obj=caller.principal) from None
        if abs(now - ts) > self.window_s:
            raise AccessDenied(f"request timestamp is outside the {self.window_s} s window",
                               obj=caller.principal, remedy="check the client's clock")
        if not 16 <= len(nonce) <= _MAX_NONCE or not nonce.isalnum():
            raise AccessDenied("malformed request nonce", obj=caller.principal)
        try:
            caller.public_key.verify(signature, signing_message(method, path, body, stamp, nonce))
        except InvalidSignature:
            raise AccessDenied("request signature does not verify", obj=caller.principal) from None
        with self._lock:
            for old in [n for n, t in self._seen.items() if t < now - self.window_s]:
                del self._seen[old]
            key = f"{kid}:{nonce}"
            if key in self._seen:
                raise AccessDenied("request replayed (nonce already used)", obj=caller.principal)
            self._seen[key] = float(ts)
        return Caller(caller.principal, kid)


class AllowList:
    """The interim ``infer`` rule: a fixed set of principals, configured at start."""

    def __init__(self, principals: Iterable[str], actions: Iterable[str] = ("infer",)) -> None:
        self.principals = frozenset(principals)
        self.actions = frozenset(actions)

    def check(self, principal: str, action: str, resource: str) -> None:
        """Allow only listed principals, only for the listed actions."""
        if action not in self.actions or principal not in self.principals:
            raise AccessDenied(f"{principal} may not {action} on {resource}", obj=resource,
                               remedy="ask for an infer grant on this model")

"""RFC 9421 HTTP Message Signatures with Ed25519: how every API request proves who sent it.

A client signs ``@method``, ``@path``, ``@query`` (when the URL has one) and
``content-digest`` (RFC 9530, SHA-256 of the body, present even for an empty
body), with the signature parameters ``created``, ``nonce``, ``keyid`` (the
DSSE key id of the caller's Ed25519 key), ``alg="ed25519"`` and
``tag="strongroom"``::

    headers = sign_request(identity.private_key, "POST", "/v1/access/requests", body)
    # -> {"Content-Digest": ..., "Signature-Input": ..., "Signature": ...}

The server (:class:`RequestVerifier`) accepts a request only when the
signature verifies under the key of an enrolled, officer-signed, unrevoked
principal (or a security officer pinned in the keyring); ``created`` lies
within the replay window; the nonce was not seen before (the
:class:`NonceCache` remembers it until the window closes); and the body
matches its digest. Anything else raises
:class:`~strongroom.server.errors.Unauthenticated` (401) or
:class:`~strongroom.server.errors.DigestMismatch` (400), and nothing else
happens. The authority (host) is not covered, so a TLS-terminating proxy may
rewrite it; TLS protects the channel, the signature protects the request.

Requests in the exact shape :func:`sign_request` emits take a fast path that
builds the RFC 9421 signature base itself (the package's structured-field
parser cost about half of the server's CPU per request). It accepts only that
one canonical serialisation and makes the same checks in the same order, with
the same messages; everything else goes through ``http-message-signatures``
unchanged. ``tests/server/test_server_signature_fastpath.py`` checks the two
agree on random and tampered requests.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature as BadEd25519Signature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from strongroom.crypto import ed25519
from strongroom.crypto.dsse import key_id
from strongroom.errors import InvalidInput, StrongroomError
from strongroom.keys.officers import Officers
from strongroom.server.errors import DigestMismatch, Unauthenticated
from strongroom.store.nonces import StoreNonceCache

if TYPE_CHECKING:
    from strongroom.store.db import Store

__all__ = [
    "CLOCK_SKEW_S",
    "REPLAY_WINDOW_S",
    "SIGNATURE_TAG",
    "Caller",
    "MemoryNonceCache",
    "NonceCache",
    "RequestVerifier",
    "check_body_digest",
    "default_nonce_cache",
    "sign_request",
]

#: Signed application tag: a signature made for another protocol is not accepted here.
SIGNATURE_TAG = "strongroom"
#: How old a signature's ``created`` may be, seconds.
REPLAY_WINDOW_S = 60
#: Tolerated clock difference between client and server, seconds.
CLOCK_SKEW_S = 5
#: The label the client uses in Signature-Input / Signature.
SIGNATURE_LABEL = "sr"
_PLACEHOLDER_ORIGIN = "http://strongroom.invalid"
_REMEDY = ("sign every request with your identity (RFC 9421, Ed25519, covering @method, "
           "@path, @query, content-digest; created and nonce set): the strongroom CLI and "
           "strongroom.server.client do this when STRONGROOM_IDENTITY is set")


@dataclass(frozen=True)
class Caller:
    """Who signed a request: key id, principal name, key, officer or not."""

    key_id: str
    name: str
    public_key: Ed25519PublicKey
    officer: bool = False
    #: The ML-DSA-65 key pinned beside ``public_key`` (a hybrid officer or person), if any.
    mldsa: MLDSA65PublicKey | None = None

    @property
    def pins(self) -> Officers:
        """This caller's pinned keys, to check that it signed a statement it offers."""
        return Officers({self.key_id: self.public_key},
                        {self.key_id: self.mldsa} if self.mldsa is not None else {})

    @functools.cached_property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key (read once: a caller is cached for every request)."""
        return self.public_key.public_bytes_raw()

    @functools.cached_property
    def verifier(self) -> Ed25519PublicKey:
        """``public_key`` verifying through libsodium (half OpenSSL's CPU; built once per caller)."""
        return ed25519.public_key(self.public_bytes)


class _Message:
    """The request as the signature library reads it."""

    def __init__(self, method: str, target: str, headers: Mapping[str, str] | Iterable[
            tuple[str, str]]) -> None:
        self.method = method.upper()
        self.url = _PLACEHOLDER_ORIGIN + target
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        self.headers = _Headers(items)


class _Headers:
    """Field lines in order, with the mutations the signer needs."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Any:
        return iter([k for k, _ in self._items])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def __getitem__(self, name: str) -> str:
        values = [v for k, v in self._items if k.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        self._items = [(k, v) for k, v in self._items if k.lower() != name.lower()]


class _StaticKey(HTTPSignatureKeyResolver):
    def __init__(self, kid: str, private: Ed25519PrivateKey) -> None:
        self.kid = kid
        self.private = private

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        if key_id != self.kid:
            raise InvalidInput("no private key for this key id", obj=key_id)
        return self.private

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        return self.private.public_key()


def sign_request(
    private_key: Ed25519PrivateKey,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    created: float | None = None,
    nonce: str | None = None,
    body_sha256: bytes | None = None,
) -> dict[str, str]:
    """The Content-Digest, Signature-Input and Signature headers for one request.

    ``target`` is the request target exactly as sent: the encoded path, and
    ``?query`` when there is one. For a body streamed from a file, pass its
    SHA-256 as ``body_sha256`` instead of ``body``.
    """
    kid = key_id(private_key.public_key())
    headers: dict[str, str] = {}
    if body_sha256 is not None:
        if len(body_sha256) != 32:
            raise InvalidInput("a SHA-256 digest is 32 bytes", obj="body_sha256")
        headers["Content-Digest"] = "sha-256=:" + base64.b64encode(body_sha256).decode() + ":"
    message = _Message(method, target, headers)
    covered = ["@method", "@path"]
    if "?" in target:
        covered.append("@query")
    covered.append("content-digest")
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                               key_resolver=_StaticKey(kid, private_key))
    when = datetime.datetime.fromtimestamp(time.time() if created is None else created,
                                           tz=datetime.UTC)
    signer.sign(message, key_id=kid, created=when, nonce=nonce or secrets.token_urlsafe(18),
                label=SIGNATURE_LABEL, tag=SIGNATURE_TAG, covered_component_ids=covered,
                body=None if body_sha256 is not None else body,
                use_existing_digest=body_sha256 is not None)
    return dict(message.headers.items())


# -- nonces ----------------------------------------------------------------------------


class NonceCache(Protocol):
    """Remembers signature nonces until their window closes."""

    def spend(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """Record ``nonce`` of ``key``; False if it was already spent (a replay)."""
        ...


class MemoryNonceCache:
    """Nonces of one process (``--workers 1``)."""

    #: spend() never waits on I/O: the server may call it on its event loop.
    inline = True

    def __init__(self, limit: int = 1_000_000) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._limit = limit
        self._next_prune = 0.0

    def spend(self, key: str, nonce: str, expires: float, now: float) -> bool:
        """Record the nonce; False if seen and not yet expired."""
        with self._lock:
            if now >= self._next_prune or len(self._seen) >= self._limit:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                self._next_prune = now + 5.0
                if len(self._seen) >= self._limit:
                    raise Unauthenticated("too many requests in the replay window",
                                          obj="nonce cache", remedy="retry shortly")
            seen = self._seen.get((key, nonce))
            if seen is not None and seen > now:
                return False
            self._seen[(key, nonce)] = expires
            return True


def default_nonce_cache(store: Store, *, shared_host: Path | None = None) -> NonceCache:
    """The nonce cache a server on ``store`` uses unless told otherwise.

    ``STRONGROOM_SERVER_NONCES`` chooses: ``database`` (table ``server_nonces``,
    shared by every host on the database), ``host`` (a mapped file shared by the
    workers of this host, ``shared_host``:
    :class:`~strongroom.server.nonce_table.SharedNonceTable`, which adopts the live
    nonces of the SQLite file of the same name ending ``.db`` that earlier releases
    kept) or ``memory`` (this process only).
    Unset: ``database`` on PostgreSQL — the deployment where several hosts
    share the database — otherwise ``host`` when ``shared_host`` is given
    (several workers), otherwise ``memory``.
    """
    choice = os.environ.get("STRONGROOM_SERVER_NONCES", "").strip().lower()
    if not choice:
        choice = ("database" if store.dialect != "sqlite"
                  else "host" if shared_host is not None else "memory")
    if choice == "database":
        return StoreNonceCache(store)
    if choice == "host":
        if shared_host is None:
            raise InvalidInput("a per-host nonce cache needs several workers",
                               obj="STRONGROOM_SERVER_NONCES", remedy="use database or memory")
        from strongroom.server.nonce_table import SharedNonceTable

        legacy = shared_host.with_suffix(".db")
        return SharedNonceTable(shared_host, legacy=legacy if legacy != shared_host else None)
    if choice == "memory":
        return MemoryNonceCache()
    raise InvalidInput(f"unknown nonce cache {choice!r}", obj="STRONGROOM_SERVER_NONCES",
                       remedy="use database, host or memory")


# -- verification ------------------------------------------------------------------------


KeyLookup = Callable[[str], Caller]


class _LookupResolver(HTTPSignatureKeyResolver):
    def __init__(self, lookup: KeyLookup) -> None:
        self.lookup = lookup
        self.caller: Caller | None = None

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        self.caller = self.lookup(key_id)
        key = self.caller.public_key  # libsodium's verify, as on the fast path
        return self.caller.verifier if isinstance(key, Ed25519PublicKey) else key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        raise InvalidInput("verification only", obj=key_id)


def _refused(message: str) -> Unauthenticated:
    return Unauthenticated(message, obj="request signature", remedy=_REMEDY)


def replayed() -> Unauthenticated:
    """The refusal of a request whose nonce was already spent."""
    return _refused("this signed request was already used (replayed nonce)")


class RequestVerifier:
    """Checks a request's signature, freshness, nonce and body digest; returns the caller."""

    def __init__(
        self,
        lookup: KeyLookup,
        nonces: NonceCache,
        *,
        window_s: int = REPLAY_WINDOW_S,
        skew_s: int = CLOCK_SKEW_S,
        clock: Callable[[], float] = time.time,
        fast_path: bool = True,
    ) -> None:
        self.lookup = lookup
        self.nonces = nonces
        self.window_s = window_s
        self.skew_s = skew_s
        self.clock = clock
        #: Verify requests in sign_request's exact shape without the package (same outcome).
        self.fast_path = fast_path

    def inline_ok(self, claimed_key_id: str) -> bool:
        """True when verifying a request from ``claimed_key_id`` will not wait on I/O.

        That is: the nonce cache is local (``inline``) and the key lookup has
        the caller cached (``lookup.cached(kid)``). The server then verifies on
        its event loop (about 0.1 ms of CPU on the fast path, 0.2 ms through the
        package) instead of paying a thread-pool hop.
        """
        return bool(getattr(self.nonces, "inline", False) and self._cached(claimed_key_id))

    def _cached(self, claimed_key_id: str) -> bool:
        """Whether the key lookup holds ``claimed_key_id``'s caller (``lookup.cached``)."""
        cached = getattr(self.lookup, "cached", None)
        return bool(claimed_key_id and callable(cached) and cached(claimed_key_id))

    def verify(self, method: str, target: str, headers: Iterable[tuple[str, str]],
               body: bytes) -> Caller:
        """The verified caller, or Unauthenticated / DigestMismatch."""
        caller, digest = self.verify_headers(method, target, headers)
        check_body_digest(digest, hashlib.sha256(body).digest())
        return caller

    def verify_headers(self, method: str, target: str, headers: Iterable[tuple[str, str]]
                       ) -> tuple[Caller, bytes]:
        """For a streamed body: the caller and the signed SHA-256 the body must then match.

        Everything but the body is checked and the nonce is spent; the caller
        must hash the body as it arrives and call :func:`check_body_digest`
        before acting on it.
        """
        fields = headers if type(headers) is list else [(k, v) for k, v in headers]
        return self.verify_signed(method, target, _signature_fields(fields), lambda: fields)

    def verify_signed(self, method: str, target: str,
                      signed: tuple[list[str], list[str], list[str]],
                      fields: Callable[[], list[tuple[str, str]]]) -> tuple[Caller, bytes]:
        """:meth:`verify_headers` of a request whose signature fields were already found.

        ``signed``: the values of every Signature-Input, Signature and Content-Digest
        field, in order (as :func:`_signature_fields` finds them); ``fields``: all of the
        request's field lines, asked for only when the request is not in the shape
        :func:`sign_request` makes (the package then reads them).
        """
        caller, digest, spend = self.check_signed(method, target, signed, fields)
        if not self.nonces.spend(*spend):
            raise replayed()
        return caller, digest

    def async_spend(self, claimed_key_id: str) -> Callable[..., Awaitable[bool]] | None:
        """The nonce cache's ``spend_async`` when the server may await it on its event loop.

        That is: the cache offers one (:class:`~strongroom.store.nonces.StoreNonceCache`
        on PostgreSQL) and the caller's key is cached, so the rest of the
        verification is CPU only (:meth:`check_signed`); None otherwise.
        """
        spend: Callable[..., Awaitable[bool]] | None = getattr(self.nonces, "spend_async", None)
        if (spend is None or not getattr(self.nonces, "asynchronous", False)
                or not self._cached(claimed_key_id)):
            return None
        return spend

    def check_signed(self, method: str, target: str,
                     signed: tuple[list[str], list[str], list[str]],
                     fields: Callable[[], list[tuple[str, str]]]
                     ) -> tuple[Caller, bytes, tuple[str, str, float, float]]:
        """:meth:`verify_signed` but the nonce's spend: the caller, the signed body digest
        and the arguments of the spend (key id, nonce, expiry, now) the caller must make,
        and refuse the request if it returns False (:func:`replayed`), before acting on it."""
        inputs, signatures, digests = signed
        if not signatures or not inputs:
            raise _refused("the request is not signed (no Signature / Signature-Input header)")
        if not target.startswith("/") or "#" in target:
            # The library reads the target as a URL: "@host/..." or ":443/..." would move
            # the parsed host and still verify a signature made for the path.
            raise _refused("the request target must be a path starting with / (no fragment)")
        now = self.clock()
        canonical = (_canonical_from(method, target, inputs, signatures, digests)
                     if self.fast_path else None)
        checked = self._verify_canonical(canonical, now) if canonical is not None else None
        if checked is None:
            checked = self._verify_with_library(method, target, fields())
        caller, params, value = checked
        created = params.get("created")
        if not isinstance(created, int) or now - created > self.window_s:
            raise _refused(f"the signature is expired: created more than {self.window_s} s ago")
        if created - now > self.skew_s:
            raise _refused("the signature is not yet valid: created in the future")
        if params.get("alg") != "ed25519":
            raise _refused('the signature must name alg="ed25519"')
        if value is None or len(digests) != 1:
            raise _refused("the signature must cover exactly one Content-Digest header")
        digest = (canonical.digest if canonical is not None and value is canonical.digest_field
                  else _sha256_member(value))
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise _refused("the signature has no nonce (16-128 characters)")
        return caller, digest, (caller.key_id, nonce, created + self.window_s + self.skew_s, now)

    def _verify_with_library(self, method: str, target: str, fields: list[tuple[str, str]]
                             ) -> tuple[Caller, Mapping[str, object], str | None]:
        """Any RFC 9421 signature, through the package: caller, parameters, signed digest."""
        message = _Message(method, target, fields)
        resolver = _LookupResolver(self.lookup)
        verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519,
                                       key_resolver=resolver)
        verifier.max_clock_skew = datetime.timedelta(seconds=self.skew_s)
        required = ["@method", "@path", "content-digest"]
        if "?" in target:
            required.append("@query")
        try:
            results = verifier.verify(message, max_age=datetime.timedelta(seconds=self.window_s),
                                      expect_tag=SIGNATURE_TAG, require_components=required)
        except (InvalidSignature, HTTPMessageSignaturesException) as exc:
            cause = exc.__cause__
            if isinstance(cause, StrongroomError):
                raise cause from None
            raise _refused(_describe(exc)) from None
        if len(results) != 1 or resolver.caller is None:
            raise _refused("exactly one strongroom signature is expected")
        result = results[0]
        return (resolver.caller, result.parameters,
                result.covered_components.get('"content-digest"'))

    def _verify_canonical(self, request: _Canonical, now: float
                          ) -> tuple[Caller, Mapping[str, object], str | None] | None:
        """The library's checks, in its order, for a request in our signer's shape.

        None (before anything is spent) when the key is not an Ed25519 key
        object: the library path then decides.
        """
        # validate_created_and_expires: the package reads the wall clock, not self.clock
        # (compared here in seconds, as the package's datetimes hold them).
        wall = time.time()
        if request.created > wall + self.skew_s:
            raise _refused(_describe(InvalidSignature(
                'Signature "created" parameter is set to a time in the future')))
        if request.created + self.window_s < wall - self.skew_s:
            max_age = datetime.timedelta(seconds=self.window_s)
            raise _refused(_describe(InvalidSignature(
                f"Signature age exceeds maximum allowable age {max_age}")))
        try:  # as _LookupResolver inside the package's try
            caller = self.lookup(request.keyid)
            key = caller.public_key
        except StrongroomError:
            raise
        except Exception as exc:
            raise _refused(_describe(InvalidSignature(exc))) from None
        if not isinstance(key, Ed25519PublicKey):
            return None
        try:
            caller.verifier.verify(request.signature, request.base)
        except BadEd25519Signature:
            raise _refused(_describe(InvalidSignature())) from None
        return caller, {"created": request.created, "alg": "ed25519",
                        "nonce": request.nonce}, request.digest_field


# -- the fast path: our signer's one canonical shape -------------------------------------
#
# http_sf re-serialises what it parses, and the signature base carries that
# serialisation. These patterns admit only text that is already canonical
# (no optional whitespace, no leading zeros, no escapes in strings), so the
# raw text is what the package would put in the base. Anything else -- other
# labels, parameter orders, extra members, whitespace -- falls back.
# tests/server/test_server_signature_fastpath.py checks, on random and
# tampered requests, that the base equals the package's and the outcomes agree.

_SF_SAFE = r"[A-Za-z0-9._~+/=-]"
_FAST_INPUT = re.compile(
    r'sr=(\("@method" "@path"(?P<query> "@query")? "content-digest"\)'
    r";created=(?P<created>0|[1-9][0-9]{0,10})"
    rf';keyid="(?P<keyid>{_SF_SAFE}{{1,256}})";alg="ed25519"'
    rf';nonce="(?P<nonce>{_SF_SAFE}{{1,256}})";tag="strongroom")')
_FAST_SIGNATURE = re.compile(r"sr=:([A-Za-z0-9+/]{86}==):")
_FAST_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")
_FAST_METHOD = re.compile(r"[A-Z]{1,20}")
# The package's RFC 3986 path and query grammar (_url.py), without fragments.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})"
_FAST_TARGET = re.compile(rf"(?P<path>/{_PCHAR}*)(?P<query>\?(?:{_PCHAR}|\?)*)?")


class _Canonical(NamedTuple):
    """A request in :func:`sign_request`'s shape, with its RFC 9421 signature base.

    (A named tuple: made for every request, and a frozen dataclass costs ~2 us to make.)
    """

    base: bytes
    signature: bytes
    keyid: str
    created: int
    nonce: str
    digest_field: str
    #: The SHA-256 ``digest_field`` carries (its one member, decoded).
    digest: bytes


def _signature_fields(fields: list[tuple[str, str]]
                      ) -> tuple[list[str], list[str], list[str]]:
    """The values of every Signature-Input, Signature and Content-Digest field, in order."""
    inputs: list[str] = []
    signatures: list[str] = []
    digests: list[str] = []
    for name, value in fields:
        lowered = name.lower()
        if lowered == "signature-input":
            inputs.append(value)
        elif lowered == "signature":
            signatures.append(value)
        elif lowered == "content-digest":
            digests.append(value)
    return inputs, signatures, digests


def _canonical_request(method: str, target: str, fields: list[tuple[str, str]]
                       ) -> _Canonical | None:
    """The request's signature base (RFC 9421 section 2.5), or None unless canonical."""
    return _canonical_from(method, target, *_signature_fields(fields))


def _canonical_from(method: str, target: str, inputs: list[str], signatures: list[str],
                    digests: list[str]) -> _Canonical | None:
    """:func:`_canonical_request` of the field values :func:`_signature_fields` found.

    Canonical only with exactly one Signature-Input, Signature and Content-Digest.
    """
    if len(inputs) != 1 or len(signatures) != 1 or len(digests) != 1:
        return None
    verb = method.upper()  # as _Message
    params = _FAST_INPUT.fullmatch(inputs[0])
    sig = _FAST_SIGNATURE.fullmatch(signatures[0])
    url = _FAST_TARGET.fullmatch(target)
    if (params is None or sig is None or url is None or _FAST_METHOD.fullmatch(verb) is None
            or _FAST_DIGEST.fullmatch(digests[0]) is None
            or (params["query"] is None) != (url["query"] is None)):
        return None
    raw = base64.b64decode(sig[1], validate=True)
    if base64.b64encode(raw).decode() != sig[1]:
        return None  # non-canonical base64 bits: let the package judge
    lines = [f'"@method": {verb}', f'"@path": {url["path"]}']
    if url["query"] is not None:
        lines.append(f'"@query": {url["query"]}')
    lines.append(f'"content-digest": {digests[0]}')
    lines.append(f'"@signature-params": {params[1]}')
    # _FAST_DIGEST admitted exactly "sha-256=:" + 44 base64 characters + ":" (32 bytes),
    # which is all _sha256_member would find in it.
    return _Canonical("\n".join(lines).encode("ascii"), raw, params["keyid"],
                      int(params["created"]), params["nonce"], digests[0],
                      base64.b64decode(digests[0][9:-1]))


def check_body_digest(signed: bytes, actual: bytes) -> None:
    """DigestMismatch unless the body's SHA-256 is the signed one."""
    if not hmac.compare_digest(signed, actual):
        raise DigestMismatch("the body does not match its signed Content-Digest",
                             obj="request body", remedy="send the body that was signed, unchanged")


def _sha256_member(value: str) -> bytes:
    for member in value.split(","):
        name, _, item = member.strip().partition("=")
        if name.strip() == "sha-256" and item.startswith(":") and item.endswith(":"):
            try:
                raw = base64.b64decode(item[1:-1], validate=True)
            except ValueError:
                break
            if len(raw) == 32:
                return raw
    raise _refused("Content-Digest must carry a sha-256 member")


def _describe(exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    if "age exceeds" in lowered or "in the future" in lowered or "in the past" in lowered:
        return f"the signature is expired or not yet valid: {text}"
    if "verif" in lowered or "invalid signature" in lowered or lowered == "":
        return "the signature does not verify (wrong key, or the request was altered)"
    return f"the request signature is malformed or incomplete: {text}"

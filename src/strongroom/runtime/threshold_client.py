"""The requester's side of threshold release: ask key servers in turn, verify, combine k partials.

Each key server decides for itself (its own gate, log and ledger) and answers
with a partial decryption and its proof. The requester verifies every partial
against that server's public share — derived from the group's Feldman
commitments, which the requester pins (never taken from a server's answer) —
and this request's digest; a refusal, an unreachable server or a partial that
does not verify is recorded by server name and the next server is asked. With
k verified partials the file key opens; with fewer, :class:`AccessDenied` names
every server and why. With ``indices`` (each server's share index, recorded at
setup in the pinned commitments file) a partial under any index but the asked
server's own is refused by that server's name, as misbehaviour
(:attr:`Refusal.misbehaved`): a hostile server relaying another's genuine
partial is caught as itself, not blamed on the honest server that answers next. When some servers released and others refused on
policy (one server answering for a Grant the others consider revoked), the
result says so (:attr:`ThresholdRelease.disagreement`) so the caller alerts.

Use it like this::

    client = ThresholdClient([("ks-a", "http://10.0.0.1:8430"), ...], commitments, vault_id="v1")
    released = client.release(request, manifest_envelope, header_bytes)
    try: use(released.key)
    finally: released.key[:] = bytes(32)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from strongroom import errors
from strongroom.crypto import age
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, StrongroomError
from strongroom.keys.threshold import find_wrapped, request_digest
from strongroom.release import ReleaseRequest
from strongroom.runtime.keyserver import PartialRequest
from strongroom.threshold.group import Element
from strongroom.threshold.wrap import Combiner, Partial, binding, unwrap

__all__ = [
    "Ask",
    "Refusal",
    "ThresholdClient",
    "ThresholdRelease",
    "answer",
    "http_link",
    "pinned_indices",
]

_POLICY_REFUSALS = ("AccessDenied", "ApprovalRequired", "BudgetExceeded", "GrantBudgetSpent", "Throttled")
#: Refusals that are the server's fault, not its checks nor the network: a partial that does not
#: verify, one under another server's index, a malformed answer.
_MISBEHAVIOUR = ("IntegrityError", "InvalidInput")


@dataclass(frozen=True)
class Refusal:
    """Why one key server gave no usable partial: its error class and message (never key material)."""

    server: str
    kind: str
    message: str

    @property
    def on_policy(self) -> bool:
        """Whether the server refused on its checks (not down, not a bad partial)."""
        return self.kind in _POLICY_REFUSALS

    @property
    def misbehaved(self) -> bool:
        """Whether the server answered with something no honest key server sends: alert on it."""
        return self.kind in _MISBEHAVIOUR


@dataclass
class ThresholdRelease:
    """A released file key (the caller zeroes it), who answered, and who refused."""

    key: bytearray = field(repr=False)
    answered: list[str]
    refusals: list[Refusal]

    @property
    def disagreement(self) -> bool:
        """Some key servers released while another refused on its own checks: alert on it."""
        return any(r.on_policy for r in self.refusals)

    @property
    def misbehaving(self) -> list[str]:
        """Key servers that answered with a partial no honest server sends (alert on each)."""
        return [r.server for r in self.refusals if r.misbehaved]


def answer(r: httpx.Response, name: str) -> Any:
    """A key server's JSON answer, or its refusal rebuilt as the error class it raised."""
    try:
        data = r.json()
    except ValueError:
        raise errors.ServerError(f"the key server answered HTTP {r.status_code} without JSON", obj=name) from None
    if r.status_code != 200:
        err = data.get("error", {}) if isinstance(data, dict) else {}
        raise errors.from_wire(str(err.get("type", "ServerError")), str(err.get("message", "")),
                               obj=name, remedy=err.get("remedy"))
    return data


def pinned_indices(names: Sequence[str], indices: Mapping[str, int] | None) -> dict[str, int]:
    """``indices`` checked against the configured server ``names``: one distinct share index
    (1-255) for each, none for a server not configured; ``{}`` when nothing is pinned."""
    if not indices:
        return {}
    obj, remedy = "threshold key-server indices", (
        'record each key server\'s index from setup, e.g. {"ks-a": 1, "ks-b": 2, ...}'
    )
    unknown = sorted(set(indices) - set(names))
    if unknown:
        raise InvalidInput(f"an index is pinned for {unknown[0]!r}, which is not a configured key "
                           "server", obj=obj, remedy=remedy)
    missing = [n for n in names if n not in indices]
    if missing:
        raise InvalidInput(f"key server {missing[0]!r} has no pinned share index", obj=obj,
                           remedy=remedy)
    out = {}
    for name, index in indices.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 255:
            raise InvalidInput(f"the share index of {name!r} is not a number from 1 to 255",
                               obj=obj, remedy=remedy)
        out[name] = index
    if len(set(out.values())) != len(out):
        raise InvalidInput("two key servers are pinned to the same share index", obj=obj,
                           remedy=remedy)
    return out


#: How the requester reaches one key server: the body in, the server's partial out (or its refusal).
Ask = Callable[[PartialRequest], Partial]


def http_link(name: str, url: str, http: httpx.Client) -> tuple[str, Ask]:
    """A key server reached over HTTP at ``url`` (``POST /v1/keyserver/partial``)."""

    def ask(body: PartialRequest) -> Partial:
        try:
            r = http.post(f"{url.rstrip('/')}/v1/keyserver/partial", json=body.to_json())
        except httpx.HTTPError as exc:
            raise errors.ServerError(f"cannot reach the key server ({type(exc).__name__})", obj=name,
                                     remedy="check that it runs; the next key server is asked") from None
        return Partial.decode(answer(r, name), what=name)

    return name, ask


class ThresholdClient:
    """Asks key servers for partials until k verify; combines them into the file key."""

    def __init__(
        self,
        servers: Sequence[tuple[str, str] | tuple[str, Ask]],
        commitments: Sequence[Element],
        *,
        vault_id: str,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
        indices: Mapping[str, int] | None = None,
    ) -> None:
        """``servers``: (name, URL) pairs, or (name, :data:`Ask`) for a server reached another way;
        ``indices``: each server's share index as recorded at setup (then every server needs one)."""
        if not servers:
            raise InvalidInput("no key servers configured", obj="threshold release",
                               remedy="name at least k key servers")
        self.indices = pinned_indices([name for name, _ in servers], indices)
        # An HTTP client only when a server is reached over HTTP and the caller lent none.
        self._owns_http = http is None and any(isinstance(target, str) for _, target in servers)
        self._http = httpx.Client(timeout=timeout) if self._owns_http else http
        self.links = [http_link(name, target, cast("httpx.Client", self._http)) if isinstance(target, str)
                      else (name, target) for name, target in servers]
        self.commitments = tuple(commitments)
        self.vault_id = vault_id
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor:
        """The threads that ask key servers, kept across releases (a pool per release cost more
        than the partial itself). Concurrent releases share it (``strongroom serve`` runs one per
        worker thread, k asks each), so it is sized for them; a thread starts only when all are busy."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(64, 16 * len(self.links)), thread_name_prefix="threshold-ask")
            return self._pool

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran (a later release opens the asking threads again)."""
        return self._closed

    def close(self) -> None:
        """Close the HTTP connections (when this client opened them) and the asking threads."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is not None:
            pool.shutdown(wait=True)
        if self._owns_http and self._http is not None:
            self._http.close()

    def release(self, request: ReleaseRequest, manifest: str, header: bytes) -> ThresholdRelease:
        """The file key of ``request``'s shard, from k verified partials; AccessDenied with fewer."""
        parsed = age.parse_header(header)
        if parsed is None:
            raise InvalidInput("the blob header is incomplete", obj=request.obj)
        group_key = self.commitments[0]
        wrapped = find_wrapped(parsed.stanzas, group_key, obj=request.obj)
        digest = request_digest(request, [wrapped.u])
        combiner = Combiner(self.commitments, digest, [wrapped.u])
        body = PartialRequest(request, manifest, header)
        answered: list[str] = []
        refusals: list[Refusal] = []
        pending = list(self.links)
        running: dict[Future[None], str] = {}
        pool = self._executor()

        def verified(name: str, ask: Ask) -> None:  # in the pool: ask, then verify the partial once
            partial = ask(body)
            own = self.indices.get(name)
            if own is not None and partial.index != own:  # checked before it can take the index
                raise IntegrityError(
                    f"answered with share index {partial.index}, not its own {own} as recorded at "
                    "setup: another key server's partial, relayed (misbehaviour)",
                    obj=name,
                    remedy="the next key server is asked; investigate this server, and fix the "
                    "pinned indices if the key servers were re-shared",
                )
            combiner.add(partial, server=name)

        # Ask exactly k servers at once (separate hosts answer in parallel); the moment one
        # refuses, is down, or sends a partial that does not verify, ask the next one.
        while True:
            while pending and len(running) + combiner.count < combiner.threshold:
                name, ask = pending.pop(0)
                running[pool.submit(verified, name, ask)] = name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                try:
                    future.result()
                except StrongroomError as exc:
                    refusals.append(Refusal(name, type(exc).__name__, str(exc)))
                    continue
                answered.append(name)
        order = {name: n for n, (name, _) in enumerate(self.links)}  # reported in the configured order
        answered.sort(key=order.__getitem__)
        refusals.sort(key=lambda r: order[r.server])
        if not combiner.ready:
            why = "; ".join(f"{r.server}: {r.kind}: {r.message}" for r in refusals) or "no answer"
            raise AccessDenied(
                f"{len(answered)} of the {combiner.threshold} key servers needed released a partial ({why})",
                obj=request.obj,
                remedy="no file key without k independent key servers; see each refusing server's audit log",
            )
        bound = binding(self.vault_id, request.artifact, request.shard, request.blob_id)
        key = unwrap(wrapped, combiner.shared_points()[0], group_key, bound, what=request.obj)
        return ThresholdRelease(key, answered, refusals)

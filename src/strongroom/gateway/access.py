"""The gateway's callers and their right to ``infer``, from the officer-signed directory.

Two pieces replace the fixed caller list and the interim allow-list:

* :class:`DirectoryCallers` authenticates a signed request with the key of an
  enrolled, unrevoked principal (enrollment signed by k officers pinned in
  the keyring), so registering a caller is an officers' act, not a flag;
* :class:`GrantAuthorizer` lets a caller run inference only while Cedar
  allows ``infer`` on the model (clearance, compartments, vetting) **and** the
  caller holds a valid ``infer`` Grant on it (request and approvals signed by
  their authors, rule met, unexpired, unrevoked) — checked from signatures.

Both keep their verified view (and a caller's positive decision) only while
the access statements' head is unchanged — one index read per request
(:func:`strongroom.access.statements.head`: the generation every put bumps and
the highest id), as the release gate reads per batch — so a revoked key, a
revoked Grant or a new denial stops a caller at its next request. A row
deleted by SQL moves only the full marker's count (a scan): it cannot make a
view or a positive decision kept from before it any more permissive, and a
rebuild reads the table as it then is either way. The view is also rebuilt
every ``ttl_s`` seconds (default 10), and vetting dates and Grant expiry are
judged at the time of each decision. A ``load`` or ``export`` Grant does not
allow ``infer`` through the gateway, and an ``infer`` Grant never releases a key (the gate maps no release
purpose to ``infer``)::

    callers = DirectoryCallers(reader)
    authorizer = GrantAuthorizer(store, reader, manifest)
    gw = start_gateway(vault, "minilm", ..., auth=callers, authorizer=authorizer, ...)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from strongroom.access import statements
from strongroom.access.directory import Directory, DirectoryReader, Resource, base_name
from strongroom.access.evidence import describe_resource
from strongroom.access.grants import grant_revoked, verify_grant
from strongroom.access.policy import PolicyEngine, current_policy
from strongroom.errors import AccessDenied, InvalidInput
from strongroom.gateway.auth import REPLAY_WINDOW_S, SignedRequestAuth
from strongroom.keys.identity import PublicIdentity
from strongroom.store.db import Store

if TYPE_CHECKING:
    from strongroom.vault.manifest import Manifest

__all__ = ["DirectoryCallers", "GrantAuthorizer", "directory_reader"]

#: Seconds a directory view (and a caller's positive decision) is reused.
DEFAULT_TTL_S = 10.0


def directory_reader(store: Store, public_keys: dict[str, bytes],
                     threshold: int) -> DirectoryReader:
    """A directory reader trusting the officers in ``public_keys`` (``officer:<kid>`` entries)."""
    from strongroom.keys.officers import Officers

    officers = Officers.from_public_keys(public_keys)
    if not officers.ed25519:
        raise InvalidInput("no security officers are pinned in the keyring", obj="directory",
                           remedy="initialise the vault with --officer keys")
    return DirectoryReader.for_officers(store, officers, threshold)


Marker = tuple[int, int]


class _CachedDirectory:
    """A verified view of every enrollment and label, kept while the statements are unchanged.

    Rebuilt when the access statements' head moves, and at least every ``ttl_s``.
    """

    def __init__(self, reader: DirectoryReader, ttl_s: float,
                 clock: Callable[[], float]) -> None:
        self.reader = reader
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._view: tuple[float, Marker, Directory] | None = None

    def get(self) -> tuple[Marker, Directory]:
        """The statements' current head and the view it guards (read the head first)."""
        now = self.clock()
        mark = statements.head(self.reader.store)
        with self._lock:
            if self._view is not None and self._view[0] > now and self._view[1] == mark:
                return mark, self._view[2]
        view = self.reader.view()
        with self._lock:
            self._view = (now + self.ttl_s, mark, view)
        return mark, view


class DirectoryCallers(SignedRequestAuth):
    """Signed requests from enrolled, unrevoked principals (keys from the signed directory)."""

    def __init__(self, reader: DirectoryReader, *, window_s: int = REPLAY_WINDOW_S,
                 ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time) -> None:
        super().__init__([], window_s=window_s)
        self._directory = _CachedDirectory(reader, ttl_s, clock)

    def lookup(self, kid: str) -> PublicIdentity | None:
        """The enrolled principal holding key ``kid``, or None (unknown or revoked)."""
        who = self._directory.get()[1].principal(kid)
        return None if who is None else PublicIdentity(who.key, who.name)


class GrantAuthorizer:
    """``infer`` for callers Cedar allows and who hold a valid ``infer`` Grant on the model."""

    def __init__(self, store: Store, reader: DirectoryReader, manifest: Manifest, *,
                 ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.reader = reader
        self.manifest = manifest
        self.ttl_s = ttl_s
        self.clock = clock
        self._directory = _CachedDirectory(reader, ttl_s, clock)
        self._lock = threading.Lock()
        self._allowed: dict[str, tuple[Marker, float]] = {}
        self._engine: tuple[str, PolicyEngine] | None = None

    def _policy(self) -> PolicyEngine:
        text, _ = current_policy(self.reader)
        with self._lock:
            if self._engine is None or self._engine[0] != text:
                self._engine = (text, PolicyEngine(text))
            return self._engine[1]

    def _resource(self, directory: Directory) -> Resource:
        m = self.manifest
        return describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
            directory.label(m.name))

    def check(self, principal: str, action: str, resource: str) -> None:
        """Return if ``principal`` may ``action`` (only ``infer``) on this model now."""
        if action != "infer":
            raise AccessDenied(f"the gateway serves infer only, not {action}", obj=resource)
        now = self.clock()
        mark, directory = self._directory.get()
        with self._lock:
            hit = self._allowed.get(principal)
            if hit is not None and hit[0] == mark and hit[1] > now:
                return
        who = directory.by_name(principal)
        if who is None:
            raise AccessDenied(f"{principal} is not enrolled", obj=resource,
                               remedy="ask k security officers to sign your enrollment")
        res = self._resource(directory)
        engine = self._policy()
        if not engine.decide(who, "infer", res, now).allowed:
            raise AccessDenied(f"policy denies {principal} infer on {res.name} (clearance, "
                               "compartments or vetting)", obj=resource,
                               remedy="ask the security officers about your enrollment")
        reasons: list[str] = []
        for env in statements.envelopes(self.store, "grant", subject=who.key_id,
                                        resource=base_name(self.manifest.ref)):
            try:
                g = verify_grant(env, directory, engine, res, now=now)
            except AccessDenied as exc:
                reasons.append(exc.message)
                continue
            if g.request.action != "infer" or g.request.requester_key != who.key_id:
                continue
            if grant_revoked(g, statements.envelopes(self.store, "grant-revocation",
                                                     subject=g.grant_id),
                             directory, self.reader.officers(),
                             officer_mldsa=self.reader.mldsa()):
                reasons.append("the grant was revoked")
                continue
            with self._lock:
                self._allowed[principal] = (mark, min(now + self.ttl_s, float(g.expires)))
            return
        detail = f" ({reasons[0]})" if reasons else ""
        raise AccessDenied(f"{principal} holds no valid infer grant on "
                           f"{base_name(self.manifest.ref)}{detail}", obj=resource,
                           remedy="`strongroom access request MODEL --action infer` and collect "
                           "an approval")

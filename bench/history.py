"""A lab's history written into a bench deployment's database before its server starts.

``bench/server.py --statements N --history M`` calls :func:`populate` between
``init_vault`` and ``strongroom serve``, so the release path meets a database
of a realistic size instead of a near-empty one:

* **Statements** (``N`` rows of ``access_statements``, real signed ones of other
  principals): two approvers and further people enrolled by the bench's officer
  (``directory.publish``); every second person files a request
  (``approvals.submit_request``) for one of 100 other models, approved by both
  approvers and granted (stored with ``statements.put`` and the subject,
  resource and expiry ``submit_approval`` and ``admit_grant`` give them, without
  their directory and cap checks). So two people make six rows; 20,000 rows are
  6,668 enrollments, 3,333 requests, 6,666 approvals and 3,333 Grants. Requests
  are spread over the last 30 days and Grants last 7 days, so most have expired,
  as in a lab with a past; each statement also has the audit entry its API
  route writes, at the time it was made.
* **History** (``M`` past ``key.release`` allow entries within the last 7 days):
  loads of all 8 shards of a model under a Grant valid at the time, with the
  details the gate writes (nonce, evidence key, Grant id, request digest and
  byte budget, approvers, blob id, host, server). They are appended through
  the audit log's batch API (``AuditLog.append_many``, the deployment's log
  opened as the key agent opens it, with a clock set to each entry's time),
  read back and charged with ``EgressMeter.record_events``: the ledger row of
  each is ``charge_row(entry)``, exactly what the state guard compares with the
  log. Shard sizes (1-64 MiB) keep every principal, model and the lab well
  under the default 24 h budgets, so the bench's own releases are not refused.

The keyring is unsealed in this process (two custodians' shares, as the server
will be) only to open the log with its checkpoint key, then sealed again; no
checkpoint is signed here (the server's publisher signs the first).
"""

from __future__ import annotations

import bisect
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.access import statements
from strongroom.access.approvals import MAX_GRANT_DURATION_S, AccessRequest, approve
from strongroom.access.approvals import submit_request as store_request
from strongroom.access.directory import Enrollment, Vetting, level, publish
from strongroom.access.grants import build_grant
from strongroom.audit.config import AuditSettings
from strongroom.crypto.dsse import key_id
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import Keyring
from strongroom.monitor.egress import charge_row
from strongroom.runtime.wiring import default_meter
from strongroom.settings import Settings
from strongroom.store.db import Store

DAY = 24 * 3600
YEAR = 365 * DAY
MiB = 1 << 20
#: Models the history's Grants and releases name, and the shards each load releases.
MODELS, SHARDS = 100, 8
#: Entries appended (and charged) per batch.
BATCH = 2000


@dataclass(frozen=True)
class Person:
    """A principal of the history: name, key and key id."""

    name: str
    key: Ed25519PrivateKey
    kid: str


@dataclass(frozen=True)
class GrantRec:
    """What a release under one Grant writes about it."""

    person: Person
    model: str
    request_digest: str
    grant_id: str
    approvers: tuple[str, ...]
    issued: int
    expires: int
    byte_budget: int


@dataclass
class Populated:
    """What :func:`populate` wrote, and how long it took."""

    statements: dict[str, int]
    entries: int = 0
    releases: int = 0
    charged: int = 0
    sign_s: float = 0.0
    store_s: float = 0.0
    log_s: float = 0.0

    def describe(self) -> str:
        kinds = ", ".join(f"{n:,} {k}s" for k, n in self.statements.items() if n)
        return (f"populated: {sum(self.statements.values()):,} access statements "
                f"({kinds or 'none'}): signed in {self.sign_s:.1f} s, stored in "
                f"{self.store_s:.1f} s; audit log {self.entries:,} entries ({self.releases:,} "
                f"key.release allow within 7 days, {self.charged:,} egress ledger rows) "
                f"in {self.log_s:.1f} s")


def _person(name: str) -> Person:
    key = Ed25519PrivateKey.generate()
    return Person(name, key, key_id(key.public_key()))


def _enrollment(officer: Identity, p: Person, roles: tuple[str, ...], at: int) -> str:
    return Enrollment(name=p.name, key=p.key.public_key().public_bytes_raw(), roles=roles,
                      clearance=level("secret"), compartments=("atlas",),
                      vetting=Vetting("active", at - 10, at + YEAR), serial=1,
                      issued=at).sign(officer.private_key)


def _statements(store: Store, officer: Identity, n: int, now: float, rng: random.Random,
                out: Populated) -> tuple[list[GrantRec], list[tuple[float, dict[str, Any]]]]:
    """Sign and store ``n`` statements; the Grants made and the audit events of each."""
    events: list[tuple[float, dict[str, Any]]] = []
    grants: list[GrantRec] = []
    if n <= 0:
        return grants, events
    t0 = time.perf_counter()
    approvers = [_person(f"hist-approver-{i}") for i in (1, 2)]
    pairs = max(0, n - 2) // 6  # per two people: 2 enrollments, a request, 2 approvals, a Grant
    people = [_person(f"hist-{i:06d}") for i in range(max(0, n - 2) - 4 * pairs)]
    rows: list[tuple[str, str, dict[str, Any]]] = []  # (kind, envelope, put keywords)
    officer_name = f"officer-{officer.public.key_id}"  # how the server names an officer

    def enrolled(p: Person, roles: tuple[str, ...]) -> None:
        at = int(now - rng.uniform(30 * DAY, 60 * DAY))
        env = _enrollment(officer, p, roles, at)
        rows.append(("enrollment", env, {}))
        events.append((at, {"actor": officer_name, "action": "people.enroll",
                            "obj": statements.payload_digest(env)[:16], "decision": "allow",
                            "reason": "published over the API"}))

    for p in approvers:
        enrolled(p, ("approvers",))
    for p in people:
        enrolled(p, ("requesters",))
    for p in people[:pairs]:
        created = now - rng.uniform(3600, 30 * DAY)
        model = f"hist-model-{rng.randrange(MODELS):02d}"
        req = AccessRequest.new(p.name, p.kid, model, "load", "training run",
                                MAX_GRANT_DURATION_S, 1 << 40, created).sign(p.key)
        digest = statements.payload_digest(req)
        oks = [approve(a.key, a.name, req, now=created + 60 * (i + 1))
               for i, a in enumerate(approvers)]
        grant = build_grant(p.key, req, oks, now=created + 300)
        issued = int(created + 300)
        rec = GrantRec(p, model, digest, statements.payload_digest(grant),
                       tuple(a.name for a in approvers), issued, issued + MAX_GRANT_DURATION_S,
                       1 << 40)
        grants.append(rec)
        rows.append(("request", req, {}))
        for ok in oks:
            a_st = statements.unverified_payload(ok)
            rows.append(("approval", ok, {"subject": digest, "expires": int(a_st["expires"])}))
        rows.append(("grant", grant, {"subject": p.kid, "resource": model,
                                      "expires": rec.expires}))
        obj = f"{model}@1"
        events.append((created, {"actor": p.name, "action": "access.request", "obj": obj,
                                 "decision": "allow", "reason": "training run",
                                 "details": {"access_action": "load", "request": digest}}))
        events += [(created + 60 * (i + 1), {
            "actor": a.name, "action": "access.approve", "obj": digest[:16],
            "decision": "allow", "details": {"request": digest}})
            for i, a in enumerate(approvers)]
        events.append((issued, {"actor": p.name, "action": "access.grant", "obj": obj,
                                "decision": "allow", "reason": "training run", "details": {
                                    "access_action": "load", "approvers": list(rec.approvers),
                                    "byte_budget": rec.byte_budget, "expires": rec.expires,
                                    "grant": rec.grant_id, "requester": p.name}}))
    t1 = time.perf_counter()
    for kind, env, kw in rows:
        if kind == "enrollment":
            publish(store, kind, env)
        elif kind == "request":
            store_request(store, env)
        else:
            statements.put(store, kind, env, **kw)
        out.statements[kind] = out.statements.get(kind, 0) + 1
    out.sign_s, out.store_s = t1 - t0, time.perf_counter() - t1
    return grants, events


def _synthetic_grants(now: float, rng: random.Random) -> list[GrantRec]:
    """Grants (not stored) of 400 principals for a history without ``--statements``."""
    out = []
    for i in range(400):
        issued = int(now - rng.uniform(3600, 14 * DAY))
        out.append(GrantRec(_person(f"hist-{i:06d}"), f"hist-model-{rng.randrange(MODELS):02d}",
                            secrets.token_hex(32), secrets.token_hex(32),
                            ("hist-approver-1", "hist-approver-2"), issued,
                            issued + MAX_GRANT_DURATION_S, 1 << 40))
    return out


def _releases(grants: Sequence[GrantRec], n: int, now: float, rng: random.Random
              ) -> list[tuple[float, dict[str, Any]]]:
    """``n`` key.release allow events within the last 7 days, as loads of whole models."""
    server = Settings().host_id
    blobs = {(m, s): secrets.token_hex(16) for m in range(MODELS) for s in range(SHARDS)}
    sizes = {k: rng.randrange(MiB, 64 * MiB) for k in blobs}
    ordered = sorted(grants, key=lambda g: g.issued)
    issued = [g.issued for g in ordered]
    loads = -(-n // SHARDS)
    out: list[tuple[float, dict[str, Any]]] = []
    for t in sorted(rng.uniform(now - 7 * DAY + 600, now - 60) for _ in range(loads)):
        lo, hi = bisect.bisect_left(issued, t - MAX_GRANT_DURATION_S), bisect.bisect(issued, t)
        g = ordered[rng.randrange(lo, hi)] if hi > lo else rng.choice(ordered)
        m = int(g.model.rsplit("-", 1)[1])
        host = f"10.0.{m}.{rng.randrange(1, 250)}"
        for s in range(SHARDS):
            if len(out) == n:
                break
            at = t + 0.002 * s
            shard = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
            out.append((at, {
                "actor": g.person.name, "action": "key.release",
                "obj": f"{g.model}@1/{shard}", "decision": "allow", "reason": "load",
                "shard": shard, "nbytes": sizes[(m, s)], "details": {
                    "action": "load", "approvers": list(g.approvers),
                    "blob_id": blobs[(m, s)], "evidence_key": g.person.kid,
                    "expires": int(at) + 600, "grant_bytes": g.byte_budget,
                    "grant_expires": g.expires, "grant_id": g.grant_id, "host": host,
                    "kek_version": 1, "nonce": secrets.token_hex(16), "purpose": "load",
                    "request_digest": g.request_digest, "server": server}}))
    return out


def populate(store: Store, shares: Sequence[tuple[Any, Any]], officer: Identity, *,
             statements_n: int, history_n: int, seed: int = 7) -> Populated:
    """Write ``statements_n`` statements and ``history_n`` past releases into ``store``.

    ``shares``: (share file, custodian identity) of a threshold of custodians,
    to unseal the keyring here for the log's checkpoint key.
    """
    rng = random.Random(seed)
    now = time.time()
    out = Populated({})
    grants, events = _statements(store, officer, statements_n, now, rng, out)
    if history_n <= 0 and not events:
        return out
    t0 = time.perf_counter()
    if history_n > 0:
        events += _releases(grants or _synthetic_grants(now, rng), history_n, now, rng)
    events.sort(key=lambda e: e[0])
    keyring = Keyring(store, KeysSettings(key_backend="shamir"))
    try:
        for path, ident in shares:
            content = ceremony.read_share_file(path, [ident])
            keyring.submit_share(ceremony.build_submission(keyring.status(), content))
        at = [datetime.fromtimestamp(now, UTC)]
        log = AuditSettings().open_log(store, keyring.signing_key("checkpoint"),
                                       clock=lambda: at[0])
        try:
            meter = default_meter(store, log, backfill=False)

            def timed(batch: Sequence[tuple[float, dict[str, Any]]]
                      ) -> Iterator[dict[str, Any]]:
                for when, ev in batch:  # the log encodes each event as it is yielded
                    at[0] = datetime.fromtimestamp(when, UTC)
                    yield ev

            for i in range(0, len(events), BATCH):
                batch = events[i:i + BATCH]
                indices = log.append_many(timed(batch))
                written = log.events(indices[0], indices[-1] + 1)
                rows = [ev for ev in written if charge_row(ev) is not None]
                charged = meter.record_events(rows)
                if charged != len(rows):
                    raise SystemExit(f"history: {len(rows)} release entries but {charged} "
                                     "new ledger rows")
                out.entries += len(written)
                out.releases += len(rows)
                out.charged += charged
        finally:
            log.close()
    finally:
        keyring.seal()
        keyring.close()
    out.log_s = time.perf_counter() - t0
    return out

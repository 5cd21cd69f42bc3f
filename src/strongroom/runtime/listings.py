"""The rows of the vault's listings and reports, built once for every face.

``strongroom people ls --json`` on the vault host and ``GET /v1/people`` on a
server answer with the same rows because both call the function here: the
embedded CLI (through its service) and the HTTP API's routes hand the rows to
one renderer, so local and remote output cannot drift. Each function takes the
open handles (a verified :class:`~strongroom.access.directory.Directory`, a
:class:`~strongroom.vault.vault.Vault`, a store, an audit log) and returns
plain JSON values whose keys docs/cli.md lists ("JSON output"); times are UTC
stamps (``YYYY-MM-DDTHH:MM:SSZ``), sizes byte counts, durations seconds::

    people_rows(directory, now=time.time())     # people ls
    compartment_rows(directory, vault)          # compartments ls
    document_rows(vault)                        # docs ls
    grant_rows(store, directory, engine, resource_of, officers, now=now)  # access grants
    caps_rows(grants, artifact_names)           # access caps
    break_glass_rows(store, directory)          # access break-glass --pending
    request_shown(envelope)                     # access show
    egress_report(store, compression=1.0)       # monitor egress
    verify_log(log, home, checkpoints)          # audit verify

Nothing here checks who asks: the caller (the CLI on the vault host, a route
after its role check) decides that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.timefmt import parse_utc, utc_stamp

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

    from strongroom.access.directory import Directory, Resource
    from strongroom.access.grants import VerifiedGrant
    from strongroom.access.policy import PolicyEngine
    from strongroom.audit.log import AuditLog
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

__all__ = [
    "ACTIONS",
    "break_glass_rows",
    "caps_rows",
    "compartment_rows",
    "document_rows",
    "egress_report",
    "grant_row",
    "grant_rows",
    "people_rows",
    "request_shown",
    "stamp",
    "verify_log",
]

Row = dict[str, Any]
#: The actions caps and grants are counted for, in the order they are shown.
ACTIONS = ("infer", "load", "read", "export")
#: How long after its window closes ``access grants`` still lists a grant (as ``expired``).
EXPIRED_SHOWN_S = 86400


def stamp(when: str | float | None) -> str:
    """A time as a UTC stamp, from ISO text or epoch seconds (``-`` when unknown)."""
    if when is None or when == "":
        return "-"
    return utc_stamp(when if isinstance(when, (int, float)) else parse_utc(str(when)))


def people_rows(directory: Directory, *, now: float) -> list[Row]:
    """``people ls``: each principal whose enrollment verifies and whose key is not revoked."""
    from strongroom.access.directory import level_name

    return [{"name": p.name, "kind": p.kind, "key_id": kid, "roles": list(p.roles),
             "clearance": level_name(p.clearance), "compartments": list(p.compartments),
             "vetting": p.vetting.status, "vetting_expires": stamp(p.vetting.expires),
             "employment": p.employment, "current": p.eligible(now)}
            for kid, p in sorted(directory.principals.items(), key=lambda kv: kv[1].name)
            if kid not in directory.revoked_keys]


def compartment_rows(directory: Directory, vault: Vault) -> list[Row]:
    """``compartments ls``: who is read in, and which resources (manifest or label) need it."""
    members: dict[str, list[str]] = {}
    for kid, p in directory.principals.items():
        if kid in directory.revoked_keys:
            continue
        for c in p.compartments:
            members.setdefault(c, []).append(p.name)
    resources: dict[str, list[str]] = {}
    for a in vault.list_artifacts():
        m = vault.manifest(a.name, a.version)
        label = directory.label(a.name)
        for c in set(m.compartments) | set(label.compartments if label is not None else ()):
            resources.setdefault(c, []).append(m.ref)
    return [{"compartment": c, "people": sorted(members.get(c, [])),
             "resources": sorted(resources.get(c, []))}
            for c in sorted(set(members) | set(resources))]


def document_rows(vault: Vault) -> list[Row]:
    """``docs ls``: each document version's classification and compartments (no content)."""
    from strongroom.vault.documents import list_documents

    return [{"name": d.name, "version": d.version, "classification": d.classification,
             "compartments": list(d.compartments), "bytes": d.size, "created": stamp(d.created)}
            for d in list_documents(vault)]


def grant_row(g: VerifiedGrant) -> Row:
    """A verified Grant as the API sends it (``GrantOut``)."""
    return {"grant_id": g.grant_id, "holder": g.request.requester, "action": g.request.action,
            "resource": g.request.resource, "approvers": list(g.approvers), "issued": g.issued,
            "expires": g.expires, "byte_budget": g.byte_budget, "issuer": g.issuer}


def grant_rows(store: Store, directory: Directory, engine: PolicyEngine,
               resource_of: Callable[[str], Resource], officers: Mapping[str, Ed25519PublicKey],
               *, now: float, officer_mldsa: Mapping[str, MLDSA65PublicKey] | None = None
               ) -> list[Row]:
    """``access grants``: each stored Grant whose signatures verify, with its ``state``.

    The state is derived as the release gate derives it, never read from a flag:
    ``revoked`` (by ``revoked_by``) when a revocation statement verifies under
    :func:`~strongroom.access.grants.grant_revoked`, ``expired`` when its signed
    window closed (listed for :data:`EXPIRED_SHOWN_S` afterwards), ``budget spent``
    when the egress ledger holds its whole byte budget, else ``active``.
    """
    from strongroom.access import statements
    from strongroom.access.grants import grant_revoked, verify_grant
    from strongroom.errors import AccessDenied, InvalidInput, NotFound
    from strongroom.monitor.egress import EgressMeter

    found: list[tuple[VerifiedGrant, bool]] = []
    for env in statements.envelopes(store, "grant"):
        try:
            claimed = statements.unverified_payload(env)
            res = resource_of(str(statements.unverified_payload(
                str(claimed["request"]))["resource"]))
            expires = int(claimed.get("expires", 0))
        except (AccessDenied, InvalidInput, NotFound, KeyError, TypeError, ValueError):
            continue
        expired = expires <= now
        if expired and expires <= now - EXPIRED_SHOWN_S:
            continue
        try:  # an expired grant is checked at its last second: its signatures still verify
            found.append((verify_grant(env, directory, engine, res,
                                       now=expires - 1 if expired else now), expired))
        except (AccessDenied, InvalidInput, NotFound, KeyError):
            continue
    spent = EgressMeter(store).spent(sorted({g.request_digest for g, _ in found})) \
        if found else {}
    rows = []
    for g, expired in found:
        revocations = statements.envelopes(store, "grant-revocation", subject=g.grant_id)
        by = grant_revoked(g, revocations, directory, officers,
                           officer_mldsa=officer_mldsa) if revocations else None
        used = spent.get(g.request_digest, 0)
        state = ("revoked" if by else "expired" if expired
                 else "budget spent" if used >= g.byte_budget else "active")
        rows.append({**grant_row(g), "state": state, "revoked_by": by, "spent": used})
    return rows


def caps_rows(grants: Iterable[VerifiedGrant], artifact_names: Iterable[str]) -> list[Row]:
    """``access caps``: per artifact and action, holders of valid Grants against the cap."""
    from strongroom.access.caps import AccessCaps, holders

    caps = AccessCaps()
    counts = holders(grants)
    return [{"artifact": name,
             "holders": {a: len(counts.get((name, a), set())) for a in ACTIONS},
             "caps": {a: caps.cap(a) for a in ACTIONS}}
            for name in sorted(set(artifact_names))]


def break_glass_rows(store: Store, directory: Directory) -> list[Row]:
    """``access break-glass --pending``: every break-glass access and who reviewed it."""
    from strongroom.access import statements
    from strongroom.access.breakglass import BreakGlass, review_status
    from strongroom.errors import StrongroomError

    rows = []
    for env in statements.envelopes(store, "break-glass"):
        # One unreadable row (written behind the gate's back) must not hide the others: it
        # is listed, unreviewed, saying what it is, and the listing goes on.
        try:
            digest = statements.payload_digest(env)
        except StrongroomError:
            digest = hashlib.sha256(env.encode("utf-8", "replace")).hexdigest()
        try:
            bg = BreakGlass.from_statement(statements.unverified_payload(env), digest)
        except StrongroomError as exc:
            rows.append({"break_glass": digest, "principal": "", "resource": "",
                         "reason": f"unreadable break-glass row in the database ({exc.message});"
                                   " no gate accepts it: find who wrote it",
                         "reviewed_by": [], "reviewed": False})
            continue
        done, who = review_status(bg, statements.envelopes(store, "review", subject=digest),
                                  directory)
        rows.append({"break_glass": digest, "principal": bg.principal, "resource": bg.resource,
                     "reason": bg.reason, "reviewed_by": list(who), "reviewed": done})
    return rows


def request_shown(envelope: str) -> Row:
    """``access show``: a request's digest, short code and statement, derived from its envelope.

    The digest is computed here from the signed envelope (never taken from a row),
    so the code printed is the code of the statement printed beside it: the same
    ``XXXX-XXXX-XXXX-XXXX`` the console's request page shows before a key signs.
    """
    from strongroom.access import statements
    from strongroom.units import short_code

    digest = statements.payload_digest(envelope)
    st = statements.unverified_payload(envelope)
    return {"request": digest, "code": short_code(digest),
            "requester": str(st.get("requester", "")), "action": str(st.get("action", "")),
            "resource": str(st.get("resource", "")), "purpose": str(st.get("purpose", "")),
            "duration_s": int(st.get("duration_s", 0) or 0),
            "byte_budget": int(st.get("byte_budget", 0) or 0),
            "created": stamp(st.get("created")), "attested": str(st.get("attested", "")),
            "statement": st}


def egress_report(store: Store, *, compression: float = 1.0) -> Row:
    """``monitor egress``: the budgets in force and each artifact's time to exfiltrate."""
    from strongroom.monitor.egress import EgressMeter
    from strongroom.store.catalogue import artifact_sizes

    meter = EgressMeter(store)
    budgets = [{"scope": b.scope, "subject": b.subject, "window_s": b.window_s,
                "cap_bytes": b.cap_bytes} for b in meter.budgets()]
    estimates = meter.time_to_exfiltrate(artifact_sizes(store), compression=compression)
    return {"budgets": budgets, "artifacts": [e.to_dict() for e in estimates]}


def verify_log(log: AuditLog, home: Path, checkpoints: Sequence[str]) -> Row:
    """``audit verify``: replay the log against ``checkpoints``, the high-water file and the
    witnesses (IntegrityError naming the first divergence, or entries that are gone)."""
    from strongroom.audit.highwater import HIGH_WATER_NAME, HighWater, check_extends, witness_marks

    report = log.verify(list(checkpoints))
    marks = HighWater(home / HIGH_WATER_NAME, log).marks() + witness_marks(log)
    for mark in sorted(marks, key=lambda m: m.size, reverse=True):
        check_extends(log, mark, (report.size, report.root))
    return {"summary": report.summary(), "kept_outside": len(marks),
            "latest_checkpoint": report.latest_checkpoint}

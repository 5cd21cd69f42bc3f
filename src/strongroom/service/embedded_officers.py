"""The embedded service's officer statements: enrollments, cosignatures, key revocations, labels.

:class:`EmbeddedOfficers` is the part of
:class:`~strongroom.service.embedded.EmbeddedService` that signs officer
statements with ``STRONGROOM_IDENTITY`` (a security officer pinned in the
keyring) and stores them in the local vault. The first officer signs and
stores a statement; the others add their signatures with ``people cosign``;
it counts once the keyring's officer threshold has signed. Each operation
returns ``{"statement", ..., "signer", "signatures", "threshold"}`` as
:class:`~strongroom.service.protocol.Service` documents, the same rows the
remote service builds from the server's answers, and records the decision in
the audit log; nothing here prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import NotFound
from strongroom.service.access_context import Context, open_context

if TYPE_CHECKING:
    from strongroom.store.db import Store

__all__ = ["EmbeddedOfficers"]

Row = dict[str, Any]

#: Statement kinds an officer may cosign on the vault host (policy and gateway owners are
#: set on the vault host only, so their cosignatures are too).
_COSIGNABLE = ("enrollment", "revocation", "label", "policy", "codeowners", "attest-policy")


class EmbeddedOfficers:
    """Officer statements signed here and stored in the local vault."""

    def people_enroll(self, name: str, key: Path, *, vetting_expires: int, clearance: str,
                      roles: list[str], compartments: list[str], vetting: str,
                      flags: list[str], employment: str, kind: str) -> Row:
        """Sign and store an enrollment; a higher serial supersedes the old one."""
        from strongroom.access import statements
        from strongroom.access.directory import Enrollment, Vetting, level, publish
        from strongroom.keys.identity import PublicIdentity

        pub = PublicIdentity.load(key)
        vault, ctx = open_context()
        with vault:
            keys, pq = ctx.officer_keys(), ctx.officer_pq()
            previous = [int(statements.unverified_payload(e).get("serial", 0)) for e in
                        statements.envelopes(vault.store, "enrollment", subject=pub.key_id)]
            now = int(time.time())
            e = Enrollment(name=name, key=pub.public_bytes, roles=tuple(roles),
                           clearance=level(clearance), compartments=tuple(compartments),
                           vetting=Vetting(vetting, now, int(vetting_expires), tuple(flags)),
                           employment=employment, kind=kind,
                           serial=max(previous, default=0) + 1, issued=now,
                           mldsa_key=pub.mldsa_bytes)  # a hybrid .pub pins its ML-DSA-65 key
            digest = publish(vault.store, "enrollment", e.sign(*keys, pq=pq))  # type: ignore[arg-type]
            vault.record("people.enroll", name, "allow", key_id=pub.key_id, serial=e.serial,
                         statement=digest)
            return {"statement": digest, "name": name, "key_id": pub.key_id,
                    "serial": e.serial, **_counted(vault.store, ctx, digest)}

    def people_cosign(self, statement_id: str) -> Row:
        """Add this officer's signature to a stored officer statement (8+ characters of its id)."""
        from strongroom.access import statements
        from strongroom.access.directory import publish
        from strongroom.crypto.dsse import sign_statement
        from strongroom.crypto.hybrid_sig import add_mldsa_signature

        vault, ctx = open_context()
        with vault:
            keys, pq = ctx.officer_keys(), ctx.officer_pq()
            rows = statements.find_by_prefix(vault.store, _COSIGNABLE, statement_id)
            if len(rows) != 1 or len(statement_id) < 8:
                raise NotFound(f"{len(rows)} officer statements match", obj=statement_id,
                               remedy="give at least 8 characters of the id the first "
                               "officer printed")
            kind, env = rows[0].kind, rows[0].envelope
            body = statements.unverified_payload(env)
            mine = sign_statement(body, statements.payload_type(kind), *keys)  # type: ignore[arg-type]
            if pq is not None:  # a hybrid officer cosigns with both keys
                mine = add_mldsa_signature(mine, statements.payload_type(kind), pq)
            if kind == "attest-policy":  # stored under the policy's name
                digest = statements.put(vault.store, kind, mine, subject=str(body.get("name")))
            elif kind in ("policy", "codeowners"):
                subject = "policy" if kind == "policy" else "gateway"
                digest = statements.put(vault.store, kind, mine, subject=subject)
            else:
                digest = publish(vault.store, kind, mine)
            vault.record("people.cosign", digest[:16], "allow", statement_kind=kind)
            return {"statement": digest, "kind": kind, "envelope": mine,
                    **_counted(vault.store, ctx, digest)}

    def people_revoke(self, who: str, *, reason: str) -> Row:
        """Sign a key revocation (``who``: a principal's name or a key id)."""
        from strongroom.access.directory import KeyRevocation, publish, revocation_subject
        from strongroom.access.restrictions import journal_details

        vault, ctx = open_context()
        with vault:
            keys, pq = ctx.officer_keys(), ctx.officer_pq()
            d = ctx.directory()
            named = {k: p.name for k, p in d.principals.items()}
            kid = revocation_subject(
                who, [(n, k) for k, n in named.items() if k not in d.revoked_keys],
                [(named.get(k, ""), k) for k in d.revoked_keys])
            env = KeyRevocation(kid, reason, int(time.time())).sign(*keys, pq=pq)  # type: ignore[arg-type]
            digest = publish(vault.store, "revocation", env)
            vault.record("people.revoke", who, "allow", reason=reason, key_id=kid,
                         **journal_details("revocation", env, subject=kid))
            return {"statement": digest, "key_id": kid, "envelope": env,
                    **_counted(vault.store, ctx, digest)}

    def compartments_label(self, resource: str, *, classification: str,
                           compartments: list[str], rules: dict[str, str],
                           break_glass: list[str], window_s: int, attested: str = "") -> Row:
        """Sign a resource label (``rules``: action -> rule text); a higher serial supersedes."""
        from strongroom.access import statements
        from strongroom.access.directory import ResourceLabel, Rule, level, publish

        parsed = {action: Rule.parse(text) for action, text in rules.items()}
        vault, ctx = open_context()
        with vault:
            keys, pq = ctx.officer_keys(), ctx.officer_pq()
            previous = [int(statements.unverified_payload(e).get("serial", 0))
                        for e in statements.envelopes(vault.store, "label", subject=resource)]
            lab = ResourceLabel(resource, level(classification), tuple(compartments), parsed,
                                tuple(break_glass), window_s, max(previous, default=0) + 1,
                                int(time.time()), attested=attested)
            digest = publish(vault.store, "label", lab.sign(*keys, pq=pq))  # type: ignore[arg-type]
            vault.record("compartments.label", resource, "allow", statement=digest,
                         classification=classification)
            return {"statement": digest, "resource": resource, "serial": lab.serial,
                    **_counted(vault.store, ctx, digest)}


def _counted(store: Store, ctx: Context, digest: str) -> Row:
    """Who signed now, how many officer signatures the stored statement holds, how many count."""
    from strongroom.access import statements

    # the officer's name as the server's gate knows it: enrolled, the enrollment's name; a
    # pinned officer not enrolled, officer-<key id> (an identity file's name is self-claimed)
    kid = ctx.me.public.key_id
    person = ctx.directory().principal(kid)
    stored = statements.by_digest(store, digest)
    return {"signer": person.name if person is not None else f"officer-{kid}",
            "signatures": statements.signer_count(stored) if stored is not None else 1,
            "threshold": ctx.reader.threshold}

"""What a key server lets into its table of signed access statements, and what it already holds.

``POST /v1/keyserver/statements`` needs no sender authentication (a revocation must
reach a key server even when the vault host would rather it did not), so the
statement itself is the credential. Before anything is written, each one must be
signed by someone this key server's officers let in:

* **officer statements** (enrollments, key revocations, labels, policies): by at
  least one of the directory officers pinned at ``setup`` (hybrid ones with both
  signatures). One signature is enough to be *stored* (cosignatures arriving later
  merge into the row); the Grant rule counts ``officer_threshold`` of them at use;
* **people's statements** (requests, approvals, denials, Grants, Grant revocations,
  break-glass): by a person whose enrollment ``officer_threshold`` pinned officers
  signed (stored here, or earlier in the same batch), or by a pinned officer.

A statement this server already holds with the same signatures is not written
again (nor audited), so resending, or replaying a valid statement, does not grow
the database; :func:`inventory` is what ``strongroom keyserver sync`` asks for to
send only what a server lacks. Use it from :meth:`KeyServer.receive`::

    refusals, storable = admit(store, officers, mldsa, threshold, [(kind, env), ...])
    fresh = lacking(store, storable)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey
from sqlalchemy import select

from strongroom.access import fido, statements
from strongroom.access.directory import DirectoryReader, Enrollment
from strongroom.access.statements import VerifyCache
from strongroom.crypto.hybrid_sig import mldsa_key_id
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.store.db import Store
from strongroom.store.tables.access import AccessStatement

__all__ = ["OFFICER_KINDS", "PERSON_KINDS", "admit", "inventory", "lacking"]

#: Kinds only directory officers sign.
OFFICER_KINDS = ("enrollment", "revocation", "label", "policy")
#: Kinds enrolled people sign (a Grant revocation may also come from a pinned officer).
PERSON_KINDS = ("request", "approval", "denial", "grant", "grant-revocation", "break-glass")

_OFFICER_REMEDY = (
    "have a directory officer this key server pinned at `setup` sign it, or ask "
    "this key server's officers to pin the signer (`keyserver admin setup`)"
)
_PERSON_REMEDY = (
    "sign it with the key of a person enrolled by this key server's pinned officers "
    "and send that enrollment first (`strongroom keyserver sync` sends them in order)"
)


def admit(
    store: Store,
    officers: Mapping[str, Ed25519PublicKey],
    officer_mldsa: Mapping[str, MLDSA65PublicKey],
    threshold: int,
    items: Sequence[tuple[str, str]],
) -> tuple[list[tuple[str, str] | None], list[tuple[str, str]]]:
    """For each ``(kind, envelope)``: None when its signer is one this server lets in, else
    ``(why, remedy)``; and the items as they may be stored: each envelope keeps only the
    signatures of keys known here (pinned officers, enrolled people). Verification ignores
    the others, so without this anyone could append signatures under made-up key ids to a
    valid statement, again and again, and grow its row. Reads the enrollments it needs;
    writes nothing."""
    cache = VerifyCache(size=max(16, 2 * len(items)))
    reader = DirectoryReader(
        store, lambda: dict(officers), threshold, cache, mldsa=lambda: dict(officer_mldsa)
    )
    people: dict[str, Enrollment] = {}
    claimed = {
        kid
        for kind, env in items
        if kind in PERSON_KINDS
        for kid in statements.signer_ids(env)
        if kid not in officers
    }
    if claimed:
        people.update(reader.view(key_ids=sorted(claimed), resources=()).principals)
    for kind, env in items:  # enrollments earlier in the batch vouch for their people too
        if kind == "enrollment":
            try:
                e = Enrollment.from_statement(reader.verify_officer_statement(env, kind, kind))
            except (IntegrityError, InvalidInput):
                continue
            people.setdefault(e.key_id, e)
    out: list[tuple[str, str] | None] = []
    for kind, env in items:
        try:
            if kind in OFFICER_KINDS:
                cache.verify(env, kind, officers, pq=officer_mldsa, obj=kind)
            else:
                _by_person(env, kind, people, officers, officer_mldsa, cache)
            out.append(None)
        except (IntegrityError, InvalidInput) as exc:
            who = (
                "a directory officer this key server pinned"
                if kind in OFFICER_KINDS
                else "a person enrolled by this key server's pinned officers (or a pinned officer)"
            )
            out.append(
                (
                    f"not signed by {who}: {exc.message}",
                    _OFFICER_REMEDY if kind in OFFICER_KINDS else _PERSON_REMEDY,
                )
            )
    known = set(officers) | {
        mldsa_key_id(k) for k in officer_mldsa.values()
    }
    for e in people.values():
        known.add(e.key_id)
        known.update(mldsa_key_id(k) for k in e.pq_pins().values())
    return out, [(kind, _known_signatures(env, known)) for kind, env in items]


def _known_signatures(env: str, known: set[str]) -> str:
    """``env`` without the signature entries of key ids not in ``known`` (unchanged when none)."""
    parsed = json.loads(env)
    sigs = parsed.get("signatures") if isinstance(parsed, dict) else None
    if not isinstance(sigs, list):
        return env
    kept = [s for s in sigs if isinstance(s, dict) and s.get("keyid") in known]
    if len(kept) == len(sigs):
        return env
    return json.dumps({**parsed, "signatures": kept}, sort_keys=True, separators=(",", ":"))


def _by_person(
    env: str,
    kind: str,
    people: Mapping[str, Enrollment],
    officers: Mapping[str, Ed25519PublicKey],
    officer_mldsa: Mapping[str, MLDSA65PublicKey],
    cache: VerifyCache,
) -> None:
    """IntegrityError unless an enrolled person (or a pinned officer) the envelope names signed it."""
    kids = statements.signer_ids(env)
    signers = {k: people[k] for k in kids if k in people}
    if signers and fido.is_webauthn(env):  # signed in the console with an enrolled security key
        fido.verify_envelope(env, kind, signers, obj=kind)
        return
    trusted: dict[str, Ed25519PublicKey] = {k: e.public_key for k, e in signers.items()}
    pins: dict[str, MLDSA65PublicKey] = {}
    for e in signers.values():
        pins.update(e.pq_pins())
    for k in kids:
        if k in officers:
            trusted[k] = officers[k]
            if k in officer_mldsa:
                pins[k] = officer_mldsa[k]
    if not trusted:
        raise IntegrityError("no key it names is known here", obj=kind)
    cache.verify(env, kind, trusted, pq=pins, obj=kind)


def lacking(store: Store, items: Sequence[tuple[str, str]]) -> list[bool]:
    """For each ``(kind, envelope)``: whether storing it changes anything (a new statement, or
    signatures the stored copy lacks)."""
    digests = [statements.payload_digest(env) for _, env in items]
    held: dict[str, str] = {}
    with store.session(readonly=True) as s:
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            held.update(
                (str(d), str(e))
                for d, e in s.execute(
                    select(AccessStatement.digest, AccessStatement.envelope).where(
                        AccessStatement.digest.in_(chunk)
                    )
                ).all()
            )
    return [
        d not in held or not statements.signatures(env) <= statements.signatures(held[d])
        for d, (_, env) in zip(digests, items, strict=True)
    ]


def inventory(store: Store, kinds: Sequence[str]) -> dict[str, list[str]]:
    """The statements of ``kinds`` held, by digest: the signers' key ids of officer statements
    (which gain cosignatures), an empty list for the others."""
    out: dict[str, list[str]] = {}
    with store.session(readonly=True) as s:
        for digest in s.scalars(
            select(AccessStatement.digest).where(AccessStatement.kind.in_(kinds))
        ).all():
            out[str(digest)] = []
        for digest, env in s.execute(
            select(AccessStatement.digest, AccessStatement.envelope).where(
                AccessStatement.kind.in_([k for k in kinds if k in OFFICER_KINDS])
            )
        ).all():
            try:
                out[str(digest)] = sorted(statements.signer_ids(str(env)))
            except InvalidInput:
                continue
    return out

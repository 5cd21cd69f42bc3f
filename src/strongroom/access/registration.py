"""Binding a security key to an enrolled person, and the officers' step that makes it count.

1. The person runs ``strongroom console register-token`` (or
   :func:`make_register_token`): a short-lived, one-time token signed with
   their Ed25519 identity key.
2. In the console they paste the token and touch their security key; the
   console checks the token against the officer-verified directory and stores
   the new credential as **pending** (:func:`store_pending`), showing its id.
3. Officers check the id with the person (out of band) and sign an updated
   enrollment listing it: ``strongroom console endorse NAME --credential ID``
   (or :func:`endorsed_enrollment` + ``Enrollment.sign``). Only then does the
   key sign in and approve: the gate reads keys from the enrollment alone.
4. At each sign-in and approval the console stores the key's signature counter
   with :func:`advance_sign_count`, which refuses a counter that did not grow.

The web console and the ``strongroom console`` commands both call these functions.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import select

from strongroom.access.directory import Directory, Enrollment
from strongroom.access.fido import SecurityKey, b64url, unb64url
from strongroom.crypto.dsse import sign_statement, verify_statement
from strongroom.errors import AccessDenied, IntegrityError, InvalidInput, NotFound
from strongroom.store.db import Store
from strongroom.store.tables.console import ConsoleCredential

if TYPE_CHECKING:  # only its type: access sits below keys
    from strongroom.keys.identity import Identity

__all__ = [
    "REGISTER_PAYLOAD_TYPE",
    "RegisterToken",
    "advance_sign_count",
    "endorsed_enrollment",
    "make_register_token",
    "pending",
    "store_pending",
    "verify_register_token",
]

REGISTER_PAYLOAD_TYPE = "application/vnd.strongroom.console.register.v1+json"
#: Longest a registration token lives.
MAX_TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class RegisterToken:
    """A verified registration token: who may register a key, once, until when."""

    name: str
    key_id: str
    nonce: str
    expires: int


def make_register_token(identity: Identity, *, now: float | None = None,
                        ttl_s: int = 900) -> str:
    """A one-time token letting ``identity``'s owner register a security key in the console."""
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise InvalidInput(f"token lifetime must be 1..{MAX_TOKEN_TTL_S} s", obj="register token")
    issued = int(time.time() if now is None else now)
    env = sign_statement({"name": identity.name, "key_id": identity.public.key_id,
                          "nonce": secrets.token_hex(16), "issued": issued,
                          "expires": issued + ttl_s}, REGISTER_PAYLOAD_TYPE, identity.private_key)
    return b64url(env.encode())


def verify_register_token(token: str, directory: Directory, *, now: float) -> tuple[
        RegisterToken, Enrollment]:
    """The token and its signer's enrollment, if an enrolled, eligible person signed it."""
    try:
        env = unb64url(token.strip()).decode()
        import json

        claimed = json.loads(base64.b64decode(json.loads(env)["payload"]))
        kid = str(claimed["key_id"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidInput("not a registration token", obj="register token",
                           remedy="paste the token `strongroom console register-token` printed"
                           ) from None
    who = directory.principal(kid)
    if who is None:
        raise AccessDenied("the token's signer is not an enrolled, unrevoked person",
                           obj="register token", remedy="ask the security officers to enroll you")
    try:
        st = verify_statement(env, REGISTER_PAYLOAD_TYPE, {who.key_id: who.public_key},
                              obj="register token")
        tok = RegisterToken(str(st["name"]), str(st["key_id"]), str(st["nonce"]),
                            int(st["expires"]))
        issued = int(st["issued"])
    except IntegrityError as exc:
        raise AccessDenied(f"the registration token does not verify: {exc.message}",
                           obj="register token") from None
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("the registration token is malformed", obj="register token") from None
    if tok.key_id != who.key_id or tok.name != who.name:
        raise AccessDenied("the token names someone else than its signer", obj="register token")
    if not issued - 300 <= now < tok.expires or tok.expires - issued > MAX_TOKEN_TTL_S:
        raise AccessDenied("the registration token has expired", obj="register token",
                           remedy="make a new one: `strongroom console register-token`")
    if not who.eligible(now):
        raise AccessDenied(f"{who.name}'s vetting or employment is not current",
                           obj="register token")
    return tok, who


def store_pending(store: Store, token: RegisterToken, key: SecurityKey, sign_count: int,
                  *, now: float) -> None:
    """Record a newly registered key (once per token); officers must still enroll it."""
    with store.session() as s:
        if s.scalars(select(ConsoleCredential.credential_id).where(
                ConsoleCredential.token_nonce == token.nonce)).first() is not None:
            raise AccessDenied("this registration token was already used", obj="register token",
                               remedy="make a new one: `strongroom console register-token`")
        if s.get(ConsoleCredential, key.id) is not None:
            raise InvalidInput("this security key is already registered", obj=key.id[:16])
        s.add(ConsoleCredential(credential_id=key.id, person_key=token.key_id, name=token.name,
                                public_key=b64url(key.public_key), alg=key.alg,
                                rp_id=key.rp_id, origin=key.origins[0],
                                token_nonce=token.nonce, sign_count=sign_count,
                                registered_at=now, last_used_at=0.0))


def pending(store: Store, person_key: str | None = None) -> list[ConsoleCredential]:
    """Registered keys (all, or one person's), oldest first; untrusted until enrolled."""
    q = select(ConsoleCredential).order_by(ConsoleCredential.registered_at)
    if person_key is not None:
        q = q.where(ConsoleCredential.person_key == person_key)
    with store.session() as s:
        return list(s.scalars(q))


def advance_sign_count(store: Store, credential_id: str, count: int, *, now: float) -> bool:
    """Store a registered key's signature counter; False (nothing stored) if it did not grow.

    A non-zero counter that fails to grow is the sign of a cloned security key.
    A key that is not registered here has no counter to check (True).
    """
    with store.session() as s:
        row = s.get(ConsoleCredential, credential_id)
        if row is None:
            return True
        if (count or row.sign_count) and count <= row.sign_count:
            return False
        row.sign_count = count
        row.last_used_at = now
    return True


def endorsed_enrollment(store: Store, current: Enrollment, credential_ids: list[str], *,
                        now: float) -> Enrollment:
    """``current`` with the given registered keys added, serial + 1: for officers to sign.

    ``credential_ids`` are prefixes (8+ characters) of registered credential
    ids, each registered with a token of this person's key.
    """
    if not credential_ids:
        raise InvalidInput("name at least one credential to enroll", obj=current.name,
                           remedy="`strongroom console pending` lists registered keys")
    rows = pending(store, current.key_id)
    added = list(current.security_keys)
    for prefix in credential_ids:
        found = [r for r in rows if len(prefix) >= 8 and r.credential_id.startswith(prefix)]
        if len(found) != 1:
            raise NotFound(f"{len(found)} keys registered by {current.name} match", obj=prefix,
                           remedy="give 8+ characters of the id the console showed")
        r = found[0]
        key = SecurityKey(unb64url(r.credential_id), unb64url(r.public_key), r.alg, r.rp_id,
                          (r.origin,), f"registered {time.strftime('%Y-%m-%d', time.gmtime(r.registered_at))}")
        if any(k.credential_id == key.credential_id for k in added):
            continue
        added.append(key)
    return replace(current, security_keys=tuple(added), serial=current.serial + 1,
                   issued=int(now))

"""WebAuthn endpoints: register a security key, sign in, approve a request, issue a Grant.

Each ceremony has a ``begin`` (options with a challenge, remembered in the
server-side session) and a ``finish`` (the browser's credential, checked
against that challenge, used once). For approvals and Grants the challenge is
the statement's digest (:func:`strongroom.access.fido.challenge`) and the
stored envelope is verified exactly as the release gate verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from strongroom.access import fido, statements
from strongroom.access.approvals import (
    MAX_APPROVAL_TTL_S,
    AccessRequest,
    Approval,
    submit_approval,
)
from strongroom.access.directory import Enrollment
from strongroom.access.grants import (
    grant_statement,
    pending_grant_inputs,
    revocation_statement,
    store_grant,
)
from strongroom.access.registration import (
    advance_sign_count,
    store_pending,
    verify_register_token,
)
from strongroom.access.restrictions import journal_details
from strongroom.errors import AccessDenied, InvalidInput, StrongroomError
from strongroom.server.console import data
from strongroom.server.console.core import Console, ConsoleError
from strongroom.server.console.sessions import Session

__all__ = ["add_routes", "add_seal_routes", "finish_signing", "reason_of", "signed_in_post",
           "start_signing"]

#: Largest JSON body a WebAuthn endpoint reads.
MAX_BODY = 64 * 1024
#: How long a console approval stays usable.
APPROVAL_TTL_S = 24 * 3600
#: Longest reason a denial carries.
MAX_DENIAL_REASON = 500


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object body, read up to :data:`MAX_BODY` bytes (413 beyond, 400 undecodable)."""
    from strongroom.server.bodies import decode_json

    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        raise ConsoleError(413, "request body too large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ConsoleError(413, "request body too large")
    body = decode_json(bytes(raw))
    if not isinstance(body, dict):
        raise ConsoleError(400, "the body is not a JSON object")
    return body


def _request_options(console: Console, challenge: bytes, keys: tuple[fido.SecurityKey, ...]
                     ) -> dict[str, Any]:
    return {"challenge": fido.b64url(challenge), "rpId": console.config.rp_id, "timeout": 120000,
            "userVerification": "required",
            "allowCredentials": [{"type": "public-key", "id": k.id} for k in keys]}


def _host(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _imaginary_credential(console: Console, name: str) -> str:
    """A credential id for a name without keys: the same on every request, worker and host."""
    mac = console.ctx.audit().redactor.hmac(f"console.imaginary-credential:{name}")
    return fido.b64url(hashlib.sha256(mac.encode()).digest())


def _check_count(console: Console, key_id: str, count: int) -> None:
    """Console-side clone check: a non-zero sign count must grow; store the new one."""
    if not advance_sign_count(console.ctx.store, key_id, count, now=time.time()):
        raise ConsoleError(403, "this security key's signature counter went backwards: it "
                           "may be cloned; ask the security officers to revoke it")


def _signed_by_key(console: Console, sess: Session, me: Enrollment, body: dict[str, Any],
                   ceremony_kind: str, statement_kind: str, missing: str,
                   ) -> tuple[str, fido.SecurityKey, dict[str, Any]]:
    """The statement the begin step prepared, signed by the browser's assertion.

    Takes (once) the session's ceremony of ``ceremony_kind``; returns the WebAuthn
    envelope, the approver's enrolled key that made it, and the ceremony.
    """
    ceremony = console.sessions.take_ceremony(sess, ceremony_kind)
    if ceremony is None:
        raise ConsoleError(400, f"{missing} (or it timed out): start again")
    assertion = fido.Assertion.from_browser(body.get("credential"))
    key = _enrolled_key(me, assertion)
    env = fido.envelope(statements.payload_type(statement_kind),
                        base64.b64decode(ceremony["payload"]), me.key_id, assertion)
    return env, key, ceremony


def _start_signing(console: Console, sess: Session, me: Enrollment, kind: str,
                   statement_kind: str, statement: dict[str, Any], *, show: bool = True,
                   **keep: str) -> JSONResponse:
    """Begin a signing ceremony: the statement's digest is the WebAuthn challenge.

    The session keeps the canonical payload (and ``keep``) for the finish step;
    the browser gets the request options (and, with ``show``, the statement).
    """
    ptype, payload = fido.unsigned_payload(statement_kind, statement)
    challenge = fido.challenge(ptype, payload)
    console.sessions.set_ceremony(sess, {
        "kind": kind, "challenge": fido.b64url(challenge),
        "payload": base64.b64encode(payload).decode(), **keep})
    out: dict[str, Any] = {"options": _request_options(console, challenge, me.security_keys)}
    if show:
        out["statement"] = statement
    return JSONResponse(out)


async def _finish_signing(console: Console, request: Request, kind: str, statement_kind: str,
                          missing: str) -> tuple[Enrollment, str, fido.SecurityKey,
                                                 dict[str, Any], fido.WebAuthnVerified]:
    """The finish step of a signing ceremony, checked (CSRF, signer, assertion, counter).

    Returns the signer, the WebAuthn envelope, the key that signed, the
    session's ceremony and the verified statement; nothing is stored yet.
    """
    sess, body, me = await signed_in_post(console, request)
    env, key, ceremony = _signed_by_key(console, sess, me, body, kind, statement_kind, missing)
    verified = fido.verify_envelope(env, statement_kind, {me.key_id: me},
                                    obj=f"{statement_kind} by {me.name}")
    _check_count(console, key.id, verified.sign_count)  # before anything is stored
    return me, env, key, ceremony, verified


async def signed_in_post(console: Console, request: Request, *roles: str
                         ) -> tuple[Session, dict[str, Any], Enrollment]:
    """A begin or finish step's session, JSON body and signed-in person (checked CSRF).

    With ``roles`` the person must hold one of them (403 otherwise).
    """
    sess = console.session(request)
    body = await _body(request)
    console.check_post(request, sess, None)
    me = console.person(sess)
    if roles:
        console.require_role(me, *roles)
    return sess, body, me


async def _on_request(console: Console, request: Request
                      ) -> tuple[Session, dict[str, Any], Enrollment, data.RequestItem]:
    """A begin step about one access request: session, body, signer, the request as they see it."""
    sess, body, me = await signed_in_post(console, request)
    return sess, body, me, data.request_item(console, str(body.get("request", "")), me)


def _reason(body: dict[str, Any], verb: str) -> str:
    reason = str(body.get("reason", "")).strip()
    if not reason or len(reason) > MAX_DENIAL_REASON:
        raise ConsoleError(400, f"say why you {verb} (1-{MAX_DENIAL_REASON} characters): the "
                           "requester and the auditors read it")
    return reason


def _enrolled_key(who: Enrollment, assertion: fido.Assertion) -> fido.SecurityKey:
    for k in who.security_keys:
        if k.credential_id == assertion.credential_id:
            return k
    raise ConsoleError(403, fido.NOT_REGISTERED)


def add_routes(router: APIRouter, console: Console) -> None:
    """Add the ``/webauthn/...`` endpoints."""
    ctx = console.ctx
    config = console.config

    @router.post("/webauthn/register/begin", include_in_schema=False)
    async def register_begin(request: Request) -> JSONResponse:
        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers.structs import (
            AuthenticatorSelectionCriteria,
            PublicKeyCredentialDescriptor,
            ResidentKeyRequirement,
            UserVerificationRequirement,
        )

        sess = console.session(request)
        body = await _body(request)
        console.check_post(request, sess, None)
        now = time.time()
        _, who = verify_register_token(str(body.get("token", "")), ctx.directory(), now=now)
        options = generate_registration_options(
            rp_id=config.rp_id, rp_name=config.rp_name, user_name=who.name,
            user_id=who.key_id.encode(), user_display_name=who.name,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED),
            supported_pub_key_algs=_algs(),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=k.credential_id)
                                 for k in who.security_keys])
        console.sessions.set_ceremony(sess, {
            "kind": "register", "challenge": fido.b64url(options.challenge),
            "token": str(body.get("token", ""))})
        return JSONResponse({"options": _json(options_to_json(options))})

    @router.post("/webauthn/register/finish", include_in_schema=False)
    async def register_finish(request: Request) -> JSONResponse:
        from webauthn import verify_registration_response
        from webauthn.helpers.exceptions import WebAuthnException

        sess = console.session(request)
        body = await _body(request)
        console.check_post(request, sess, None)
        ceremony = console.sessions.take_ceremony(sess, "register")
        if ceremony is None:
            raise ConsoleError(400, "no registration in progress (or it timed out): start again")
        now = time.time()
        tok, who = verify_register_token(ceremony["token"], ctx.directory(), now=now)
        try:
            reg = verify_registration_response(
                credential=body.get("credential") or {},
                expected_challenge=fido.unb64url(ceremony["challenge"]),
                expected_rp_id=config.rp_id, expected_origin=config.origin,
                require_user_verification=True, supported_pub_key_algs=_algs())
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise ConsoleError(400, f"the security key's registration does not verify ({exc})"
                               ) from None
        import cbor2

        try:
            alg = int(cbor2.loads(reg.credential_public_key)[3])
            key = fido.SecurityKey(reg.credential_id, reg.credential_public_key, alg,
                                   config.rp_id, (config.origin,))
        except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError):
            raise ConsoleError(400, "the security key's public key is malformed") from None
        store_pending(ctx.store, tok, key, reg.sign_count, now=now)
        with ctx.vault(actor=who.name) as vault:
            vault.record("console.register-key", who.name, "allow", credential=key.id[:32],
                         alg=fido.ALGORITHMS[alg])
        return JSONResponse({"credential_id": key.id, "status": "pending",
                             "next": "ask the security officers to enroll this key: "
                                     f"strongroom console endorse {who.name} "
                                     f"--credential {key.id[:16]}"})

    @router.post("/webauthn/login/begin", include_in_schema=False)
    async def login_begin(request: Request) -> JSONResponse:
        sess = console.session(request)
        body = await _body(request)
        console.check_post(request, sess, None)
        name = str(body.get("name", "")).strip()[:128]
        console.signins.check(_host(request))
        challenge = secrets.token_bytes(32)
        options = _request_options(console, challenge, ())
        if name:
            # Unknown names get a stable imaginary credential (WebAuthn section 14.6.2):
            # the answer does not tell a visitor who has a key enrolled.
            who = ctx.directory().by_name(name)
            keys = who.security_keys if who is not None else ()
            options["allowCredentials"] = (
                [{"type": "public-key", "id": k.id} for k in keys] if keys
                else [{"type": "public-key", "id": _imaginary_credential(console, name)}])
        console.sessions.set_ceremony(sess, {"kind": "login", "challenge": fido.b64url(challenge)})
        return JSONResponse({"options": options})

    @router.post("/webauthn/login/finish", include_in_schema=False)
    async def login_finish(request: Request) -> JSONResponse:
        sess = console.session(request)
        body = await _body(request)
        console.check_post(request, sess, None)
        host = _host(request)
        console.signins.check(host)
        ceremony = console.sessions.take_ceremony(sess, "login")
        if ceremony is None:
            raise ConsoleError(400, "no sign-in in progress (or it timed out): start again")
        now = time.time()
        claimed: str | None = None
        try:
            assertion = fido.Assertion.from_browser(body.get("credential"))
            claimed = fido.b64url(assertion.credential_id)
            directory = ctx.directory()
            who = next((p for kid, p in directory.principals.items()
                        if kid not in directory.revoked_keys
                        and any(k.credential_id == assertion.credential_id
                                for k in p.security_keys)), None)
            if who is None:
                raise ConsoleError(403, "this security key is not enrolled for anyone (officers "
                                   "must endorse it first: strongroom console endorse)")
            key = _enrolled_key(who, assertion)
            count = fido.verify_assertion(assertion, key, fido.unb64url(ceremony["challenge"]),
                                          obj="sign-in")
            if not who.eligible(now):
                raise ConsoleError(403, f"{who.name}'s vetting or employment is not current")
            _check_count(console, key.id, count)
        except StrongroomError as exc:  # ConsoleError included
            console.signins.failed(host, claimed, exc)
            raise
        console.sessions.end(sess)  # rotate: a cookie set before sign-in is worthless after it
        value, _ = console.sessions.new(who.key_id, now=now)
        with ctx.vault(actor=who.name) as vault:
            vault.record("console.sign-in", who.name, "allow", credential=key.id[:32])
        response = JSONResponse({"redirect": "/console/inbox"})
        console.set_cookie(response, value)
        return response

    @router.post("/webauthn/approve/begin", include_in_schema=False)
    async def approve_begin(request: Request) -> JSONResponse:
        sess, _, me, item = await _on_request(console, request)
        digest = item.digest
        if not item.may_approve:
            raise ConsoleError(403, item.why_not or "you may not approve this request")
        now = int(time.time())
        approval = Approval(digest, me.name, me.key_id, "approve", secrets.token_hex(16), now,
                            now + APPROVAL_TTL_S)
        return _start_signing(console, sess, me, "approve", "approval",
                              approval.to_statement(), request=digest)

    @router.post("/webauthn/approve/finish", include_in_schema=False)
    async def approve_finish(request: Request) -> JSONResponse:
        me, env, key, ceremony, _ = await _finish_signing(console, request, "approve",
                                                          "approval", "no approval in progress")
        submit_approval(ctx.store, env, directory=ctx.directory())
        digest = str(ceremony["request"])
        with ctx.vault(actor=me.name) as vault:
            vault.record("access.approve", digest[:16], "allow", request=digest,
                         via="console security key", credential=key.id[:32])
        return JSONResponse({"ok": True, "redirect": f"/console/requests/{digest}"})

    @router.post("/webauthn/deny/begin", include_in_schema=False)
    async def deny_begin(request: Request) -> JSONResponse:
        sess, body, me, item = await _on_request(console, request)
        digest = item.digest
        reason = _reason(body, "deny")
        if not item.may_approve:  # whoever may approve may deny; a denial closes the request
            raise ConsoleError(403, item.why_not or "you may not decide this request")
        now = int(time.time())
        denial = Approval(digest, me.name, me.key_id, "deny", secrets.token_hex(16), now,
                          now + MAX_APPROVAL_TTL_S, reason)
        return _start_signing(console, sess, me, "deny", "denial", denial.to_statement(),
                              request=digest)

    @router.post("/webauthn/deny/finish", include_in_schema=False)
    async def deny_finish(request: Request) -> JSONResponse:
        me, env, key, ceremony, verified = await _finish_signing(
            console, request, "deny", "denial", "no denial in progress")
        submit_approval(ctx.store, env, "denial", directory=ctx.directory())
        digest = str(ceremony["request"])
        with ctx.vault(actor=me.name) as vault:
            vault.record("access.deny", digest[:16], "allow",
                         str(verified.statement.get("reason", ""))[:300], request=digest,
                         via="console security key", credential=key.id[:32],
                         **journal_details("denial", env, subject=digest))
        return JSONResponse({"ok": True, "redirect": f"/console/requests/{digest}"})

    @router.post("/webauthn/revoke/begin", include_in_schema=False)
    async def revoke_begin(request: Request) -> JSONResponse:
        sess, body, me, item = await _on_request(console, request)
        digest = item.digest
        reason = _reason(body, "revoke")
        if not item.granted:
            raise ConsoleError(404, "no Grant was issued for this request")
        if not item.may_revoke:
            raise ConsoleError(403, f"the Grant was revoked by {item.revoked_by} already"
                               if item.revoked_by else item.grant_state or "only the requester, "
                               "the Grant's approvers and security officers may revoke it")
        st = revocation_statement(item.granted, me.name, me.key_id, reason, now=time.time())
        return _start_signing(console, sess, me, "revoke", "grant-revocation", st,
                              request=digest, grant=item.granted)

    @router.post("/webauthn/revoke/finish", include_in_schema=False)
    async def revoke_finish(request: Request) -> JSONResponse:
        me, env, key, ceremony, verified = await _finish_signing(
            console, request, "revoke", "grant-revocation", "no revocation in progress")
        grant_id = str(ceremony["grant"])
        statements.put(ctx.store, "grant-revocation", env, subject=grant_id)
        digest = str(ceremony["request"])
        with ctx.vault(actor=me.name) as vault:
            vault.record("access.revoke-grant", grant_id[:16], "allow",
                         str(verified.statement.get("reason", ""))[:300], grant=grant_id,
                         via="console security key", credential=key.id[:32],
                         **journal_details("grant-revocation", env, subject=grant_id))
        return JSONResponse({"ok": True, "redirect": f"/console/requests/{digest}"})

    @router.post("/webauthn/grant/begin", include_in_schema=False)
    async def grant_begin(request: Request) -> JSONResponse:
        sess, _, me, item = await _on_request(console, request)
        digest = item.digest
        if item.granted:
            raise ConsoleError(409, "a Grant was issued for this request already")
        if item.denied:
            raise ConsoleError(409, "the request was denied")
        if item.assignment is None:
            raise ConsoleError(409, "the approvals do not meet the rule yet")
        if me.name != item.request.requester and me.name not in item.counted:
            raise ConsoleError(403, "only the requester or a counted approver assembles the Grant")
        request_env, approvals = pending_grant_inputs(ctx.store, digest, ctx.directory())
        st = grant_statement(request_env, approvals, now=time.time())
        return _start_signing(console, sess, me, "grant", "grant", st, show=False,
                              request=digest)

    @router.post("/webauthn/grant/finish", include_in_schema=False)
    async def grant_finish(request: Request) -> JSONResponse:
        me, env, key, ceremony, _ = await _finish_signing(console, request, "grant", "grant",
                                                          "no Grant in progress")
        digest = str(ceremony["request"])
        req = AccessRequest.from_statement(statements.unverified_payload(
            statements.unverified_payload(env)["request"]))
        if statements.payload_digest(statements.unverified_payload(env)["request"]) != digest:
            raise ConsoleError(400, "the Grant is for another request")
        now = time.time()
        directory = ctx.directory()
        resource = data.resource(console, req.resource, directory)
        engine = console.engine()
        try:
            verified = store_grant(ctx.store, env, directory, engine, resource, now=now)
        except InvalidInput as exc:
            raise AccessDenied(exc.message, obj=digest[:16]) from None
        with ctx.vault(actor=me.name) as vault:
            vault.record("access.grant", resource.name, "allow", reason=req.purpose,
                         grant=verified.grant_id, approvers=list(verified.approvers),
                         access_action=req.action, requester=req.requester,
                         expires=verified.expires, byte_budget=verified.byte_budget,
                         via="console security key", credential=key.id[:32])
        return JSONResponse({"grant": verified.grant_id, "approvers": list(verified.approvers),
                             "redirect": f"/console/requests/{digest}"})


def add_seal_routes(router: APIRouter, console: Console) -> None:
    """Add ``/webauthn/seal/{begin,finish}``: a security officer seals the vault with a key.

    The begin step shows the officer the seal statement (which host, or every
    host sharing the database, and why); the key signs its digest; the finish
    step verifies the assertion against the officer's enrolled key, keeps the
    signed statement, audits who sealed and how, and answers once sealed.
    """
    ctx = console.ctx

    @router.post("/webauthn/seal/begin", include_in_schema=False)
    async def seal_begin(request: Request) -> JSONResponse:
        sess, body, me = await signed_in_post(console, request, "security-officers")
        scope = str(body.get("scope", "host"))
        if scope not in ("host", "all"):
            raise ConsoleError(400, "scope is 'host' (this host) or 'all' (every host)")
        st = {"officer": me.name, "officer_key": me.key_id, "host": ctx.settings.host_id,
              "scope": scope, "reason": _reason(body, "seal"), "issued_at": int(time.time())}
        return _start_signing(console, sess, me, "seal", "seal", st)

    @router.post("/webauthn/seal/finish", include_in_schema=False)
    async def seal_finish(request: Request) -> JSONResponse:
        me, env, key, _, verified = await _finish_signing(console, request, "seal", "seal",
                                                          "no seal in progress")
        console.require_role(me, "security-officers")
        st = verified.statement
        digest = statements.payload_digest(env)
        statements.put(ctx.store, "seal", env, subject=digest)
        status = ctx.seal_host(me.name, all_hosts=st.get("scope") == "all",
                               via="console security key", credential=key.id[:32],
                               reason=str(st.get("reason", ""))[:300], statement=digest)
        return JSONResponse({"sealed": status.sealed, "redirect": "/console/status"})


def _algs() -> list[Any]:
    from webauthn.helpers.cose import COSEAlgorithmIdentifier

    return [COSEAlgorithmIdentifier.ECDSA_SHA_256, COSEAlgorithmIdentifier.EDDSA,
            COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256]


def _json(text: str) -> Any:
    import json

    return json.loads(text)



# The signing-ceremony steps other console modules build on (alert acknowledgements).
reason_of = _reason
start_signing = _start_signing
finish_signing = _finish_signing

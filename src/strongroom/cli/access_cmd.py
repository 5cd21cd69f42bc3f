"""``strongroom access request|approve|deny|grants|revoke|break-glass|caps|policy``.

Every command signs with the identity named by ``STRONGROOM_IDENTITY``
(``strongroom keys new-identity``); nothing here is trusted by the release
gate without those signatures. ``approve`` issues the Grant as soon as the
rule is met. Heavy modules (the vault, Cedar, SQLAlchemy) are imported inside
the commands so that the CLI starts quickly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from strongroom.artifacts import ArtifactRef, base_name
from strongroom.cli.render import duration as duration_text
from strongroom.cli.render import stamp
from strongroom.errors import AccessDenied, InvalidInput, NotFound

if TYPE_CHECKING:
    from strongroom.access.directory import Directory, DirectoryReader, Resource
    from strongroom.access.grants import VerifiedGrant
    from strongroom.access.policy import PolicyEngine
    from strongroom.keys.identity import Identity
    from strongroom.vault.vault import Vault

__all__ = ["access_app", "open_context", "register"]

access_app = typer.Typer(help="Requests, signed approvals, grants, break-glass, caps, policy.",
                         no_args_is_help=True)
policy_app = typer.Typer(help="Show or replace the Cedar policy (officers' quorum).",
                         no_args_is_help=True)
access_app.add_typer(policy_app, name="policy")
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def identity() -> Identity:
    """The identity this CLI signs with (``STRONGROOM_IDENTITY``)."""
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.identity import Identity

    path = KeysSettings().identity
    if path is None:
        raise AccessDenied("no identity to sign with", obj="STRONGROOM_IDENTITY",
                           remedy="set STRONGROOM_IDENTITY to your identity file "
                           "(`strongroom keys new-identity`)")
    return Identity.load(Path(path))


class Context:
    """An open vault, the signer, a verifying directory reader and the policy in force."""

    def __init__(self, vault: Vault, me: Identity) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from strongroom.access.directory import DirectoryReader

        self.vault = vault
        self.me = me
        keys = vault.keys.public_keys()
        self.officers = {k.split(":", 1)[1]: Ed25519PublicKey.from_public_bytes(v)
                         for k, v in keys.items() if k.startswith("officer:")}
        status = vault.keys.status()
        # The pinned threshold; until the key service reports it, demand every officer.
        threshold = int(getattr(status, "officer_threshold", 0) or len(self.officers) or 1)
        self.reader: DirectoryReader = DirectoryReader(vault.store, lambda: self.officers,
                                                       threshold)

    @property
    def name(self) -> str:
        """Who signs: the identity's name."""
        return self.me.public.principal

    def directory(self) -> Directory:
        """The verified directory."""
        return self.reader.view()

    def engine(self) -> PolicyEngine:
        """The policy in force."""
        from strongroom.access.policy import PolicyEngine, current_policy

        return PolicyEngine(current_policy(self.reader)[0])

    def resource(self, name: str, directory: Directory | None = None) -> Resource:
        """The resource ``name`` (newest version unless ``name@v``) with its label applied."""
        from strongroom.access.evidence import describe_resource

        ref = ArtifactRef.parse(name, obj="resource")
        m = self.vault.manifest(ref.name, ref.version)
        res = describe_resource(m.ref, m.kind, m.compartments, m.metadata)
        return res.labelled((directory or self.directory()).label(m.name))

    def officer_keys(self) -> list[object]:
        """My key, if I am an officer pinned in the keyring (else AccessDenied)."""
        if self.me.public.key_id not in self.officers:
            raise AccessDenied(f"{self.name} is not a security officer pinned in the keyring",
                               obj="officer statement",
                               remedy="officer statements are signed by officers' identities")
        return [self.me.private_key]


def open_context() -> tuple[Vault, Context]:
    """Open the vault (through the agent) and the signing context; close the vault after."""
    from strongroom.runtime.services import open_vault

    me = identity()
    vault = open_vault(identity=me)
    try:
        return vault, Context(vault, me)
    except BaseException:
        vault.close()
        raise


#: Units a duration option accepts, in seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str = "--duration") -> int:
    """Seconds in ``text`` written with its unit (``90s``, ``30m``, ``4h``, ``7d``).

    A bare number is refused: ``--duration 8`` could mean seconds or hours.
    """
    t = text.strip().lower()
    remedy = "write a whole number and its unit, e.g. 4h, 30m or 7d (s, m, h, d)"
    if t.isdigit():
        raise InvalidInput(f"{option} {text} has no unit", obj=option, remedy=remedy)
    try:
        seconds = int(t[:-1]) * _UNITS[t[-1]]
    except (ValueError, KeyError, IndexError):
        raise InvalidInput(f"cannot read {option} {text!r}", obj=option, remedy=remedy) from None
    if seconds <= 0:
        raise InvalidInput(f"{option} must be longer than 0", obj=option, remedy=remedy)
    return seconds


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise InvalidInput(f"cannot read size {text!r}", obj="--bytes",
                           remedy="write e.g. 500M, 2G or a byte count") from None


def _find(store: object, kind: str, prefix: str) -> str:
    """The full digest of a stored statement of ``kind`` whose id starts with ``prefix``."""
    from strongroom.access.statements import find_by_prefix
    from strongroom.store.db import Store

    assert isinstance(store, Store)
    if len(prefix) < 8:
        raise InvalidInput("give at least 8 characters of the id", obj=prefix)
    found = find_by_prefix(store, kind, prefix)
    if len(found) != 1:
        raise InvalidInput(f"{len(found)} {kind} statements match {prefix!r}", obj=prefix,
                           remedy="`strongroom access grants --pending` shows the ids")
    return found[0].digest


def _find_envelope(store: object, kind: str, prefix: str) -> tuple[str, str]:
    """The digest and signed envelope of the stored statement :func:`_find` names."""
    from strongroom.access import statements
    from strongroom.store.db import Store

    assert isinstance(store, Store)
    digest = _find(store, kind, prefix)
    env = statements.by_digest(store, digest)
    if env is None:
        raise NotFound(f"{kind} statement {digest[:16]} vanished while being read",
                       obj=prefix, remedy="retry the command")
    return digest, env


@access_app.command("request")
def request(
    resource: Annotated[str, typer.Argument(help="artifact or document name (or name@version)")],
    purpose: Annotated[str, typer.Option("--purpose", help="why you need it")],
    action: Annotated[str, typer.Option("--action", help="infer, load, read or export")] = "load",
    duration: Annotated[str, typer.Option("--duration", help="how long, e.g. 8h")] = "8h",
    nbytes: Annotated[str, typer.Option("--bytes", help="byte budget, e.g. 2G")] = "64G",
) -> None:
    """Ask for access; prints the request id approvers sign."""
    from strongroom.cli import remote

    if remote.active():
        return remote.access_request(resource, purpose, action, parse_duration(duration),
                                     _size(nbytes))
    from strongroom.access.approvals import AccessRequest, require_enrolled, submit_request
    from strongroom.cli import access_render

    vault, ctx = open_context()
    with vault:
        directory = ctx.directory()
        res = ctx.resource(resource, directory)
        me = require_enrolled(directory, ctx.me.public.key_id, ctx.name, "a request",
                              obj=res.name)
        decision = ctx.engine().decide(me, action, res, time.time())
        if not decision.allowed:
            vault.record("access.request", res.name, "deny", reason="policy", access_action=action)
            raise AccessDenied(f"policy denies {me.name} {action} on {res.name} (clearance, "
                               "compartments or vetting)", obj=res.name,
                               remedy="ask the security officers about your enrollment")
        target = resource if ArtifactRef.parse(resource).version is not None \
            else base_name(res.name)
        req = AccessRequest.new(me.name, me.key_id, target, action, purpose,
                                parse_duration(duration), _size(nbytes), time.time())
        env = req.sign(ctx.me.private_key)
        digest = submit_request(vault.store, env)
        vault.record("access.request", res.name, "allow", reason=purpose, access_action=action,
                     request=digest)
        access_render.request_filed(digest, me.name, action, target, req.duration_s,
                                    req.byte_budget, str(directory.rule(res.name, action)))

def _try_issue(ctx: Context, digest: str, quiet: bool = False) -> VerifiedGrant | None:
    from strongroom.access import statements
    from strongroom.access.approvals import AccessRequest
    from strongroom.access.grants import issue_grant
    from strongroom.errors import ApprovalRequired

    store = ctx.vault.store
    envs = statements.envelopes(store, "request", subject=digest)
    if not envs:
        raise InvalidInput("no such request", obj=digest[:16])
    req = AccessRequest.from_statement(statements.unverified_payload(envs[0]))
    directory = ctx.directory()
    res = ctx.resource(req.resource, directory)
    engine = ctx.engine()
    try:
        _, grant = issue_grant(store, ctx.me.private_key, digest, directory, engine, res,
                               now=time.time())
    except ApprovalRequired as exc:
        if not quiet:
            _out.print(f"not yet: {exc.message}")
        return None
    ctx.vault.record("access.grant", res.name, "allow", reason=req.purpose,
                     grant=grant.grant_id, approvers=list(grant.approvers),
                     access_action=req.action, requester=req.requester, expires=grant.expires,
                     byte_budget=grant.byte_budget)
    _out.print(f"grant {grant.grant_id[:16]} issued: {req.requester} may {req.action} "
               f"{req.resource} until {stamp(grant.expires)} "
               f"(approved by {', '.join(grant.approvers)})")
    return grant


@access_app.command("approve")
def approve_cmd(
    request_id: Annotated[str, typer.Argument(help="request id (at least 8 characters)")],
    ttl: Annotated[str, typer.Option("--ttl", help="how long this approval stays usable")] = "24h",
) -> None:
    """Sign an approval of a request; issues the Grant once the rule is met."""
    from strongroom.cli import remote

    if remote.active():
        return remote.access_verdict(request_id, approve_it=True,
                                     ttl_s=parse_duration(ttl, "--ttl"))
    from strongroom.access.approvals import approve, require_enrolled, submit_approval

    vault, ctx = open_context()
    with vault:
        digest, env = _find_envelope(vault.store, "request", request_id)
        directory = ctx.directory()
        require_enrolled(directory, ctx.me.public.key_id, ctx.name, "an approval",
                         obj=f"request {digest[:16]}")
        submit_approval(vault.store, approve(ctx.me.private_key, ctx.name, env, now=time.time(),
                                             ttl_s=parse_duration(ttl, "--ttl")),
                        directory=directory)
        vault.record("access.approve", digest[:16], "allow", request=digest)
        _out.print(f"{ctx.name} approved request {digest[:16]}")
        _try_issue(ctx, digest)

@access_app.command("deny")
def deny_cmd(
    request_id: Annotated[str, typer.Argument(help="request id")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
) -> None:
    """Sign a denial: no grant is issued for the request."""
    from strongroom.cli import remote

    if remote.active():
        return remote.access_verdict(request_id, approve_it=False, reason=reason)
    from strongroom.access.approvals import deny, require_enrolled, submit_approval
    from strongroom.access.restrictions import journal_details

    vault, ctx = open_context()
    with vault:
        digest, env = _find_envelope(vault.store, "request", request_id)
        directory = ctx.directory()
        require_enrolled(directory, ctx.me.public.key_id, ctx.name, "a denial",
                         obj=f"request {digest[:16]}")
        denial = deny(ctx.me.private_key, ctx.name, env, now=time.time(), reason=reason)
        submit_approval(vault.store, denial, kind="denial", directory=directory)
        vault.record("access.deny", digest[:16], "deny", reason=reason, request=digest,
                     **journal_details("denial", denial, subject=digest))
        _out.print(f"{ctx.name} denied request {digest[:16]}: {reason}")


@access_app.command("grants")
def grants_cmd(
    pending: Annotated[bool, typer.Option("--pending", help="open requests instead")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (keys in docs/cli.md)")] = False,
) -> None:
    """List grants that verify now (or open requests with their approvals)."""
    from strongroom.cli import remote

    if remote.active():
        return remote.access_grants(pending, as_json)
    from strongroom.access import statements
    from strongroom.access.approvals import AccessRequest
    from strongroom.access.grants import parse_approval, valid_grants
    from strongroom.cli import access_render

    vault, ctx = open_context()
    with vault:
        directory = ctx.directory()
        engine = ctx.engine()
        now = time.time()
        if pending:
            rows = []
            for env in statements.envelopes(vault.store, "request"):
                st = statements.unverified_payload(env)
                digest = statements.payload_digest(env)
                if statements.envelopes(vault.store, "grant", subject=str(st["requester_key"]),
                                        resource=base_name(str(st["resource"]))) and any(
                        statements.unverified_payload(g).get("request") == env
                        for g in statements.envelopes(vault.store, "grant")):
                    continue
                req = AccessRequest.from_statement(st)
                rows.append({"digest": digest, "requester": req.requester, "action": req.action,
                             "resource": req.resource, "purpose": req.purpose,
                             "approvals": [parse_approval(a).approver for a in
                                           statements.envelopes(vault.store, "approval",
                                                                subject=digest)],
                             "duration_s": req.duration_s, "byte_budget": req.byte_budget,
                             "rule": str(directory.rule(req.resource, req.action))})
            access_render.requests(rows, as_json)
            return
        access_render.grants([access_render.grant(g) for g in valid_grants(
            vault.store, directory, engine, lambda name: ctx.resource(name, directory), now=now)],
            as_json)

@access_app.command("revoke")
def revoke_cmd(
    grant_id: Annotated[str, typer.Argument(help="grant id (at least 8 characters)")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
) -> None:
    """Revoke a grant (requester, its approvers, or officers); effective at the next release."""
    from strongroom.access.grants import revoke_grant
    from strongroom.access.restrictions import journal_details

    vault, ctx = open_context()
    with vault:
        digest = _find(vault.store, "grant", grant_id)
        env = revoke_grant(vault.store, ctx.me.private_key, ctx.name, digest, reason,
                           now=time.time())
        vault.record("access.revoke", digest[:16], "allow", reason=reason, grant=digest,
                     **journal_details("grant-revocation", env, subject=digest))
        _out.print(f"grant {digest[:16]} revoked by {ctx.name}")


@access_app.command("break-glass")
def break_glass_cmd(
    resource: Annotated[str | None, typer.Argument(help="resource to open in an emergency")] = None,
    reason: Annotated[str, typer.Option("--reason", help="the emergency")] = "",
    action: Annotated[str, typer.Option("--action", help="load, read, infer or export")] = "load",
    window: Annotated[str, typer.Option("--window", help="how long (at most the label's)")] = "30m",
    review_id: Annotated[str | None, typer.Option("--review", help="review a break-glass id")] = None,
    verdict: Annotated[str, typer.Option("--verdict", help="justified or unjustified")] = "justified",
    pending: Annotated[bool, typer.Option("--pending", help="list break-glass awaiting review")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the list as JSON (docs/cli.md)")] = False,
) -> None:
    """Take emergency access alone (critical alert at once), review one, or list pending reviews."""
    from strongroom.access import statements
    from strongroom.access.breakglass import (
        ALERT_ACTION,
        BreakGlass,
        review,
        review_status,
        submit_break_glass,
        submit_review,
        take,
    )

    vault, ctx = open_context()
    with vault:
        store = vault.store
        if review_id is not None:
            digest, env = _find_envelope(store, "break-glass", review_id)
            submit_review(store, review(ctx.me.private_key, ctx.name, env, verdict,
                                        now=time.time()))
            vault.record("access.break-glass.review", digest[:16], "allow", reason=verdict)
            _out.print(f"{ctx.name} reviewed break-glass {digest[:16]}: {verdict}")
            return
        if pending or resource is None:
            from strongroom.cli import access_render

            directory = ctx.directory()
            rows = []
            for env in statements.envelopes(store, "break-glass"):
                digest = statements.payload_digest(env)
                bg = BreakGlass.from_statement(statements.unverified_payload(env), digest)
                done, who = review_status(bg, statements.envelopes(store, "review",
                                                                   subject=digest), directory)
                rows.append({"break_glass": digest, "principal": bg.principal,
                             "resource": bg.resource, "reason": bg.reason,
                             "reviewed_by": list(who), "reviewed": done})
            access_render.break_glass(rows, as_json)
            return
        directory = ctx.directory()
        res = ctx.resource(resource, directory)
        label = directory.label(res.name)
        limit = label.break_glass_window_s if label else 0
        seconds = min(parse_duration(window, "--window"), limit) if limit \
            else parse_duration(window, "--window")
        env = take(ctx.me.private_key, ctx.name, base_name(res.name), action, reason,
                   now=time.time(), window_s=seconds)
        digest = submit_break_glass(store, env)
        vault.record(ALERT_ACTION, res.name, "allow", reason=reason, severity="critical",
                     break_glass=digest, access_action=action, window_s=seconds)
        _err.print(f"[bold red]CRITICAL:[/] {ctx.name} broke glass on {res.name} ({action}, "
                   f"{duration_text(seconds)}): {reason}. Officers are alerted; a review by "
                   "2 security officers is required.")
        _out.print(f"break-glass {digest[:16]}")


@access_app.command("caps")
def caps_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="JSON (keys in docs/cli.md)")] = False,
) -> None:
    """Holders of valid grants per artifact and action, against the caps."""
    from strongroom.access.caps import AccessCaps, holders
    from strongroom.access.grants import valid_grants
    from strongroom.cli import access_render

    vault, ctx = open_context()
    with vault:
        directory = ctx.directory()
        caps = AccessCaps()
        counts = holders(valid_grants(vault.store, directory, ctx.engine(),
                                      lambda name: ctx.resource(name, directory),
                                      now=time.time()))
        names = sorted({a.name for a in vault.list_artifacts()})
        actions = ("infer", "load", "read", "export")
        access_render.caps([{"artifact": name,
                             "holders": {a: len(counts.get((name, a), set())) for a in actions},
                             "caps": {a: caps.cap(a) for a in actions}} for name in names],
                           as_json)

@policy_app.command("show")
def policy_show() -> None:
    """Print the Cedar policy in force and its serial (0: shipped)."""
    from strongroom.access.policy import current_policy

    vault, ctx = open_context()
    with vault:
        text, serial = current_policy(ctx.reader)
        _out.print(f"# serial {serial}", markup=False)
        _out.print(text, markup=False)


@policy_app.command("set")
def policy_set(
    path: Annotated[Path, typer.Argument(help="Cedar policy file")],
    serial: Annotated[int, typer.Option("--serial", help="higher than the current one")],
) -> None:
    """Sign a new policy as an officer (others cosign with `people cosign`); refused if invalid."""
    from strongroom.access import statements
    from strongroom.access.policy import current_policy, sign_policy

    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        _, now_serial = current_policy(ctx.reader)
        if serial <= now_serial:
            raise InvalidInput(f"serial must be above {now_serial}", obj=str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read policy file ({exc.strerror})", obj=str(path)) from exc
        try:
            env = sign_policy(text, serial, int(time.time()), *keys)  # type: ignore[arg-type]
        except InvalidInput:
            vault.record("access.policy", "policy", "deny", reason="does not validate",
                         serial=serial)
            raise
        digest = statements.put(vault.store, "policy", env, subject="policy")
        vault.record("access.policy", "policy", "allow", reason=f"serial {serial}",
                     statement=digest)
        _out.print(f"policy serial {serial} signed ({digest[:16]}); it takes effect once "
                   f"{ctx.reader.threshold} officer(s) have signed (`strongroom people cosign`)")


def register(app: typer.Typer) -> None:
    """Add ``access`` to the main app."""
    app.add_typer(access_app, name="access")

"""``strongroom access request|show|approve|deny|grants|revoke|break-glass|caps|policy``.

Every command signs with the identity named by ``STRONGROOM_IDENTITY``
(``strongroom keys new-identity``); nothing here is trusted by the release
gate without those signatures. ``approve`` issues the Grant as soon as the
rule is met. The commands ask the service (:mod:`strongroom.service`: the
local vault, or the server at ``STRONGROOM_URL``) and render its rows with
:mod:`strongroom.cli.access_render`; ``policy`` runs on the vault host.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import access_render
from strongroom.cli.placement import service
from strongroom.cli.render import duration as duration_text
from strongroom.errors import InvalidInput
from strongroom.service.access_context import identity, open_context

__all__ = ["access_app", "identity", "open_context", "parse_duration", "register"]

access_app = typer.Typer(help="Requests, signed approvals, grants, break-glass, caps, policy.",
                         no_args_is_help=True)
policy_app = typer.Typer(help="Show or replace the Cedar policy (officers' quorum).",
                         no_args_is_help=True)
access_app.add_typer(policy_app, name="policy")
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


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


@access_app.command("request")
def request(
    resource: Annotated[str, typer.Argument(help="artifact or document name (or name@version)")],
    purpose: Annotated[str, typer.Option("--purpose", help="why you need it")],
    action: Annotated[str, typer.Option("--action", help="infer, load, read or export")] = "load",
    duration: Annotated[str, typer.Option("--duration", help="how long, e.g. 8h")] = "8h",
    nbytes: Annotated[str, typer.Option("--bytes", help="byte budget, e.g. 2G")] = "64G",
    attested: Annotated[str, typer.Option(
        "--attested", metavar="POLICY",
        help="the Grant releases keys only into enclaves this attestation policy admits "
             "(docs/attestation.md)")] = "",
) -> None:
    """Ask for access; prints the request id approvers sign."""
    duration_s, budget = parse_duration(duration), _size(nbytes)
    with service() as svc:
        filed = svc.access_request(resource, purpose=purpose, action=action,
                                   duration_s=duration_s, byte_budget=budget,
                                   attested=attested)
    access_render.request_filed(filed)


@access_app.command("approve")
def approve_cmd(
    request_id: Annotated[str, typer.Argument(help="request id (at least 8 characters)")],
    ttl: Annotated[str, typer.Option("--ttl", help="how long this approval stays usable")] = "24h",
) -> None:
    """Sign an approval of a request; issues the Grant once the rule is met."""
    ttl_s = parse_duration(ttl, "--ttl")
    with service() as svc:
        access_render.approved(svc.access_approve(request_id, ttl_s=ttl_s))


@access_app.command("deny")
def deny_cmd(
    request_id: Annotated[str, typer.Argument(help="request id")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
) -> None:
    """Sign a denial: no grant is issued for the request."""
    with service() as svc:
        out = svc.access_deny(request_id, reason=reason)
    _out.print(f"{out['denier']} denied request {out['request'][:16]}: {out['reason']}",
               markup=False)


@access_app.command("show")
def show_cmd(
    request_id: Annotated[str, typer.Argument(help="request id (at least 8 characters)")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON (keys in docs/cli.md)")] = False,
) -> None:
    """Show a request and its short code: compare it with the console's before touching a key."""
    with service() as svc:
        access_render.request_shown(svc.access_show(request_id), as_json)


@access_app.command("grants")
def grants_cmd(
    pending: Annotated[bool, typer.Option("--pending", help="open requests instead")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (keys in docs/cli.md)")] = False,
) -> None:
    """List grants that verify now (or open requests with their approvals)."""
    with service() as svc:
        if pending:
            access_render.requests(svc.access_requests(), as_json)
        else:
            access_render.grants(svc.access_grants(), as_json)


@access_app.command("revoke")
def revoke_cmd(
    grant_id: Annotated[str, typer.Argument(help="grant id (at least 8 characters)")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
) -> None:
    """Revoke a grant (requester, its approvers, or officers); effective at the next release.

    A threshold vault's key servers get it at once: from the server (STRONGROOM_URL) that has
    them, else from here with STRONGROOM_THRESHOLD_SERVERS set.
    """
    with service() as svc:
        out = svc.access_revoke(grant_id, reason=reason)
    _out.print(f"grant {out['grant'][:16]} revoked by {out['by']}", markup=False)
    from strongroom.cli.keyserver_cmd import push_restriction

    # a threshold vault's key servers get it now (from serve itself when it has them)
    if out.get("envelope"):
        push_restriction("grant-revocation", str(out["envelope"]), out.get("key_servers"))


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
    with service() as svc:
        if review_id is not None:
            out = svc.break_glass_review(review_id, verdict=verdict)
            _out.print(f"{out['reviewer']} reviewed break-glass {out['break_glass'][:16]}: "
                       f"{out['verdict']}", markup=False)
            return
        if pending or resource is None:
            access_render.break_glass(svc.break_glass_pending(), as_json)
            return
        out = svc.break_glass(resource, reason=reason, action=action,
                              window_s=parse_duration(window, "--window"))
    _err.print(f"[bold red]CRITICAL:[/] {out['principal']} broke glass on {out['resource']} "
               f"({out['action']}, {duration_text(out['window_s'])}): {out['reason']}. Officers "
               "are alerted; a review by 2 security officers is required.")
    _out.print(f"break-glass {out['break_glass'][:16]}")


@access_app.command("caps")
def caps_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="JSON (keys in docs/cli.md)")] = False,
) -> None:
    """Holders of valid grants per artifact and action, against the caps."""
    with service() as svc:
        access_render.caps(svc.access_caps(), as_json)


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
            env = sign_policy(text, serial, int(time.time()), *keys,  # type: ignore[arg-type]
                              pq=ctx.officer_pq())
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

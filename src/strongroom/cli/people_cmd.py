"""``strongroom people enroll|cosign|revoke|ls`` and ``strongroom compartments label|ls``.

Officer statements (enrollments, key revocations, resource labels, policies)
are signed by security officers' identities (``STRONGROOM_IDENTITY``); the
first officer signs and stores the statement, the others add their
signatures with ``people cosign ID``; it counts once k officers have signed.
Writing rows yourself grants nothing: the gate verifies the signatures. Every
command asks the service (the local vault, or the server at ``STRONGROOM_URL``,
which signs nothing: the statement is signed here) and prints its row once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.cli.placement import service
from strongroom.errors import InvalidInput
from strongroom.timefmt import parse_utc

__all__ = ["compartments_app", "people_app", "register"]

people_app = typer.Typer(help="The directory: enroll people and services (officers).",
                         no_args_is_help=True)
compartments_app = typer.Typer(help="Resource labels: classification, compartments, rules.",
                               no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _date(text: str) -> int:
    """``--vetting-expires``: a date (midnight UTC) or an ISO time, as epoch seconds."""
    try:
        return int(parse_utc(text, obj="--vetting-expires"))
    except InvalidInput:
        raise InvalidInput(f"cannot read date {text!r}", obj="--vetting-expires",
                           remedy="write YYYY-MM-DD") from None


@people_app.command("enroll")
def enroll(
    name: Annotated[str, typer.Argument(help="the principal's name")],
    key: Annotated[Path, typer.Option("--key", help="their public key file (.pub)")],
    vetting_expires: Annotated[str, typer.Option("--vetting-expires", help="YYYY-MM-DD")],
    clearance: Annotated[str, typer.Option("--clearance", help="public .. top-secret")] = "internal",
    role: Annotated[list[str] | None, typer.Option("--role", help="role (repeatable)")] = None,
    compartment: Annotated[list[str] | None, typer.Option("--compartment",
                                                          help="compartment (repeatable)")] = None,
    status: Annotated[str, typer.Option("--vetting", help="active, lapsed, suspended, revoked")] = "active",
    flag: Annotated[list[str] | None, typer.Option("--flag", help="continuous-evaluation flag")] = None,
    employment: Annotated[str, typer.Option("--employment", help="active, leave, terminated")] = "active",
    kind: Annotated[str, typer.Option("--kind", help="person or service")] = "person",
    as_json: JsonOpt = False,
) -> None:
    """Sign (as an officer) and store an enrollment; a new one supersedes the old."""
    expires = _date(vetting_expires)
    with service() as svc:
        out = svc.people_enroll(name, key, vetting_expires=expires, clearance=clearance,
                                roles=list(role or ()), compartments=list(compartment or ()),
                                vetting=status, flags=list(flag or ()), employment=employment,
                                kind=kind)
    _signed(out, as_json, f"enrollment {out['statement'][:16]} of {out['name']} "
                          f"(serial {out['serial']}) signed by {out['signer']}")


@people_app.command("cosign")
def cosign(statement_id: Annotated[str, typer.Argument(help="statement id (8+ characters)")],
           as_json: JsonOpt = False) -> None:
    """Add your officer signature to a stored enrollment, revocation, label or policy."""
    with service() as svc:
        out = svc.people_cosign(statement_id)
    envelope, pushed = str(out.pop("envelope", "")), out.pop("key_servers", None)
    _signed(out, as_json, f"{out['signer']} cosigned {out['kind']} {out['statement'][:16]}")
    if out["kind"] == "revocation" and envelope:  # each key server merges the signatures as they come
        _to_key_servers(envelope, pushed)


@people_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="principal name or key id")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
    as_json: JsonOpt = False,
) -> None:
    """Sign (as an officer) a key revocation: the key's enrollment and approvals stop counting."""
    with service() as svc:
        out = svc.people_revoke(name, reason=reason)
    envelope, pushed = str(out.pop("envelope", "")), out.pop("key_servers", None)
    _signed(out, as_json, f"revocation {out['statement'][:16]} of key {out['key_id']} "
                          f"signed by {out['signer']}")
    if envelope:
        _to_key_servers(envelope, pushed)


def _to_key_servers(envelope: str, pushed: Any) -> None:
    """A threshold vault's key servers get the key revocation now, not at the next sync
    (``pushed``: the answers of the server's own key servers, when it pushed it itself)."""
    from strongroom.cli.keyserver_cmd import push_restriction

    push_restriction("revocation", envelope, pushed)


def _signed(out: dict[str, Any], as_json: bool, what: str) -> None:
    """An officer statement's row as JSON, or ``what`` and how many officers signed it."""
    if as_json:
        render.print_json(out)
        return
    n, k = out["signatures"], out["threshold"]
    counts = "it counts now" if n >= k else "it counts once they have (`strongroom people cosign`)"
    _out.print(f"{what}; {n} of {k} officer signature(s): {counts}", markup=False)


@people_app.command("ls")
def ls(as_json: JsonOpt = False) -> None:
    """Principals whose enrollment verifies (signed by k officers, not revoked)."""
    with service() as svc:
        render.people(svc.people_ls(), as_json)


@compartments_app.command("label")
def label(
    resource: Annotated[str, typer.Argument(help="artifact or document name")],
    classification: Annotated[str, typer.Option("--classification", help="public .. top-secret")],
    compartment: Annotated[list[str] | None, typer.Option("--compartment",
                                                          help="compartment (repeatable)")] = None,
    rule: Annotated[list[str] | None, typer.Option(
        "--rule", help="ACTION=RULE, e.g. 'load=2 of security-officers AND 1 of model-owners'")] = None,
    break_glass: Annotated[list[str] | None, typer.Option(
        "--break-glass", help="person who may break glass (repeatable)")] = None,
    window: Annotated[int, typer.Option("--window", help="break-glass window, seconds")] = 1800,
    attested: Annotated[str, typer.Option(
        "--attested", help="attestation policy its keys need: released only into enclaves it "
                           "admits (docs/attestation.md)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Sign (as an officer) a resource label; a higher serial supersedes the old one."""
    from strongroom.access.directory import Rule

    rules = {}
    for r in rule or ():
        action, sep, text = r.partition("=")
        if not sep:
            raise InvalidInput(f"cannot read rule {r!r}", obj="--rule",
                               remedy="write ACTION=RULE, e.g. load=2 of approvers")
        Rule.parse(text)  # refused here, naming the rule, before anything is signed
        rules[action.strip()] = text.strip()
    with service() as svc:
        out = svc.compartments_label(resource, classification=classification,
                                     compartments=list(compartment or ()), rules=rules,
                                     break_glass=list(break_glass or ()), window_s=window,
                                     attested=attested)
    _signed(out, as_json, f"label {out['statement'][:16]} of {out['resource']} "
                          f"(serial {out['serial']}) signed by {out['signer']}")


@compartments_app.command("ls")
def compartments_ls(as_json: JsonOpt = False) -> None:
    """Compartments: who is read in, and which labelled resources need them."""
    with service() as svc:
        render.compartments(svc.compartments_ls(), as_json)


def register(app: typer.Typer) -> None:
    """Add ``people`` and ``compartments`` to the main app."""
    app.add_typer(people_app, name="people")
    app.add_typer(compartments_app, name="compartments")

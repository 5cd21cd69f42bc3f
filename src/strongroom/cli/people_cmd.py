"""``strongroom people enroll|cosign|revoke|ls`` and ``strongroom compartments label|ls``.

Officer statements (enrollments, key revocations, resource labels, policies)
are signed by security officers' identities (``STRONGROOM_IDENTITY``); the
first officer signs and stores the statement, the others add their
signatures with ``people cosign ID``; it counts once k officers have signed.
Writing rows yourself grants nothing: the gate verifies the signatures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.cli import render
from strongroom.cli.placement import service
from strongroom.errors import InvalidInput, NotFound
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
) -> None:
    """Sign (as an officer) and store an enrollment; a new one supersedes the old."""
    from strongroom.access import statements
    from strongroom.access.directory import Enrollment, Vetting, level, publish
    from strongroom.cli.access_cmd import open_context
    from strongroom.keys.identity import PublicIdentity

    pub = PublicIdentity.load(key)
    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        previous = [int(statements.unverified_payload(e).get("serial", 0)) for e in
                    statements.envelopes(vault.store, "enrollment", subject=pub.key_id)]
        now = int(time.time())
        e = Enrollment(name=name, key=pub.public_bytes, roles=tuple(role or ()),
                       clearance=level(clearance), compartments=tuple(compartment or ()),
                       vetting=Vetting(status, now, _date(vetting_expires), tuple(flag or ())),
                       employment=employment, kind=kind, serial=max(previous, default=0) + 1,
                       issued=now)
        digest = publish(vault.store, "enrollment", e.sign(*keys))  # type: ignore[arg-type]
        vault.record("people.enroll", name, "allow", key_id=pub.key_id, serial=e.serial,
                     statement=digest)
        _out.print(f"enrollment {digest[:16]} of {name} (serial {e.serial}) signed by "
                   f"{ctx.name}; it counts once {ctx.reader.threshold} officer(s) signed "
                   "(`strongroom people cosign`)")


@people_app.command("cosign")
def cosign(statement_id: Annotated[str, typer.Argument(help="statement id (8+ characters)")]) -> None:
    """Add your officer signature to a stored enrollment, revocation, label or policy."""
    from strongroom.access import statements
    from strongroom.access.directory import publish
    from strongroom.cli.access_cmd import open_context
    from strongroom.crypto.dsse import sign_statement

    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        rows = statements.find_by_prefix(
            vault.store, ("enrollment", "revocation", "label", "policy", "codeowners"),
            statement_id)
        if len(rows) != 1 or len(statement_id) < 8:
            raise NotFound(f"{len(rows)} officer statements match", obj=statement_id,
                           remedy="give at least 8 characters of the id the first officer printed")
        kind, env = rows[0].kind, rows[0].envelope
        body = statements.unverified_payload(env)
        mine = sign_statement(body, statements.payload_type(kind), *keys)  # type: ignore[arg-type]
        if kind in ("policy", "codeowners"):
            subject = "policy" if kind == "policy" else "gateway"
            digest = statements.put(vault.store, kind, mine, subject=subject)
        else:
            digest = publish(vault.store, kind, mine)
        vault.record("people.cosign", digest[:16], "allow", statement_kind=kind)
        n = len(statements.signer_ids(statements.by_digest(vault.store, digest) or mine))
        _out.print(f"{ctx.name} cosigned {kind} {digest[:16]} ({n} signature(s))")


@people_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="principal name or key id")],
    reason: Annotated[str, typer.Option("--reason", help="why")],
) -> None:
    """Sign (as an officer) a key revocation: the key's enrollment and approvals stop counting."""
    from strongroom.access.directory import KeyRevocation, publish
    from strongroom.access.restrictions import journal_details
    from strongroom.cli.access_cmd import open_context

    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        found = ctx.directory().by_name(name)
        kid = found.key_id if found is not None else name
        env = KeyRevocation(kid, reason, int(time.time())).sign(*keys)  # type: ignore[arg-type]
        digest = publish(vault.store, "revocation", env)
        vault.record("people.revoke", name, "allow", reason=reason, key_id=kid,
                     **journal_details("revocation", env, subject=kid))
        _out.print(f"revocation {digest[:16]} of key {kid} signed by {ctx.name}")


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
) -> None:
    """Sign (as an officer) a resource label; a higher serial supersedes the old one."""
    from strongroom.access import statements
    from strongroom.access.directory import ResourceLabel, Rule, level, publish
    from strongroom.cli.access_cmd import open_context

    rules = {}
    for r in rule or ():
        action, sep, text = r.partition("=")
        if not sep:
            raise InvalidInput(f"cannot read rule {r!r}", obj="--rule",
                               remedy="write ACTION=RULE, e.g. load=2 of approvers")
        rules[action.strip()] = Rule.parse(text)
    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        previous = [int(statements.unverified_payload(e).get("serial", 0))
                    for e in statements.envelopes(vault.store, "label", subject=resource)]
        lab = ResourceLabel(resource, level(classification), tuple(compartment or ()), rules,
                            tuple(break_glass or ()), window, max(previous, default=0) + 1,
                            int(time.time()))
        digest = publish(vault.store, "label", lab.sign(*keys))  # type: ignore[arg-type]
        vault.record("compartments.label", resource, "allow", statement=digest,
                     classification=classification)
        _out.print(f"label {digest[:16]} of {resource} (serial {lab.serial}) signed by {ctx.name}")


@compartments_app.command("ls")
def compartments_ls(as_json: JsonOpt = False) -> None:
    """Compartments: who is read in, and which labelled resources need them."""
    with service() as svc:
        render.compartments(svc.compartments_ls(), as_json)


def register(app: typer.Typer) -> None:
    """Add ``people`` and ``compartments`` to the main app."""
    app.add_typer(people_app, name="people")
    app.add_typer(compartments_app, name="compartments")

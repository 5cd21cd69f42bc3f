"""The access part of ``make demo``: a load denied, a request, two approvals, a Grant, the load.

Call :func:`demo_access` with an open vault whose identity is a security
officer pinned at ``init`` (the demo's bootstrap officer), after the weights
were imported, and once the release gate runs :class:`GrantEvidence`. It
enrolls four people, labels the artifact, shows a load refused, a request
approved by two people, the Grant, the load succeeding; then a secret
document readable only inside its compartment. It returns alice's identity,
who then holds load and export grants for the rest of the demo.

Uses only public APIs; people's identity files go under ``<home>-people``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from strongroom.access.approvals import AccessRequest, approve, submit_approval, submit_request
from strongroom.access.directory import (
    DirectoryReader,
    Enrollment,
    ResourceLabel,
    Rule,
    Vetting,
    level,
    publish,
)
from strongroom.access.evidence import describe_resource
from strongroom.access.grants import issue_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied, StrongroomError
from strongroom.keys.identity import Identity
from strongroom.keys.officers import Officers
from strongroom.vault.documents import add_document, read_document
from strongroom.vault.vault import Vault

__all__ = ["demo_access", "demo_grant"]

_YEAR = 365 * 24 * 3600


def _as(vault: Vault, ident: Identity) -> Vault:
    """The same vault acting as ``ident`` (shares the store and log: do not close it)."""
    return Vault(vault.settings, vault.store, vault.blobs, vault.keys, vault.audit, identity=ident)


_DEMO_APPROVERS: dict[str, tuple[str, ...]] = {"approver-1": ("approvers",), "approver-2": ("approvers",),
                   "sec-officer": ("security-officers",)}


def _officers(vault: Vault) -> Officers:
    return Officers.from_public_keys(vault.keys.public_keys())


def demo_grant(vault: Vault, officer: Identity, holder: Identity, resource: str,
               actions: Sequence[str], people_dir: Path, *, kind: str = "person",
               purpose: str = "demo", duration_s: int = 3600, nbytes: int = 1 << 40) -> list[str]:
    """Give ``holder`` Grants for ``actions`` on ``resource`` the way a lab would, in one call.

    For demos and evaluation deployments only: the officer (a single-officer
    quorum, as the bootstrap officer is) enrolls ``holder`` and three generated
    approvers with the resource's compartments (raising their enrollment serial
    when compartments are added), then ``holder`` signs a request per action,
    the approvers its rule needs sign approvals, and the Grant is issued. Every
    step is a signed statement the gate re-checks; returns the Grant ids.
    """
    manifest = vault.manifest(resource)
    comps = tuple(manifest.compartments)
    reader = DirectoryReader.for_officers(vault.store, _officers(vault), 1)
    people_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = int(time.time())
    wanted: dict[str, tuple[Identity, tuple[str, ...], str]] = {
        holder.public.principal: (holder, ("requesters",), kind)}
    for name, roles in _DEMO_APPROVERS.items():
        path = people_dir / f"{name}.identity"
        if not path.exists():
            Identity.generate(name).save(path)
        wanted[name] = (Identity.load(path), roles, "person")
    directory = reader.view()
    for name, (ident, roles, what) in wanted.items():
        current = directory.principal(ident.public.key_id)
        if current is not None and set(comps) <= set(current.compartments):
            continue
        have = current.compartments if current is not None else ()
        publish(vault.store, "enrollment", Enrollment(
            name=name, key=ident.public.public_bytes,
            roles=current.roles if current is not None else roles, clearance=level("top-secret"),
            compartments=tuple(sorted({*have, *comps})), vetting=Vetting("active", now,
                                                                         now + _YEAR),
            kind=what, serial=(current.serial + 1) if current is not None else 1,
            issued=now).sign(officer.private_key, pq=officer.mldsa_key))
    directory = reader.view()
    engine = PolicyEngine()
    res = describe_resource(manifest.ref, manifest.kind, manifest.compartments,
                            manifest.metadata).labelled(directory.label(manifest.name))
    out = []
    for action in actions:
        req = AccessRequest.new(holder.public.principal, holder.public.key_id, manifest.name, action,
                                purpose, duration_s, nbytes, time.time())
        env = req.sign(holder.private_key)
        digest = submit_request(vault.store, env)
        approvers = list(_DEMO_APPROVERS) if action == "export" else ["approver-1", "approver-2"]
        for name in approvers:
            submit_approval(vault.store, approve(wanted[name][0].private_key, name, env,
                                                 now=time.time()), directory=directory)
        _, g = issue_grant(vault.store, wanted["approver-1"][0].private_key, digest, directory,
                           engine, res, now=time.time())
        out.append(g.grant_id)
    return out


def demo_access(vault: Vault, console: Console, home: Path, *, artifact: str = "minilm") -> Identity:
    """Run the access demo on ``artifact``; return alice's identity (granted load and export)."""
    officer = vault.identity
    officers = _officers(vault)
    reader = DirectoryReader.for_officers(vault.store, officers, len(officers.ed25519))
    engine = PolicyEngine()
    manifest = vault.manifest(artifact)
    compartments = tuple(manifest.compartments) or ("demo",)
    people_dir = home.parent / (home.name + "-people")
    people_dir.mkdir(mode=0o700, exist_ok=True)
    now = int(time.time())
    cast = {"alice": (("requesters",), "secret", (*compartments, "atlas")),
            "bob": (("approvers",), "secret", (*compartments, "atlas")),
            "carol": (("approvers", "security-officers"), "secret", compartments),
            "dave": (("approvers",), "top-secret", compartments)}
    people: dict[str, Identity] = {}
    for name, (roles, clearance, comps) in cast.items():
        ident = Identity.generate(name)
        path = people_dir / f"{name}.identity"
        path.unlink(missing_ok=True)
        ident.save(path)
        people[name] = ident
        publish(vault.store, "enrollment", Enrollment(
            name=name, key=ident.public.public_bytes, roles=roles, clearance=level(clearance),
            compartments=comps, vetting=Vetting("active", now, now + _YEAR), serial=1,
            issued=now).sign(officer.private_key, pq=officer.mldsa_key))
    publish(vault.store, "label", ResourceLabel(
        artifact, level("secret"), compartments,
        {"load": Rule.parse("2 of approvers"),
         "export": Rule.parse("1 of approvers AND 1 of security-officers")},
        serial=1, issued=now).sign(officer.private_key, pq=officer.mldsa_key))
    console.print("officer enrolled alice, bob, carol (clearance secret) and dave (top secret, "
                  f"not in compartment atlas); labelled {artifact}: load needs 2 of approvers")

    alice = _as(vault, people["alice"])
    try:
        alice.open_weights(artifact).close()
        console.print("[red]a load without a Grant succeeded[/]")
        raise SystemExit(1)
    except AccessDenied as exc:
        console.print(f"alice loads {artifact} without a Grant -> [yellow]{type(exc).__name__}[/]: "
                      f"{exc.message}")

    def grant(who: str, resource: str, action: str, approvers: list[str], issuer: str) -> None:
        req = AccessRequest.new(who, people[who].public.key_id, resource, action,
                                "demo", 3600, 1 << 40, time.time())
        env = req.sign(people[who].private_key)
        digest = submit_request(vault.store, env)
        console.print(f"{who} requests {action} on {resource}: request {digest[:16]}")
        for a in approvers:
            submit_approval(vault.store, approve(people[a].private_key, a, env, now=time.time()),
                            directory=reader.view())
            console.print(f"  {a} signs an approval with their own key")
        m = vault.manifest(resource)
        directory = reader.view()
        res = describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
            directory.label(m.name))
        _, g = issue_grant(vault.store, people[issuer].private_key, digest, directory, engine,
                           res, now=time.time())
        console.print(f"  [green]Grant {g.grant_id[:16]}[/]: {who} may {action} {resource} for "
                      f"1 h, approved by {' and '.join(g.approvers)} (checked at the gate from "
                      "signatures)")

    grant("alice", artifact, "load", ["bob", "carol"], "carol")
    with alice.open_weights(artifact) as weights:
        console.print(f"alice loads {artifact} with the Grant: [green]{len(weights)} tensors[/] "
                      "decrypted in memory")
    grant("alice", artifact, "export", ["bob", "carol"], "bob")

    recipe = people_dir / "recipe.md"
    recipe.write_text("# training recipe\nlr 3e-4, cosine to 1e-5, warmup 2000 steps\n")
    add_document(vault, recipe, name="recipe", classification="confidential",
                 compartments=["atlas"])
    recipe.unlink()
    console.print("secret document recipe@1 added (confidential, compartment atlas), "
                  "encrypted like weights")
    grant("alice", "recipe", "read", ["bob"], "alice")
    first = read_document(alice, "recipe").decode().splitlines()[0]
    console.print(f"alice (in atlas) reads it: [green]{first!r}[/]")
    try:
        grant("dave", "recipe", "read", ["bob"], "dave")
        console.print("[red]dave was granted a document outside his compartment[/]")
        raise SystemExit(1)
    except AccessDenied as exc:
        console.print(f"  refused: {exc.message}")
    try:
        read_document(_as(vault, people["dave"]), "recipe")
        console.print("[red]dave read a document outside his compartment[/]")
        raise SystemExit(1)
    except StrongroomError as exc:
        console.print(f"dave (top secret, not in atlas) -> [yellow]{type(exc).__name__}[/]: "
                      f"{exc.message}")
    return people["alice"]

"""``strongroom attest``: verify confidential-computing evidence offline.

``attest verify REPORT --vcek VCEK.pem`` checks an AMD SEV-SNP report against
AMD's roots shipped with strongroom (``--platform tdx QUOTE --collateral
collateral.json``: an Intel TDX quote, through dcap-qvl) and prints the facts an attestation policy
judges (platform, measurement, report data, TCB, chip id). Any failed check
exits non-zero (6) and names the check; with ``--json`` the refusal is also
printed as ``{"verified": false, "check": ..., "error": ...}``.

``attest policy set FILE.json`` signs an attestation policy as an officer (the
others cosign with ``strongroom people cosign``; it is pinned once the officers'
threshold signed it) and ``attest policy show`` prints the pinned ones; both run
on the vault host and are audited like the other officer statements.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.attest.evidence import Collateral, platform_named
from strongroom.cli.render import print_json
from strongroom.errors import AttestationRefused, InvalidInput

attest_app = typer.Typer(help="Confidential-computing evidence: verify it offline; policies.",
                         no_args_is_help=True)
policy_app = typer.Typer(help="Attestation policies signed by the officers' quorum.",
                         no_args_is_help=True)
attest_app.add_typer(policy_app, name="policy")
_out = Console(highlight=False, soft_wrap=True)

#: Evidence files larger than this are not evidence (a report is 1184 bytes, a TDX quote ~5 KiB).
MAX_EVIDENCE = 1 << 20


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_EVIDENCE:
            raise InvalidInput(f"{path} is larger than {MAX_EVIDENCE} bytes", obj=what,
                               remedy="give the raw report or quote file")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror})", obj=what,
                           remedy="check the path") from exc


@attest_app.command("verify")
def verify(
    evidence: Annotated[Path, typer.Argument(help="the raw evidence (an SEV-SNP report, a TDX quote)")],
    vcek: Annotated[Path | None, typer.Option(
        "--vcek", help="the VCEK/VLEK certificate (PEM or DER) the report was signed with")] = None,
    collateral: Annotated[list[Path] | None, typer.Option(
        "--collateral", help="PEM file of further certificates (ASK/ASVK, KDS cert_chain) "
                             "and CRLs, or TDX collateral JSON; repeatable")] = None,
    platform: Annotated[str, typer.Option("--platform", help="sev-snp or tdx")] = "sev-snp",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Verify EVIDENCE against the vendor's roots; print what it proves, or the check that failed."""
    verifier = platform_named(platform)
    blobs = [_read(p, "collateral") for p in ([vcek] if vcek else []) + list(collateral or [])]
    given = Collateral.from_pem(*blobs)
    try:
        ev = verifier.verify(_read(evidence, "evidence"), given, now=datetime.now(UTC))
    except AttestationRefused as exc:
        if as_json:
            print_json({"verified": False, "platform": platform, "check": exc.check,
                        "error": exc.message})
        raise
    if as_json:
        print_json(ev.as_json())
        return
    _out.print(f"verified {ev.platform} evidence ({ev.details.get('product', '')})")
    _out.print(f"  measurement  {ev.measurement}")
    _out.print(f"  report data  {ev.report_data.hex()}")
    _out.print("  tcb          " + ", ".join(f"{k} {v}" for k, v in ev.tcb.items()))
    _out.print(f"  chip id      {ev.chip_id or '(masked)'}")


@policy_app.command("set")
def policy_set(
    path: Annotated[Path, typer.Argument(help="the policy as JSON: name, serial, platforms, "
                                              "measurements, min_tcb")],
) -> None:
    """Sign a policy as an officer; pinned once the officers' threshold signed (people cosign)."""
    from strongroom.access import statements
    from strongroom.access.attest_policies import KIND, pinned_policy
    from strongroom.attest.policy import AttestationPolicy, sign_policy
    from strongroom.service.access_context import open_context

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror})", obj="attestation policy",
                           remedy="check the path") from exc
    except ValueError as exc:
        raise InvalidInput(f"{path} is not JSON ({exc})", obj="attestation policy") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} is not a JSON object", obj="attestation policy")
    policy = AttestationPolicy.from_json(data)
    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        current = pinned_policy(ctx.reader, policy.name)
        if current is not None and policy.serial <= current.serial:
            raise InvalidInput(f"serial must be above {current.serial}",
                               obj=f"attestation policy {policy.name!r}")
        env = sign_policy(policy, *keys, pq=ctx.officer_pq())  # type: ignore[arg-type]
        digest = statements.put(vault.store, KIND, env, subject=policy.name)
        vault.record("attest.policy", policy.name, "allow", reason=f"serial {policy.serial}",
                     statement=digest, measurements=len(policy.measurements),
                     platforms=list(policy.platforms))
        _out.print(f"attestation policy {policy.name!r} serial {policy.serial} signed "
                   f"({digest[:16]}); pinned once {ctx.reader.threshold} officer(s) have "
                   f"signed (`strongroom people cosign {digest[:16]}`)")


@policy_app.command("show")
def policy_show(
    name: Annotated[str | None, typer.Argument(help="one policy's name (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Print the attestation policies the officers pinned (newest serial of each name)."""
    from strongroom.access.attest_policies import pinned_policies, pinned_policy
    from strongroom.service.access_context import open_context

    vault, ctx = open_context()
    with vault:
        if name is None:
            policies = pinned_policies(ctx.reader)
        else:
            one = pinned_policy(ctx.reader, name)
            policies = [one] if one is not None else []
    if as_json:
        print_json([p.as_json() for p in policies])
        return
    if not policies:
        _out.print("no attestation policy is pinned" + (f" under {name!r}" if name else ""))
    for p in policies:
        _out.print(f"{p.name} (serial {p.serial}): platforms {', '.join(p.platforms)}; "
                   f"{len(p.measurements)} measurement(s); min TCB "
                   f"{json.dumps(p.as_json()['min_tcb'])}")
        for m in sorted(p.measurements):
            _out.print(f"  {m}")


def register(app: typer.Typer) -> None:
    """Add ``attest`` to the root app."""
    app.add_typer(attest_app, name="attest")
